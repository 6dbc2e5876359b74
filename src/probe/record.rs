//! Recording sites over prompts, and writing them as `activations.safetensors` with an
//! `index.json` that says, for every tensor, its prompt, tokens, site, layer and head.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::{Probes, Site, SiteKind};
use crate::autograd::no_grad;
use crate::model::{save_safetensors, Batch, Model};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result, Tensor};

/// One prompt and what was recorded of it.
pub struct Recorded {
    pub prompt: String,
    pub ids: Vec<u32>,
    pub sites: BTreeMap<Site, Tensor>,
}

/// The logits [T, vocab] of one prompt's forward through `probes`.
pub fn run_probes(model: &Model, ids: &[u32], probes: &mut Probes) -> Result<Tensor> {
    if ids.is_empty() {
        return Err(Error::shape("probe", "the prompt has no tokens"));
    }
    let _no_tape = no_grad();
    let batch = Batch::new(ids.to_vec(), 1, ids.len())?;
    model
        .forward_with_probes(&batch, probes)?
        .reshape([ids.len(), model.config.vocab_size])
}

/// `sites` of one prompt's forward.
pub fn record(model: &Model, ids: &[u32], sites: &[Site]) -> Result<BTreeMap<Site, Tensor>> {
    let mut probes = Probes::recording(sites.iter().copied());
    run_probes(model, ids, &mut probes)?;
    Ok(probes.recorded)
}

/// One tensor of the recording, as index.json lists it.
#[derive(Serialize)]
struct IndexEntry {
    tensor: String,
    prompt_index: usize,
    prompt: String,
    tokens: Vec<u32>,
    token_texts: Vec<String>,
    site: String,
    layer: Option<usize>,
    head: Option<usize>,
    shape: Vec<usize>,
}

/// Writes `recordings` into the folder `dir` (atomically: a complete folder or none).
pub fn write_recordings(dir: &Path, recordings: &[Recorded], tokenizer: &Tokenizer) -> Result<()> {
    let mut tensors = Vec::new();
    let mut index = Vec::new();
    for (i, rec) in recordings.iter().enumerate() {
        let texts: Vec<String> = rec
            .ids
            .iter()
            .map(|&id| tokenizer.id_to_token(id).unwrap_or_default())
            .collect();
        for (site, value) in &rec.sites {
            for (head, name, tensor) in split_heads(i, *site, value)? {
                index.push(IndexEntry {
                    tensor: name.clone(),
                    prompt_index: i,
                    prompt: rec.prompt.clone(),
                    tokens: rec.ids.clone(),
                    token_texts: texts.clone(),
                    site: site.kind.name().to_string(),
                    layer: site.layer,
                    head,
                    shape: tensor.dims().to_vec(),
                });
                tensors.push((name, tensor));
            }
        }
    }
    let json = serde_json::to_vec_pretty(&index).expect("the index serialises");
    crate::io::write_dir_atomic(dir, |tmp| {
        save_safetensors(&tmp.join("activations.safetensors"), &tensors)?;
        crate::io::write_atomic(&tmp.join("index.json"), &json)
    })
}

/// A site's tensors as stored: attention probabilities one [T, T] map per head, every
/// other site whole.
fn split_heads(
    prompt: usize,
    site: Site,
    value: &Tensor,
) -> Result<Vec<(Option<usize>, String, Tensor)>> {
    let name = format!("p{prompt}.{site}");
    if site.kind != SiteKind::AttnProbs {
        return Ok(vec![(None, name, value.clone())]);
    }
    let dims = value.dims();
    let (heads, t) = (dims[1], dims[2]);
    let data = value.to_vec_f32()?;
    (0..heads)
        .map(|h| {
            let map = data[h * t * t..(h + 1) * t * t].to_vec();
            Ok((
                Some(h),
                format!("{name}.h{h}"),
                Tensor::from_vec(map, vec![t, t])?,
            ))
        })
        .collect()
}

/// The prompt texts of a dataset file (JSONL, a JSON array as Alpaca ships, or parquet) of
/// objects with a `prompt`, a `question` (GSM8K) or an `instruction` (Alpaca; its `input`,
/// if any, after a blank line). Errors name the file, the line and what was expected.
pub fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let prompts = crate::data::read_values(path)?
        .iter()
        .map(|(at, v)| {
            prompt_of(v).ok_or_else(|| {
                let msg = "expected a non-empty \"prompt\", \"question\" or \"instruction\" string";
                Error::format(at.in_file(path), "(prompt)", msg)
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if prompts.is_empty() {
        return Err(Error::format(path, "(file)", "no prompts"));
    }
    Ok(prompts)
}

fn prompt_of(record: &serde_json::Value) -> Option<String> {
    let field = |name: &str| record.get(name)?.as_str().filter(|s| !s.trim().is_empty());
    if let Some(p) = field("prompt").or_else(|| field("question")) {
        return Some(p.to_string());
    }
    let instruction = field("instruction")?;
    Some(match field("input") {
        Some(input) => format!("{instruction}\n\n{input}"),
        None => instruction.to_string(),
    })
}
