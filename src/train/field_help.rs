//! What each setting of [`TrainConfig`](super::TrainConfig) means, for its flag's help
//! and docs/train.md; the default is added from `TrainConfig::default()`.

/// (field, meaning). A test checks that every field has one.
const MEANINGS: &[(&str, &str)] = &[
    ("model", "The student: a Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer.json)"),
    ("output_dir", "Where checkpoints, metrics.jsonl and the TensorBoard events go"),
    ("datasets", "The mix, a TOML array of {name, path, weight, format}; --dataset adds one entry at a time"),
    ("template", "Chat template: chatml, deepseek, raw or a .jinja file; unset: the model's own"),
    ("reasoning_format", "The assistant turn of reasoning rows; {trace} and {answer} are filled in"),
    ("system_prompt", "A system message put before every conversation; unset: none"),
    ("bad_lines", "A dataset record that cannot be read: fail, or skip it (listed on stderr)"),
    ("eval_rows", "Rows held out of each dataset for the evaluation loss (at most a tenth of it)"),
    ("seq_len", "Tokens per row (TRL's max_length); longer examples are truncated or dropped"),
    ("micro_batch_rows", "Rows of seq_len tokens per micro-batch (per_device_train_batch_size)"),
    ("grad_accum", "Micro-batches per optimizer step (gradient_accumulation_steps)"),
    ("packing", "pack: several examples to a row, each attending only to itself; pad: one a row"),
    ("overlong", "An example longer than seq_len: truncate it or drop it"),
    ("steps", "Optimizer steps (max_steps); wins over epochs; neither set: 1000"),
    ("epochs", "Passes over the training rows (num_train_epochs, fractions allowed), counted into steps from the data; unset: steps decides"),
    ("lr", "Peak learning rate (learning_rate)"),
    ("warmup_steps", "Steps of linear warmup from 0 to lr"),
    ("warmup_ratio", "Warmup as a fraction of the run's steps, rounded up; replaces warmup_steps; unset: warmup_steps"),
    ("decay", "The schedule after warmup (lr_scheduler_type): cosine, linear or constant"),
    ("min_lr_ratio", "The learning rate the decay ends at, as a fraction of lr (transformers' schedules end at 0)"),
    ("weight_decay", "AdamW's decoupled weight decay, on the weight matrices (not the embedding, norms or biases)"),
    ("beta1", "AdamW's first-moment decay (adam_beta1)"),
    ("beta2", "AdamW's second-moment decay (adam_beta2)"),
    ("eps", "AdamW's epsilon (adam_epsilon)"),
    ("max_grad_norm", "Global gradient-norm clipping; 0: off"),
    ("seed", "Seeds the data order, the held-out split and the mixing"),
    ("log_every", "Without a terminal, a plain progress line every this many steps (logging_steps); 0: none"),
    ("eval_every", "Evaluation loss every this many steps (eval_steps); 0: never"),
    ("save_every", "A checkpoint every this many steps (save_steps); 0: only at the end"),
    ("keep_last", "Checkpoints kept; older ones are deleted (save_total_limit)"),
    ("save_dtype", "Data type of the exported model weights: f32 or bf16 (masters stay f32)"),
    ("resume_from_checkpoint", "true: the newest checkpoint in output_dir, which must exist; false: start afresh (refused if output_dir holds a checkpoint); a path: that checkpoint; unset: the newest if any"),
    ("device", "Where the step runs: cpu, emulator or cuda[:N]"),
    ("gpu_precision", "Arithmetic on a GPU device: bf16 (f32 masters and moments) or f32"),
    ("recompute", "Recompute each layer's activations in the backward: less memory, one more forward"),
];

/// The meaning of `field`, if it is a setting.
pub fn meaning(field: &str) -> Option<&'static str> {
    MEANINGS.iter().find(|(f, _)| *f == field).map(|(_, m)| *m)
}

/// The default of `field` as written in a TOML file, unless it has none (unset).
pub fn default_value(field: &str) -> Option<String> {
    let defaults = toml::Value::try_from(super::TrainConfig::default()).ok()?;
    let value = defaults.get(field)?;
    match value {
        // An f32 setting, widened to f64 on the way: in its shortest f32 form (1e-5).
        toml::Value::Float(x) if f64::from(*x as f32) == *x => Some(format!("{:?}", *x as f32)),
        toml::Value::Array(items) if items.is_empty() => None,
        toml::Value::String(s) if s.is_empty() => None,
        // As typed on the command line: `--packing pack`.
        toml::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A flag's help: the meaning, then `[default: …]` where there is one.
pub fn flag_help(field: &str) -> String {
    let meaning = meaning(field).unwrap_or("");
    match default_value(field) {
        Some(default) => format!("{meaning} [default: {default}]"),
        None => meaning.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::TrainConfig;

    #[test]
    fn every_setting_has_a_meaning_and_every_meaning_a_setting() {
        let fields = TrainConfig::field_names();
        for field in &fields {
            assert!(meaning(field).is_some(), "{field} has no meaning");
        }
        for (field, _) in MEANINGS {
            assert!(fields.iter().any(|f| f == field), "{field} is no setting");
        }
    }

    #[test]
    fn help_gives_the_default() {
        assert!(
            flag_help("lr").ends_with("[default: 1e-5]"),
            "{}",
            flag_help("lr")
        );
        assert!(flag_help("packing").ends_with("[default: pack]"));
        assert!(!flag_help("steps").contains("[default"));
    }
}
