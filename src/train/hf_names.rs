//! transformers' `TrainingArguments` and TRL's `SFTConfig` names for the trainer's
//! settings. Our names stay the config's own (they are what checkpoints record); each name
//! here is accepted in a file and as a flag in place of ours. A table that sets a name and
//! the setting it stands for is refused naming both, since one of them would be ignored.
//! Names TRL shares with us (`warmup_steps`, `warmup_ratio`, `weight_decay`,
//! `max_grad_norm`, `seed`, `output_dir`, `resume_from_checkpoint`) need no entry.
//! docs/train.md holds the same table with the differences in meaning.

use std::path::Path;

use crate::{Error, Result};

/// (transformers / TRL name, ours).
pub const HF_NAMES: &[(&str, &str)] = &[
    ("learning_rate", "lr"),
    ("max_steps", "steps"),
    ("num_train_epochs", "epochs"),
    ("per_device_train_batch_size", "micro_batch_rows"),
    ("gradient_accumulation_steps", "grad_accum"),
    ("max_length", "seq_len"),
    ("max_seq_length", "seq_len"),
    ("lr_scheduler_type", "decay"),
    ("adam_beta1", "beta1"),
    ("adam_beta2", "beta2"),
    ("adam_epsilon", "eps"),
    ("logging_steps", "log_every"),
    ("eval_steps", "eval_every"),
    ("save_steps", "save_every"),
    ("save_total_limit", "keep_last"),
];

/// Settings of which one decides: a flag that sets one replaces the file's other, so
/// `--epochs 2` overrides a file's `steps`.
pub const ONE_DECIDES: &[[&str; 2]] = &[["steps", "epochs"], ["warmup_steps", "warmup_ratio"]];

/// Our name for `name`: itself unless it is one of [`HF_NAMES`].
pub fn ours(name: &str) -> &str {
    HF_NAMES
        .iter()
        .find(|(hf, _)| *hf == name)
        .map_or(name, |(_, ours)| ours)
}

/// The transformers / TRL names of our setting `field`.
pub fn hf_names_of(field: &str) -> impl Iterator<Item = &'static str> + '_ {
    HF_NAMES
        .iter()
        .filter(move |(_, ours)| *ours == field)
        .map(|(hf, _)| *hf)
}

/// `table` with every transformers / TRL name renamed to ours; two names of one setting
/// are an error naming both (and `label`, the file or "(flags)").
pub fn to_ours(table: toml::Table, label: &Path) -> Result<toml::Table> {
    let mut renamed = toml::Table::new();
    let mut given_as = std::collections::HashMap::new();
    for (name, value) in table {
        let field = ours(&name).to_string();
        if let Some(first) = given_as.insert(field.clone(), name.clone()) {
            return Err(both_set(label, &first, &name, &field));
        }
        renamed.insert(field, value);
    }
    Ok(renamed)
}

fn both_set(label: &Path, a: &str, b: &str, field: &str) -> Error {
    let (a, b) = if a <= b { (a, b) } else { (b, a) };
    Error::format(
        label,
        format!("{a} and {b}"),
        format!("both set, and both name `{field}`: keep one"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_and_the_setting_it_stands_for_are_refused_naming_both() {
        let table: toml::Table = "lr = 1e-5\nlearning_rate = 2e-5".parse().unwrap();
        let err = to_ours(table, Path::new("run.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("run.toml") && err.contains("learning_rate and lr"),
            "{err}"
        );
        let table: toml::Table = "max_length = 1\nmax_seq_length = 2".parse().unwrap();
        let err = to_ours(table, Path::new("f")).unwrap_err().to_string();
        assert!(err.contains("max_length and max_seq_length"), "{err}");
        assert!(err.contains("`seq_len`"), "{err}");
    }

    #[test]
    fn hf_names_become_ours_and_the_rest_is_kept() {
        let table: toml::Table = "learning_rate = 2e-5\nseed = 3\nmax_seq_length = 64"
            .parse()
            .unwrap();
        let ours = to_ours(table, Path::new("f")).unwrap();
        let keys: Vec<&str> = ours.keys().map(String::as_str).collect();
        assert_eq!(keys, ["lr", "seed", "seq_len"]);
        assert_eq!(ours["lr"].as_float(), Some(2e-5));
    }
}
