//! The training step on a GPU: forward and backward of every micro-batch into one f32
//! gradient buffer, the global gradient norm and clip factor, and AdamW over all the
//! parameters in one launch, which also rewrites the bf16 weights. Everything is queued
//! on the device's stream; the host reads back the step's losses and gradient norm only
//! once the whole step (optimizer included) has been queued.

use crate::backend::cuda::{Gpu, GpuBuffer};
use crate::model::gpu::{ComputeType, DeviceBatch, GpuModel};
use crate::model::Model;
use crate::optim::cuda::{adamw_update, grad_norm, AdamwBuffers, AdamwPlan};
use crate::optim::{AdamW, AdamWConfig};
use crate::{Result, Tensor};

/// A model on the GPU with its gradients and AdamW state.
pub struct GpuTrainer {
    pub model: GpuModel,
    grads: GpuBuffer<f32>,
    exp_avg: GpuBuffer<f32>,
    exp_avg_sq: GpuBuffer<f32>,
    plan: AdamwPlan,
    config: AdamWConfig,
    /// Optimizer steps taken (skipped ones not counted), as `AdamW::step_count`.
    steps: u64,
}

/// What one step measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GpuStep {
    /// The mean loss over the step's supervised tokens.
    pub loss: f32,
    /// The gradient norm before clipping.
    pub grad_norm: f32,
    /// True when the norm was not finite or nothing was supervised: no update was made.
    pub skipped: bool,
}

impl GpuTrainer {
    /// `model` uploaded, with zero moments.
    pub fn new(gpu: &Gpu, model: &Model, config: AdamWConfig) -> Result<GpuTrainer> {
        let model = GpuModel::upload(gpu, model)?;
        let n = model.layout.len;
        Ok(GpuTrainer {
            plan: AdamwPlan::new(gpu, &model.layout.adamw_segments(), n)?,
            grads: gpu.zeros(n)?,
            exp_avg: gpu.zeros(n)?,
            exp_avg_sq: gpu.zeros(n)?,
            model,
            config,
            steps: 0,
        })
    }

    /// One optimizer step over `batches` (the micro-batches of gradient accumulation) at
    /// learning rate `lr`, clipping the gradient norm to `max_grad_norm` (0: no clipping),
    /// with activations and arithmetic in `T`. The loss is the mean over every supervised
    /// token of all the micro-batches, as the CPU trainer's.
    pub fn step<T: ComputeType>(
        &mut self,
        gpu: &Gpu,
        batches: &[DeviceBatch],
        lr: f32,
        max_grad_norm: f32,
        recompute: bool,
    ) -> Result<GpuStep> {
        let supervised: usize = batches.iter().map(|b| b.supervised).sum();
        let grad_scale = 1.0 / supervised.max(1) as f32;
        gpu.fill_zero(&mut self.grads)?;
        let mut losses = Vec::with_capacity(batches.len());
        for batch in batches {
            let mut batch_losses = gpu.alloc::<f32>(batch.tokens())?;
            let outputs = (&mut self.grads, &mut batch_losses);
            self.model
                .forward_backward::<T>(gpu, batch, outputs, grad_scale, recompute)?;
            losses.push(batch_losses);
        }
        let max_norm = if max_grad_norm > 0.0 {
            max_grad_norm
        } else {
            f32::INFINITY
        };
        let clip = grad_norm(gpu, &self.grads, max_norm)?;
        if supervised > 0 {
            self.update(gpu, &clip, lr)?;
        }
        let grad_norm = gpu.download(&clip)?[0];
        let mut loss_sum = 0.0f64;
        for l in &losses {
            loss_sum += gpu.download(l)?.iter().map(|&x| x as f64).sum::<f64>();
        }
        let skipped = !grad_norm.is_finite() || supervised == 0;
        if !skipped {
            self.steps += 1;
        }
        Ok(GpuStep {
            loss: (loss_sum * grad_scale as f64) as f32,
            grad_norm,
            skipped,
        })
    }

    /// Continues from a CPU model and optimizer (a resumed checkpoint): their weights,
    /// moments and step count replace the device's.
    pub fn load(&mut self, gpu: &Gpu, model: &Model, optimizer: &AdamW) -> Result<()> {
        self.model.load(gpu, model)?;
        let layout = &self.model.layout;
        let moments = optimizer.state_tensors();
        let named = |prefix: &str| -> Vec<(String, Tensor)> {
            moments
                .iter()
                .filter_map(|(n, t)| Some((n.strip_prefix(prefix)?.to_string(), t.clone())))
                .collect()
        };
        self.exp_avg = gpu.upload(&layout.flatten(&named("exp_avg."))?)?;
        self.exp_avg_sq = gpu.upload(&layout.flatten(&named("exp_avg_sq."))?)?;
        self.steps = optimizer.step_count();
        Ok(())
    }

    /// Writes the device's master weights into `model`'s parameters and its moments and
    /// step count into `optimizer`, for a checkpoint or an evaluation on the CPU.
    pub fn store(&self, gpu: &Gpu, model: &Model, optimizer: &mut AdamW) -> Result<()> {
        let layout = &self.model.layout;
        let master = gpu.download(&self.model.master)?;
        for (name, p) in model.parameters() {
            let range = layout.param(&name)?.range.clone();
            p.write_f32()?.copy_from_slice(&master[range]);
        }
        let (m, v) = (
            gpu.download(&self.exp_avg)?,
            gpu.download(&self.exp_avg_sq)?,
        );
        optimizer.load_state(
            |name, _| {
                let (flat, param) = match name.strip_prefix("exp_avg_sq.") {
                    Some(p) => (&v, p),
                    None => (&m, name.strip_prefix("exp_avg.").unwrap_or(name)),
                };
                layout.tensor(flat, param)
            },
            self.steps,
        )
    }

    /// AdamW as step `self.steps + 1`; the kernel itself leaves everything unchanged
    /// when the norm in `clip` is not finite.
    fn update(&mut self, gpu: &Gpu, clip: &GpuBuffer<f32>, lr: f32) -> Result<()> {
        let buffers = AdamwBuffers {
            params: &mut self.model.master,
            params_bf16: &mut self.model.copy,
            exp_avg: &mut self.exp_avg,
            exp_avg_sq: &mut self.exp_avg_sq,
            grads: &self.grads,
        };
        let step = self.steps + 1;
        adamw_update(gpu, &self.plan, buffers, &self.config, step, lr, Some(clip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::test_gpus;
    use crate::model::{Batch, ModelConfig};
    use crate::ops::{Reduction, IGNORE_INDEX};
    use crate::optim::{clip_grad_norm, default_decay, AdamW};
    use crate::rng::Rng;
    use half::bf16;

    const STEPS: usize = 50;
    const LR: f32 = 3e-3;
    const MAX_NORM: f32 = 1.0;

    /// A tiny Qwen2: GQA 2:1, q/k/v biases, tied embeddings.
    fn tiny_config() -> ModelConfig {
        let json = r#"{"model_type": "qwen2", "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48,
            "vocab_size": 61, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
            "tie_word_embeddings": true}"#;
        ModelConfig::from_json(json, std::path::Path::new("tiny")).unwrap()
    }

    /// The same with head_dim 64, where bf16 attention runs on the flash kernels.
    fn flash_config() -> ModelConfig {
        let json = r#"{"model_type": "qwen2", "hidden_size": 128, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64,
            "intermediate_size": 64, "vocab_size": 61, "rope_theta": 10000.0,
            "rms_norm_eps": 1e-6, "tie_word_embeddings": true}"#;
        ModelConfig::from_json(json, std::path::Path::new("tiny-flash")).unwrap()
    }

    /// Two micro-batches: one of two plain rows, one packed row of three sequences, with
    /// ignored targets (prompt tokens and the ends of sequences).
    fn micro_batches(vocab: usize) -> Vec<(Batch, Vec<i64>)> {
        let mut rng = Rng::new(11);
        let mut ids = |n: usize| -> Vec<u32> { (0..n).map(|_| rng.below(vocab) as u32).collect() };
        let plain = Batch::new(ids(2 * 9), 2, 9).unwrap();
        let segments = vec![0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2];
        let positions = vec![0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 0, 1, 2];
        let packed = Batch::packed(ids(13), 1, 13, positions, Some(segments)).unwrap();
        [plain, packed]
            .into_iter()
            .map(|b| {
                let n = b.input_ids.len();
                let targets = (0..n)
                    .map(|i| {
                        let last =
                            i + 1 == n || b.segments.as_ref().is_some_and(|s| s[i] != s[i + 1]);
                        if i % 5 == 0
                            || last
                            || (b.positions[i] as usize + 1).is_multiple_of(b.seq_len)
                        {
                            IGNORE_INDEX
                        } else {
                            b.input_ids[i + 1] as i64
                        }
                    })
                    .collect();
                (b, targets)
            })
            .collect()
    }

    /// The CPU trainer's step, as src/train/trainer.rs takes it; the loss per step.
    fn cpu_losses(model: &Model, batches: &[(Batch, Vec<i64>)], steps: usize) -> Vec<f32> {
        let params = model.parameters();
        let mut optimizer = AdamW::new(&params, AdamWConfig::default(), default_decay);
        let supervised: usize = batches
            .iter()
            .map(|(_, t)| t.iter().filter(|&&x| x != IGNORE_INDEX).count())
            .sum();
        (0..steps)
            .map(|_| {
                let mut grads = crate::autograd::Gradients::default();
                let mut loss = 0.0;
                for (batch, targets) in batches {
                    let l = model
                        .loss(batch, targets, Reduction::MeanOver(supervised as f32))
                        .unwrap();
                    loss += l.to_scalar().unwrap();
                    grads.add_from(l.backward().unwrap()).unwrap();
                }
                clip_grad_norm(&params, &mut grads, MAX_NORM).unwrap();
                optimizer.step(&params, &grads, LR).unwrap();
                loss
            })
            .collect()
    }

    fn gpu_losses<T: ComputeType>(
        gpu: &Gpu,
        model: &Model,
        batches: &[(Batch, Vec<i64>)],
        (steps, recompute): (usize, bool),
    ) -> Vec<f32> {
        let mut trainer = GpuTrainer::new(gpu, model, AdamWConfig::default()).unwrap();
        let device_batches: Vec<DeviceBatch> = batches
            .iter()
            .map(|(b, t)| DeviceBatch::new(gpu, &model.config, b, t).unwrap())
            .collect();
        (0..steps)
            .map(|_| {
                let step = trainer
                    .step::<T>(gpu, &device_batches, LR, MAX_NORM, recompute)
                    .unwrap();
                assert!(!step.skipped);
                step.loss
            })
            .collect()
    }

    #[test]
    fn fifty_steps_follow_the_cpu_trainer() {
        let config = tiny_config();
        let batches = micro_batches(config.vocab_size);
        // A fresh model for every run: the CPU optimizer updates the parameters in place.
        let model = || Model::random(config.clone(), 5);
        let cpu = cpu_losses(&model(), &batches, STEPS);
        assert!(cpu[STEPS - 1] < 0.8 * cpu[0], "the run learns: {cpu:?}");
        for gpu in test_gpus() {
            let f32_run = gpu_losses::<f32>(&gpu, &model(), &batches, (STEPS, false));
            for (step, (g, c)) in f32_run.iter().zip(&cpu).enumerate() {
                assert!(
                    (g - c).abs() <= 1e-4 * c.abs(),
                    "f32 step {step}: {g} vs {c}"
                );
            }
            // bf16 activations and weights: within bf16's rounding of the CPU curve, which
            // compounds over 50 steps of a fast-learning run (2.1% at most, measured).
            let bf16_run = gpu_losses::<bf16>(&gpu, &model(), &batches, (STEPS, false));
            for (step, (g, c)) in bf16_run.iter().zip(&cpu).enumerate() {
                assert!(
                    (g - c).abs() <= 3e-2 * c.abs(),
                    "bf16 step {step}: {g} vs {c}"
                );
            }
            // Recomputing activations runs the same kernels on the same inputs.
            let recomputed = gpu_losses::<bf16>(&gpu, &model(), &batches, (3, true));
            assert_eq!(recomputed, bf16_run[..3]);
        }
    }

    #[test]
    fn bf16_steps_on_the_flash_kernels_follow_the_cpu_trainer() {
        let config = flash_config();
        let batches = micro_batches(config.vocab_size);
        let model = || Model::random(config.clone(), 9);
        let cpu = cpu_losses(&model(), &batches, 10);
        for gpu in test_gpus() {
            let run = gpu_losses::<bf16>(&gpu, &model(), &batches, (10, false));
            for (step, (g, c)) in run.iter().zip(&cpu).enumerate() {
                assert!((g - c).abs() <= 3e-2 * c.abs(), "step {step}: {g} vs {c}");
            }
        }
    }

    #[test]
    fn store_then_load_continues_the_same_run() {
        let gpu = Gpu::emulated().unwrap();
        let config = tiny_config();
        let batches = micro_batches(config.vocab_size);
        let device_batches: Vec<DeviceBatch> = batches
            .iter()
            .map(|(b, t)| DeviceBatch::new(&gpu, &config, b, t).unwrap())
            .collect();
        let model = Model::random(config.clone(), 7);
        let mut first = GpuTrainer::new(&gpu, &model, AdamWConfig::default()).unwrap();
        for _ in 0..2 {
            first
                .step::<f32>(&gpu, &device_batches, LR, MAX_NORM, false)
                .unwrap();
        }
        let host = Model::random(config, 8);
        let mut optimizer = AdamW::new(&host.parameters(), AdamWConfig::default(), default_decay);
        first.store(&gpu, &host, &mut optimizer).unwrap();
        assert_eq!(optimizer.step_count(), 2);
        let mut second = GpuTrainer::new(&gpu, &host, AdamWConfig::default()).unwrap();
        second.load(&gpu, &host, &optimizer).unwrap();
        let a = first
            .step::<f32>(&gpu, &device_batches, LR, MAX_NORM, false)
            .unwrap();
        let b = second
            .step::<f32>(&gpu, &device_batches, LR, MAX_NORM, false)
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn the_downloaded_model_is_the_uploaded_one_before_training() {
        let gpu = Gpu::emulated().unwrap();
        let model = Model::random(tiny_config(), 6);
        let trainer = GpuTrainer::new(&gpu, &model, AdamWConfig::default()).unwrap();
        let back = trainer.model.download(&gpu).unwrap();
        for ((name, a), (_, b)) in model.parameters().iter().zip(back.parameters()) {
            assert_eq!(
                a.read_f32().unwrap().to_vec(),
                b.read_f32().unwrap().to_vec(),
                "{name}"
            );
        }
    }
}
