//! AdamW (Loshchilov & Hutter): Adam with decoupled weight decay, computed as
//! `torch.optim.AdamW` computes it, so the two agree to float rounding.

use std::collections::HashMap;

use rayon::prelude::*;

use super::widen_as_written;
use crate::autograd::Gradients;
use crate::{DType, Error, Result, Tensor};

/// Elements per parallel chunk of an update.
const CHUNK: usize = 1 << 14;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// The peak learning rate; a `Schedule` scales it step by step.
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Applied to the parameters the decay rule picks, 0 for the others.
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    /// torch.optim.AdamW's defaults, except a learning rate suited to fine-tuning.
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// Whether a parameter gets weight decay, by its Hugging Face name: not the norms (a
/// name part ending in "norm"), the biases (last part "bias") or the embeddings (a part
/// "embed_tokens"); every other weight does, lm_head included when it is untied.
///
/// Hugging Face's Trainer (`get_decay_parameter_names`) excludes only biases and norms,
/// so it decays the embeddings (and, in a tied model, the shared embedding/lm_head
/// matrix). We keep them out, as GPT-2/nanoGPT-style recipes do: decay pulls every row
/// toward zero, including the rows of tokens that are rare in the fine-tuning data and
/// so get little gradient to push back.
pub fn default_decay(name: &str) -> bool {
    let mut parts = name.split('.');
    let is_bias = name.rsplit('.').next() == Some("bias");
    !(is_bias || parts.any(|part| part.ends_with("norm") || part == "embed_tokens"))
}

/// One parameter's moments, in f32 like the parameters.
struct Moments {
    name: String,
    dims: Vec<usize>,
    weight_decay: f32,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
}

/// The f32 coefficients of one step, rounded where torch rounds them: torch works them
/// out as Python floats (f64) and its kernels take them as f32. The GPU kernel
/// (src/optim/cuda.rs) takes the same values.
#[derive(Clone, Copy)]
pub(crate) struct Coefficients {
    pub(crate) one_minus_beta1: f32,
    pub(crate) beta2: f32,
    pub(crate) one_minus_beta2: f32,
    pub(crate) bias_correction2_sqrt: f32,
    pub(crate) eps: f32,
    pub(crate) neg_step_size: f32,
}

impl Coefficients {
    /// torch's `_single_tensor_adam` scalars for step `step` (1 for the first): bias
    /// corrections from the step count, folded into the step size and the denominator.
    pub(crate) fn new(c: &AdamWConfig, step: u64, lr: f32) -> Self {
        let (beta1, beta2) = (widen_as_written(c.beta1), widen_as_written(c.beta2));
        let t = step as f64;
        let bias_correction1 = 1.0 - beta1.powf(t);
        let bias_correction2 = 1.0 - beta2.powf(t);
        Coefficients {
            one_minus_beta1: (1.0 - beta1) as f32,
            beta2: c.beta2,
            one_minus_beta2: (1.0 - beta2) as f32,
            // `** 0.5` in torch: pow, not sqrt, which may differ in the last bit.
            bias_correction2_sqrt: bias_correction2.powf(0.5) as f32,
            eps: c.eps,
            neg_step_size: (-(lr as f64) / bias_correction1) as f32,
        }
    }
}

/// The factor decoupled weight decay multiplies a parameter by, `1 - lr * wd`, worked out
/// in f64 as torch does (`param.mul_(1 - lr * weight_decay)` with Python floats).
pub(crate) fn decay_factor(lr: f32, weight_decay: f32) -> f32 {
    (1.0 - lr as f64 * widen_as_written(weight_decay)) as f32
}

pub struct AdamW {
    config: AdamWConfig,
    moments: Vec<Moments>,
    step: u64,
}

impl AdamW {
    /// Zero moments for `params`; `decay` picks the parameters that get weight decay
    /// (`default_decay` in the usual case).
    pub fn new(
        params: &[(String, Tensor)],
        config: AdamWConfig,
        decay: impl Fn(&str) -> bool,
    ) -> Self {
        let moments = params
            .iter()
            .map(|(name, p)| Moments {
                name: name.clone(),
                dims: p.dims().to_vec(),
                weight_decay: if decay(name) {
                    config.weight_decay
                } else {
                    0.0
                },
                exp_avg: vec![0.0; p.elem_count()],
                exp_avg_sq: vec![0.0; p.elem_count()],
            })
            .collect();
        AdamW {
            config,
            moments,
            step: 0,
        }
    }

    /// Updates in place every parameter that has a gradient, with learning rate `lr`
    /// (already scheduled). `params` must be the list given to `new`, in its order.
    /// Parameters without a gradient are left alone, moments and all; unlike torch,
    /// which counts steps per parameter, the bias correction uses the one step count.
    pub fn step(&mut self, params: &[(String, Tensor)], grads: &Gradients, lr: f32) -> Result<()> {
        self.check_step_inputs(params, grads)?;
        self.step += 1;
        let coefficients = Coefficients::new(&self.config, self.step, lr);
        for (moments, (_, p)) in self.moments.iter_mut().zip(params) {
            let Some(g) = grads.get(p) else { continue };
            let decay_factor = decay_factor(lr, moments.weight_decay);
            let g = g.read_f32()?;
            let mut w = p.write_f32()?;
            update(&mut w, &g, moments, decay_factor, coefficients);
        }
        Ok(())
    }

    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The moments as named tensors, "exp_avg.<name>" and "exp_avg_sq.<name>", for a
    /// checkpoint (`scotd::model::save_safetensors`); the step count is kept beside them.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let tensor = |data: &[f32], dims: &[usize]| {
            Tensor::from_vec(data.to_vec(), dims.to_vec())
                .expect("moments have their parameter's element count")
        };
        self.moments
            .iter()
            .flat_map(|m| {
                [
                    (format!("exp_avg.{}", m.name), tensor(&m.exp_avg, &m.dims)),
                    (
                        format!("exp_avg_sq.{}", m.name),
                        tensor(&m.exp_avg_sq, &m.dims),
                    ),
                ]
            })
            .collect()
    }

    /// Restores what `state_tensors` and `step_count` saved. `read(name, shape)` fetches
    /// one tensor: `|n, s| weights.read(n, s)` for a `Weights` file, which names the
    /// file and the tensor when one is missing or mis-shaped. Nothing changes unless
    /// every moment loads.
    pub fn load_state(
        &mut self,
        mut read: impl FnMut(&str, &[usize]) -> Result<Tensor>,
        step: u64,
    ) -> Result<()> {
        let mut loaded = Vec::with_capacity(self.moments.len());
        for m in &self.moments {
            let exp_avg = read_moment(&mut read, &format!("exp_avg.{}", m.name), &m.dims)?;
            let exp_avg_sq = read_moment(&mut read, &format!("exp_avg_sq.{}", m.name), &m.dims)?;
            loaded.push((exp_avg, exp_avg_sq));
        }
        for (m, (exp_avg, exp_avg_sq)) in self.moments.iter_mut().zip(loaded) {
            m.exp_avg = exp_avg;
            m.exp_avg_sq = exp_avg_sq;
        }
        self.step = step;
        Ok(())
    }

    /// `load_state` from tensors in memory, as `state_tensors` returned them.
    pub fn load_state_tensors(&mut self, tensors: &[(String, Tensor)], step: u64) -> Result<()> {
        let by_name: HashMap<&str, &Tensor> =
            tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        self.load_state(
            |name, _| {
                by_name
                    .get(name)
                    .map(|t| (*t).clone())
                    .ok_or_else(|| Error::format("(optimizer state)", name, "moment missing"))
            },
            step,
        )
    }

    /// Everything that could fail midway, checked before anything is updated.
    fn check_step_inputs(&self, params: &[(String, Tensor)], grads: &Gradients) -> Result<()> {
        if params.len() != self.moments.len() {
            return Err(Error::shape(
                "AdamW::step",
                format!(
                    "{} parameters given, the optimizer was built for {}",
                    params.len(),
                    self.moments.len()
                ),
            ));
        }
        for (m, (name, p)) in self.moments.iter().zip(params) {
            if *name != m.name || p.dims() != m.dims.as_slice() {
                return Err(Error::shape(
                    "AdamW::step",
                    format!(
                        "parameter {name} {:?} is where the optimizer has {} {:?}",
                        p.dims(),
                        m.name,
                        m.dims
                    ),
                ));
            }
            check_parameter_and_gradient(name, p, grads.get(p))?;
        }
        Ok(())
    }
}

/// The parameter and its gradient are f32, and the gradient has storage of its own
/// (reading it while writing the parameter would otherwise deadlock).
fn check_parameter_and_gradient(name: &str, p: &Tensor, grad: Option<&Tensor>) -> Result<()> {
    let Some(g) = grad else { return Ok(()) };
    for t in [p, g] {
        if t.dtype() != DType::F32 {
            return Err(Error::DType {
                op: "AdamW::step",
                got: t.dtype(),
                expected: "F32 parameters and gradients",
            });
        }
    }
    if g.same_storage(p) {
        return Err(Error::Autograd(format!(
            "the gradient of {name} shares the parameter's storage"
        )));
    }
    Ok(())
}

fn read_moment(
    read: &mut impl FnMut(&str, &[usize]) -> Result<Tensor>,
    name: &str,
    dims: &[usize],
) -> Result<Vec<f32>> {
    let t = read(name, dims)?;
    if t.dims() != dims {
        return Err(Error::shape(
            "AdamW::load_state",
            format!("{name} has shape {:?}, its parameter {:?}", t.dims(), dims),
        ));
    }
    Ok(t.to_vec_f32())
}

/// One parameter's update, element by element in torch's order of operations:
/// p ← p·(1 − lr·wd); m ← lerp(m, g, 1 − β1); v ← v·β2 + (1 − β2)·g·g;
/// p ← p − step_size · m / (√v / √(1 − β2ᵗ) + eps), step_size = lr / (1 − β1ᵗ).
/// Plain IEEE operations, no fused multiply-add, so every machine gets the same bits;
/// torch's vectorised lerp and addcmul do fuse, and its AVX-512 sqrt is not correctly
/// rounded, so a few elements differ from torch's in the last bit.
fn update(w: &mut [f32], g: &[f32], moments: &mut Moments, decay_factor: f32, c: Coefficients) {
    w.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(moments.exp_avg.par_chunks_mut(CHUNK))
        .zip(moments.exp_avg_sq.par_chunks_mut(CHUNK))
        .for_each(|(((w, g), m), v)| {
            for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m).zip(v) {
                *w *= decay_factor;
                *m = lerp(*m, g, c.one_minus_beta1);
                *v = *v * c.beta2 + c.one_minus_beta2 * g * g;
                let denom = v.sqrt() / c.bias_correction2_sqrt + c.eps;
                *w += c.neg_step_size * *m / denom;
            }
        });
}

/// torch's lerp: the formula anchored at whichever end the weight is nearer.
fn lerp(start: f32, end: f32, weight: f32) -> f32 {
    if weight.abs() < 0.5 {
        start + weight * (end - start)
    } else {
        end - (end - start) * (1.0 - weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_skips_norms_biases_and_embeddings() {
        for name in [
            "model.embed_tokens.weight",
            "model.norm.weight",
            "model.layers.0.input_layernorm.weight",
            "model.layers.11.post_attention_layernorm.weight",
            "model.layers.0.self_attn.q_proj.bias",
            "model.layers.3.self_attn.v_proj.bias",
        ] {
            assert!(!default_decay(name), "{name} should not decay");
        }
        for name in [
            "lm_head.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.0.self_attn.o_proj.weight",
            "model.layers.5.mlp.gate_proj.weight",
            "model.layers.5.mlp.down_proj.weight",
        ] {
            assert!(default_decay(name), "{name} should decay");
        }
    }

    #[test]
    fn lerp_agrees_with_the_plain_formula() {
        assert_eq!(lerp(0.0, 2.0, 0.1), 0.2);
        assert_eq!(lerp(1.0, 3.0, 1.0), 3.0);
        assert_eq!(lerp(1.0, 3.0, 0.75), 2.5);
    }
}
