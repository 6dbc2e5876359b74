//! AdamW (Loshchilov & Hutter): Adam with decoupled weight decay, computed as
//! `torch.optim.AdamW` computes it, so the two agree to float rounding.

use rayon::prelude::*;

use super::cuda::{adamw_update, grad_norm, AdamwBuffers, AdamwPlan, FlatSegment};
use super::widen_as_written;
use crate::model::FlatParams;
use crate::{DType, Device, Error, Result, Tensor};

/// Elements per parallel chunk of an update, and of the gradient norm's sum of squares:
/// fixed, so the sums are always added up in the same order (a resumed run reproduces
/// the norm bit for bit).
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
/// "embed_tokens"); every other weight does, lm_head included when it is untied. The
/// model's parameter specs (`model::parameter_specs`) carry the same rule as `decay`.
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

/// What one optimizer step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOutcome {
    /// The global gradient norm before clipping.
    pub grad_norm: f32,
    /// True when the norm was not finite: nothing was updated.
    pub skipped: bool,
}

/// AdamW over [`FlatParams`]: its moments are flat buffers on the parameters' device,
/// laid out as they are, so that the gradient norm and the update are each one pass on
/// every device (on a GPU, one launch each, which also rewrites the bf16 compute copy).
pub struct AdamW {
    config: AdamWConfig,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    segments: Vec<FlatSegment>,
    /// The segments' chunk table on a GPU.
    plan: Option<AdamwPlan>,
    names: Vec<(String, Vec<usize>, usize)>,
    step: u64,
}

impl AdamW {
    /// Zero moments for `store`'s parameters, each decayed as its layout says.
    pub fn new(store: &FlatParams, config: AdamWConfig) -> Result<AdamW> {
        let device = store.device();
        let len = store.layout.len;
        let segments: Vec<FlatSegment> = store
            .layout
            .params
            .iter()
            .map(|p| FlatSegment {
                offset: p.range.start,
                len: p.range.len(),
                decay: p.decay,
            })
            .collect();
        let plan = match device {
            Device::Cpu => None,
            _ => Some(AdamwPlan::new(
                &*crate::tensor::gpu_of(device)?,
                &segments,
                len,
            )?),
        };
        let names = store
            .layout
            .params
            .iter()
            .map(|p| (p.name.clone(), p.shape.clone(), p.range.start))
            .collect();
        Ok(AdamW {
            config,
            exp_avg: Tensor::zeros_on([len], DType::F32, device)?,
            exp_avg_sq: Tensor::zeros_on([len], DType::F32, device)?,
            segments,
            plan,
            names,
            step: 0,
        })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// One step at learning rate `lr` (already scheduled): the global norm of the store's
    /// gradients, their clipping to `max_grad_norm` (0: no clipping), and the update of
    /// every parameter, as torch's `clip_grad_norm_` then `AdamW.step` compute them.
    /// A non-finite norm updates nothing (torch would multiply every gradient by NaN):
    /// the step is skipped and not counted. Unlike torch, which counts steps per
    /// parameter, the bias correction uses the one step count.
    pub fn step(&mut self, store: &FlatParams, lr: f32, max_grad_norm: f32) -> Result<StepOutcome> {
        let max_norm = if max_grad_norm > 0.0 {
            max_grad_norm
        } else {
            f32::INFINITY
        };
        if store.layout.len != self.exp_avg.elem_count() || store.device() != self.exp_avg.device()
        {
            return Err(Error::shape(
                "AdamW::step",
                "the store is not the one the optimizer was built for",
            ));
        }
        let coefficients = Coefficients::new(&self.config, self.step + 1, lr);
        let grad_norm = match &self.plan {
            None => self.cpu_step(store, max_norm, lr, coefficients)?,
            Some(plan) => self.gpu_step(plan, store, max_norm, lr)?,
        };
        let skipped = !grad_norm.is_finite();
        if !skipped {
            self.step += 1;
        }
        Ok(StepOutcome { grad_norm, skipped })
    }

    fn cpu_step(&self, store: &FlatParams, max_norm: f32, lr: f32, c: Coefficients) -> Result<f32> {
        let g = store.grads.read_f32()?;
        let norm = sum_of_squares(&g).sqrt() as f32;
        if !norm.is_finite() {
            return Ok(norm);
        }
        let clip = clip_factor(norm, max_norm);
        let (mut w, mut m, mut v) = (
            store.master.write_f32()?,
            self.exp_avg.write_f32()?,
            self.exp_avg_sq.write_f32()?,
        );
        for s in &self.segments {
            let r = s.offset..s.offset + s.len;
            let wd = if s.decay {
                self.config.weight_decay
            } else {
                0.0
            };
            let moments = (&mut m[r.clone()], &mut v[r.clone()]);
            update(
                &mut w[r.clone()],
                &g[r],
                moments,
                (decay_factor(lr, wd), clip),
                c,
            );
        }
        Ok(norm)
    }

    fn gpu_step(
        &self,
        plan: &AdamwPlan,
        store: &FlatParams,
        max_norm: f32,
        lr: f32,
    ) -> Result<f32> {
        const OP: &str = "AdamW";
        let rg = store.grads.read_gpu(OP)?;
        let gpu = rg.gpu().clone();
        let clip = grad_norm(&gpu, rg.view::<f32>(OP)?, max_norm)?;
        {
            let mut w = store.master.write_gpu(OP)?;
            let mut copy = store
                .compute_copy
                .as_ref()
                .map(|c| c.write_gpu(OP))
                .transpose()?;
            let (mut m, mut v) = (self.exp_avg.write_gpu(OP)?, self.exp_avg_sq.write_gpu(OP)?);
            let buffers = AdamwBuffers {
                params: w.view_mut(OP)?,
                params_bf16: copy.as_mut().map(|c| c.view_mut(OP)).transpose()?,
                exp_avg: m.view_mut(OP)?,
                exp_avg_sq: v.view_mut(OP)?,
                grads: rg.view(OP)?,
            };
            adamw_update(
                &gpu,
                plan,
                buffers,
                &self.config,
                self.step + 1,
                lr,
                Some(&clip),
            )?;
        }
        Ok(gpu.download(&clip)?[0])
    }

    /// Optimizer steps taken (skipped ones not counted).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The moments as named tensors, "exp_avg.<name>" and "exp_avg_sq.<name>" (views of
    /// the flat buffers), for a checkpoint (`scotd::model::save_safetensors`); the step
    /// count is kept beside them.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(2 * self.names.len());
        for (name, shape, start) in &self.names {
            for (prefix, flat) in [("exp_avg", &self.exp_avg), ("exp_avg_sq", &self.exp_avg_sq)] {
                out.push((
                    format!("{prefix}.{name}"),
                    flat.view_of_flat(*start, shape.clone())?,
                ));
            }
        }
        Ok(out)
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
        let targets = self.state_tensors()?;
        let mut loaded = Vec::with_capacity(targets.len());
        for (name, target) in &targets {
            let t = read(name, target.dims())?;
            if t.dims() != target.dims() {
                return Err(Error::shape(
                    "AdamW::load_state",
                    format!(
                        "{name} has shape {:?}, its parameter {:?}",
                        t.dims(),
                        target.dims()
                    ),
                ));
            }
            loaded.push(t);
        }
        for ((_, target), t) in targets.iter().zip(loaded) {
            target.copy_from(&t)?;
        }
        self.step = step;
        Ok(())
    }
}

/// Σ x² in f64, over chunks of a fixed size summed in order.
fn sum_of_squares(values: &[f32]) -> f64 {
    let chunk_sums: Vec<f64> = values
        .par_chunks(CHUNK)
        .map(|chunk| chunk.iter().map(|&x| x as f64 * x as f64).sum())
        .collect();
    chunk_sums.iter().sum()
}

/// What clipping to `max_norm` multiplies every gradient by: torch's coefficient
/// `max_norm / (norm + 1e-6)` when it is below 1, else 1 (so, like torch, a norm within
/// 1e-6 above `max_norm` is scaled by a factor a hair under 1).
pub(crate) fn clip_factor(norm: f32, max_norm: f32) -> f32 {
    let coefficient = max_norm / (norm + 1e-6);
    if coefficient < 1.0 {
        coefficient
    } else {
        1.0
    }
}

/// One parameter's update, element by element in torch's order of operations, with the
/// gradient times the clip factor: g ← g·clip; p ← p·(1 − lr·wd); m ← lerp(m, g, 1 − β1);
/// v ← v·β2 + (1 − β2)·g·g; p ← p − step_size · m / (√v / √(1 − β2ᵗ) + eps),
/// step_size = lr / (1 − β1ᵗ). Plain IEEE operations, no fused multiply-add, so every
/// machine gets the same bits; torch's vectorised lerp and addcmul do fuse, and its
/// AVX-512 sqrt is not correctly rounded, so a few elements differ from torch's in the
/// last bit.
fn update(
    w: &mut [f32],
    g: &[f32],
    (m, v): (&mut [f32], &mut [f32]),
    (decay_factor, clip): (f32, f32),
    c: Coefficients,
) {
    w.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|(((w, g), m), v)| {
            for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m).zip(v) {
                let g = g * clip;
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
