//! Linear probes: per layer, a logistic regression on the residual stream after the layer
//! (at the prompt's last position, or averaged over its positions) that separates two
//! prompt sets, and its accuracy on prompts held out of its training. A layer where a
//! linear probe separates the sets holds the distinction in a linearly readable form.
//!
//! The first probe reads the embeddings (`resid_pre.0`), a control: at the last position,
//! which with a chat template is the same token in every prompt (`assistant\n`), it
//! cannot tell the sets apart, so whatever the later probes find there was carried to the
//! reply's position by attention. The mean over positions separates sets by their words
//! from the embeddings on.

use serde::Serialize;

use super::record::record;
use super::{Site, SiteKind};
use crate::model::Model;
use crate::rng::Rng;
use crate::{Error, Result};

/// Every third example (after a seeded shuffle) is held out.
const HELD_OUT_EVERY: usize = 3;
const EPOCHS: usize = 300;
const LEARNING_RATE: f64 = 0.5;
const L2: f64 = 1e-3;

/// One site's probe.
#[derive(Clone, Debug, Serialize)]
pub struct LayerProbe {
    /// `resid_pre.0` (the embeddings, the control) or `resid_post.L`.
    pub site: String,
    pub train_accuracy: f64,
    pub held_out_accuracy: f64,
}

/// Which positions' residual stream a probe reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The prompt's last position (where the reply's first token is predicted).
    Last,
    /// The mean over the prompt's positions.
    Mean,
}

/// The sites the probes read: the embeddings, then the residual stream after each layer.
pub fn probed_sites(layers: usize) -> Vec<Site> {
    let after = (0..layers).map(|l| Site::layer(SiteKind::ResidPost, l));
    std::iter::once(Site::layer(SiteKind::ResidPre, 0))
        .chain(after)
        .collect()
}

/// The residual stream of one prompt at [`probed_sites`], pooled: `[site][hidden]`.
pub fn residual_features(model: &Model, ids: &[u32], pooling: Pooling) -> Result<Vec<Vec<f32>>> {
    let (layers, hidden) = (model.config.num_hidden_layers, model.config.hidden_size);
    let sites = probed_sites(layers);
    let recorded = record(model, ids, &sites)?;
    sites
        .iter()
        .map(|site| {
            let rows = recorded[site].to_vec_f32()?;
            if pooling == Pooling::Last {
                return Ok(rows[rows.len() - hidden..].to_vec());
            }
            let mut mean = vec![0.0f32; hidden];
            for row in rows.chunks(hidden) {
                mean.iter_mut()
                    .zip(row)
                    .for_each(|(m, x)| *m += x / ids.len() as f32);
            }
            Ok(mean)
        })
        .collect()
}

/// Trains and scores a probe per site. `features[i][s]` is example i's vector at site s
/// (named `sites[s]`), `labels[i]` its set; the split is seeded, the same for every site.
pub fn probe_layers(
    features: &[Vec<Vec<f32>>],
    labels: &[bool],
    sites: &[String],
    seed: u64,
) -> Result<Vec<LayerProbe>> {
    let n = features.len();
    if n != labels.len()
        || n < 2 * HELD_OUT_EVERY
        || labels.iter().all(|&l| l)
        || !labels.iter().any(|&l| l)
    {
        return Err(Error::shape(
            "linear probe",
            format!(
                "{n} examples with labels of both sets are needed, at least {}",
                2 * HELD_OUT_EVERY
            ),
        ));
    }
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = Rng::new(seed);
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let (mut held, mut train) = (Vec::new(), Vec::new());
    for (rank, &i) in order.iter().enumerate() {
        if rank % HELD_OUT_EVERY == 0 {
            held.push(i);
        } else {
            train.push(i);
        }
    }
    Ok((0..sites.len())
        .map(|layer| {
            let x = |i: usize| &features[i][layer][..];
            let model =
                Logistic::fit(&train.iter().map(|&i| (x(i), labels[i])).collect::<Vec<_>>());
            let accuracy = |set: &[usize]| {
                set.iter()
                    .filter(|&&i| model.predict(x(i)) == labels[i])
                    .count() as f64
                    / set.len() as f64
            };
            LayerProbe {
                site: sites[layer].clone(),
                train_accuracy: accuracy(&train),
                held_out_accuracy: accuracy(&held),
            }
        })
        .collect())
}

/// Logistic regression on standardised features, L2-regularised, by full-batch gradient
/// descent from zero (deterministic).
struct Logistic {
    mean: Vec<f64>,
    scale: Vec<f64>,
    weights: Vec<f64>,
    bias: f64,
}

impl Logistic {
    fn fit(examples: &[(&[f32], bool)]) -> Logistic {
        let dim = examples[0].0.len();
        let n = examples.len() as f64;
        let mut mean = vec![0.0; dim];
        for (x, _) in examples {
            mean.iter_mut()
                .zip(*x)
                .for_each(|(m, &v)| *m += v as f64 / n);
        }
        let mut scale = vec![0.0; dim];
        for (x, _) in examples {
            scale
                .iter_mut()
                .zip(*x)
                .zip(&mean)
                .for_each(|((s, &v), m)| *s += (v as f64 - m).powi(2) / n);
        }
        scale.iter_mut().for_each(|s| *s = s.sqrt().max(1e-6));
        let mut model = Logistic {
            mean,
            scale,
            weights: vec![0.0; dim],
            bias: 0.0,
        };
        let standard: Vec<(Vec<f64>, f64)> = examples
            .iter()
            .map(|(x, y)| (model.standardise(x), f64::from(u8::from(*y))))
            .collect();
        for _ in 0..EPOCHS {
            let mut grad = vec![0.0; dim];
            let mut grad_bias = 0.0;
            for (x, y) in &standard {
                let err = sigmoid(model.logit(x)) - y;
                grad.iter_mut().zip(x).for_each(|(g, v)| *g += err * v / n);
                grad_bias += err / n;
            }
            for (w, g) in model.weights.iter_mut().zip(&grad) {
                *w -= LEARNING_RATE * (g + L2 * *w);
            }
            model.bias -= LEARNING_RATE * grad_bias;
        }
        model
    }

    fn standardise(&self, x: &[f32]) -> Vec<f64> {
        x.iter()
            .zip(&self.mean)
            .zip(&self.scale)
            .map(|((&v, m), s)| (v as f64 - m) / s)
            .collect()
    }

    fn logit(&self, standard: &[f64]) -> f64 {
        self.bias
            + self
                .weights
                .iter()
                .zip(standard)
                .map(|(w, v)| w * v)
                .sum::<f64>()
    }

    fn predict(&self, x: &[f32]) -> bool {
        self.logit(&self.standardise(x)) > 0.0
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// A Markdown table of the probes, the best held-out layer marked.
pub fn markdown(probes: &[LayerProbe], (a, b): (&str, &str), pooling: Pooling) -> String {
    let best = probes
        .iter()
        .map(|p| p.held_out_accuracy)
        .fold(0.0, f64::max);
    let read = match pooling {
        Pooling::Last => "at the last position",
        Pooling::Mean => "averaged over positions",
    };
    let mut out = format!("Linear probe per site: {a} vs {b} (residual stream {read}; resid_pre.0 is the embeddings, the control)\n\n| site | train accuracy | held-out accuracy |\n|---|--:|--:|\n");
    for p in probes {
        let mark = if p.held_out_accuracy == best {
            " **best**"
        } else {
            ""
        };
        out.push_str(&format!(
            "| {} | {:.3} | {:.3}{mark} |\n",
            p.site, p.train_accuracy, p.held_out_accuracy
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two clouds apart along one axis among noise: the probe finds it at the layer that
    /// has it and not at the one that does not.
    #[test]
    fn separable_layers_are_found_and_noise_is_not() {
        let mut rng = Rng::new(3);
        let labels: Vec<bool> = (0..60).map(|i| i % 2 == 0).collect();
        let features: Vec<Vec<Vec<f32>>> = labels
            .iter()
            .map(|&y| {
                let noise = rng.normal_vec(8, 1.0);
                let mut signal = rng.normal_vec(8, 1.0);
                signal[3] += if y { 3.0 } else { -3.0 };
                vec![noise, signal]
            })
            .collect();
        let sites = ["noise".to_string(), "signal".to_string()];
        let probes = probe_layers(&features, &labels, &sites, 1).unwrap();
        assert!(probes[1].held_out_accuracy > 0.9, "{probes:?}");
        assert!(probes[0].held_out_accuracy < 0.8, "{probes:?}");
        assert!(probe_layers(&features[..4], &labels[..4], &sites, 1).is_err());
    }
}
