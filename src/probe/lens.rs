//! The logit lens: what the residual stream after each layer would predict if the model
//! stopped there (the final norm and the output projection applied to it), at every
//! position: the top tokens and their probabilities.

use super::record::record;
use super::{Site, SiteKind};
use crate::model::Model;
use crate::tokenizer::Tokenizer;
use crate::Result;

/// The top `k` (token, probability) of each layer at each position.
pub struct LogitLens {
    pub tokens: Vec<u32>,
    /// `[layer][position]`, best first.
    pub top: Vec<Vec<Vec<(u32, f32)>>>,
}

/// The logit lens of one prompt.
pub fn logit_lens(model: &Model, ids: &[u32], k: usize) -> Result<LogitLens> {
    let layers = model.config.num_hidden_layers;
    let sites: Vec<Site> = (0..layers)
        .map(|l| Site::layer(SiteKind::ResidPost, l))
        .collect();
    let recorded = record(model, ids, &sites)?;
    let vocab = model.config.vocab_size;
    let top = sites
        .iter()
        .map(|site| {
            let _no_tape = crate::autograd::no_grad();
            let logits = model.unembed(&recorded[site])?;
            let logits = logits.to_vec_f32()?;
            Ok(logits.chunks(vocab).map(|row| top_k(row, k)).collect())
        })
        .collect::<Result<_>>()?;
    Ok(LogitLens {
        tokens: ids.to_vec(),
        top,
    })
}

/// The `k` most probable entries of softmax(`logits`), best first.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // Ties in token order, as a stable sort of the whole vocabulary would leave them.
    let best_first = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    // Only the k best are sorted: a full sort of the vocabulary per position and layer
    // was most of the lens' time.
    if k < order.len() {
        order.select_nth_unstable_by(k, best_first);
        order.truncate(k);
    }
    order.sort_by(best_first);
    order
        .into_iter()
        .map(|i| (i as u32, (((logits[i] - max) as f64).exp() / sum) as f32))
        .collect()
}

/// softmax(`logits`)[`token`] (0 for a token past the vocabulary).
pub fn probability(logits: &[f32], token: u32) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    logits
        .get(token as usize)
        .map_or(0.0, |&l| (((l - max) as f64).exp() / sum) as f32)
}

impl LogitLens {
    /// A Markdown table: a row per layer, a column per position, each cell the top token
    /// and its probability.
    pub fn markdown(&self, tokenizer: &Tokenizer) -> String {
        let text = |id: u32| escape(&tokenizer.id_to_token(id).unwrap_or_default());
        let header: Vec<String> = self
            .tokens
            .iter()
            .map(|&t| format!("`{}`", text(t)))
            .collect();
        let mut out = format!(
            "| layer | {} |\n|---|{}\n",
            header.join(" | "),
            "---|".repeat(header.len())
        );
        for (layer, positions) in self.top.iter().enumerate() {
            let cells: Vec<String> = positions
                .iter()
                .map(|top| {
                    top.first()
                        .map_or(String::new(), |&(id, p)| format!("`{}` {:.2}", text(id), p))
                })
                .collect();
            out.push_str(&format!("| {layer} | {} |\n", cells.join(" | ")));
        }
        out
    }
}

fn escape(token: &str) -> String {
    token
        .replace('|', "\\|")
        .replace('`', "'")
        .replace('\n', "\\n")
}
