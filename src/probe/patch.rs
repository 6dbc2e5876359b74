//! Activation patching: run prompt A with one site's value at A's last position taken
//! from prompt B's last position, and measure how the probability of a target token (the
//! `<think>` that opens a reasoning reply) as the next token moves. Over every layer, for
//! the residual stream, the attention and MLP outputs, and (optionally) each head.

use serde::Serialize;

use super::record::{record, run_probes};
use super::{lens::probability, Intervention, Probes, Site, SiteKind};
use crate::model::Model;
use crate::{Result, Tensor};

/// The sites patched layer by layer.
pub const PATCHED_KINDS: [SiteKind; 3] = [SiteKind::ResidPre, SiteKind::AttnOut, SiteKind::MlpOut];

/// What patching measured: the target's probability after A and after B unpatched, and
/// for each patched site A's probability with that site taken from B.
#[derive(Clone, Debug, Serialize)]
pub struct PatchReport {
    pub target: u32,
    pub probability_a: f32,
    pub probability_b: f32,
    /// `[kind][layer]`, kinds as [`PATCHED_KINDS`].
    pub patched: Vec<Vec<f32>>,
    /// `[layer][head]`, when heads were patched.
    pub heads: Option<Vec<Vec<f32>>>,
}

/// Patches every layer's sites (and heads, with `heads`) of A from B.
pub fn patch(
    model: &Model,
    (a, b): (&[u32], &[u32]),
    target: u32,
    heads: bool,
) -> Result<PatchReport> {
    let layers = model.config.num_hidden_layers;
    let mut kinds = PATCHED_KINDS.to_vec();
    if heads {
        kinds.push(SiteKind::AttnHeads);
    }
    let sites: Vec<Site> = kinds
        .iter()
        .flat_map(|&k| (0..layers).map(move |l| Site::layer(k, l)))
        .collect();
    let (from_a, from_b) = (record(model, a, &sites)?, record(model, b, &sites)?);
    let probability =
        |probes: &mut Probes| -> Result<f32> { target_probability(model, a, target, probes) };
    let mixed = |site: Site| last_row_from(&from_a[&site], &from_b[&site]);
    let mut patched = Vec::new();
    for kind in PATCHED_KINDS {
        let row = (0..layers)
            .map(|l| {
                let site = Site::layer(kind, l);
                let mut probes = Probes::default();
                probes.intervene(
                    site,
                    Intervention::Replace {
                        value: mixed(site)?,
                        head: None,
                    },
                );
                probability(&mut probes)
            })
            .collect::<Result<Vec<f32>>>()?;
        patched.push(row);
    }
    let heads = heads
        .then(|| head_effects(model, &mixed, &probability))
        .transpose()?;
    Ok(PatchReport {
        target,
        probability_a: probability(&mut Probes::default())?,
        probability_b: target_probability(model, b, target, &mut Probes::default())?,
        patched,
        heads,
    })
}

fn head_effects(
    model: &Model,
    mixed: &dyn Fn(Site) -> Result<Tensor>,
    probability: &dyn Fn(&mut Probes) -> Result<f32>,
) -> Result<Vec<Vec<f32>>> {
    let c = &model.config;
    (0..c.num_hidden_layers)
        .map(|l| {
            let site = Site::layer(SiteKind::AttnHeads, l);
            let value = mixed(site)?;
            (0..c.num_attention_heads)
                .map(|h| {
                    let mut probes = Probes::default();
                    probes.intervene(
                        site,
                        Intervention::Replace {
                            value: value.clone(),
                            head: Some(h),
                        },
                    );
                    probability(&mut probes)
                })
                .collect()
        })
        .collect()
}

/// The probability of `target` as the token after `ids`.
fn target_probability(model: &Model, ids: &[u32], target: u32, probes: &mut Probes) -> Result<f32> {
    let logits = run_probes(model, ids, probes)?;
    let vocab = model.config.vocab_size;
    let last = &logits.to_vec_f32()?[(ids.len() - 1) * vocab..];
    Ok(probability(last, target))
}

/// `a` with its last row replaced by `b`'s last row.
fn last_row_from(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let dims = a.dims().to_vec();
    let width = dims[dims.len() - 1];
    let mut data = a.to_vec_f32()?;
    let b = b.to_vec_f32()?;
    let (len_a, len_b) = (data.len(), b.len());
    data[len_a - width..].copy_from_slice(&b[len_b - width..]);
    Tensor::from_vec(data, dims)
}

impl PatchReport {
    /// A Markdown table of the changes in probability, a row per site kind (and per head).
    pub fn markdown(&self, target_text: &str) -> String {
        let layers = self.patched[0].len();
        let columns: Vec<String> = (0..layers).map(|l| l.to_string()).collect();
        let mut out = format!(
            "P(`{target_text}` next) after A: {:.4}, after B: {:.4}. Change when A's last position takes B's value, per layer:\n\n| site | {} |\n|---|{}\n",
            self.probability_a,
            self.probability_b,
            columns.join(" | "),
            "--:|".repeat(layers)
        );
        let row = |name: String, values: &[f32]| {
            let cells: Vec<String> = values
                .iter()
                .map(|p| format!("{:+.4}", p - self.probability_a))
                .collect();
            format!("| {name} | {} |\n", cells.join(" | "))
        };
        for (kind, values) in PATCHED_KINDS.iter().zip(&self.patched) {
            out.push_str(&row(kind.name().to_string(), values));
        }
        if let Some(heads) = &self.heads {
            for h in 0..heads[0].len() {
                let per_layer: Vec<f32> = heads.iter().map(|layer| layer[h]).collect();
                out.push_str(&row(format!("head {h}"), &per_layer));
            }
        }
        out
    }
}
