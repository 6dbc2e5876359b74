//! A Qwen2 / Llama model on a [`Gpu`] for training: the parameters in flat device
//! buffers ([`layout`]) and the forward and backward of a batch written out kernel by
//! kernel, llm.c-style, rather than through the tape: every activation the backward needs
//! is named, nothing is read back to the host inside a step, and one buffer of gradients
//! accumulates across micro-batches. Numerics as src/model's forward (the CPU reference
//! it is tested against): f32 master weights, activations in `T` (f32, or bf16 with f32
//! accumulation), gradients in f32.

mod layer;
pub mod layout;

use half::bf16;

use crate::backend::cuda::cast::cast_f32_to_bf16;
use crate::backend::cuda::{Gpu, GpuBuffer, GpuFloat, GpuView, GpuViewMut};
use crate::model::{Batch, Model, ModelConfig};
use crate::ops::attention::AttentionDims;
use crate::ops::cross_entropy::cuda::{
    device_targets, output_layer_loss, OutputLayerGrads, OutputLayerInputs,
};
use crate::ops::embedding::cuda::{embedding_backward, embedding_forward, DeviceTokens};
use crate::ops::rmsnorm::cuda::{rmsnorm_backward, rmsnorm_forward};
use crate::ops::rope::cuda::DeviceRopeTable;
use crate::ops::{rope_table, IGNORE_INDEX};
use crate::{Error, Result};
pub use layer::Saved;
use layout::{FlatLayout, ModelRanges};

/// Logits of one chunk of the output layer take at most this many bytes: 1 GiB is 3.5k
/// rows of Qwen2.5's 151,936-token vocabulary in bf16, large enough for full-speed GEMMs,
/// small next to the activations (the full logits of 16k tokens would be 4.6 GiB).
const LOGIT_CHUNK_BYTES: usize = 1 << 30;

/// The element type of a model's activations and compute weights.
pub trait ComputeType: GpuFloat {
    /// The weights the kernels read: the f32 masters themselves, or their bf16 copy.
    fn weights<'a>(master: &'a GpuBuffer<f32>, copy: &'a GpuBuffer<bf16>) -> &'a GpuBuffer<Self>;
}

impl ComputeType for f32 {
    fn weights<'a>(master: &'a GpuBuffer<f32>, _: &'a GpuBuffer<bf16>) -> &'a GpuBuffer<f32> {
        master
    }
}

impl ComputeType for bf16 {
    fn weights<'a>(_: &'a GpuBuffer<f32>, copy: &'a GpuBuffer<bf16>) -> &'a GpuBuffer<bf16> {
        copy
    }
}

/// The parameters on the device: f32 masters and their bf16 copy (written together by
/// the AdamW kernel), in one flat layout.
pub struct GpuModel {
    pub config: ModelConfig,
    pub layout: FlatLayout,
    ranges: ModelRanges,
    pub master: GpuBuffer<f32>,
    pub copy: GpuBuffer<bf16>,
}

/// A batch on the device: token ids, RoPE table, segments and targets, uploaded once
/// before the step's kernels are queued.
pub struct DeviceBatch {
    tokens: DeviceTokens,
    rope: DeviceRopeTable,
    segments: Option<GpuBuffer<i32>>,
    targets: GpuBuffer<i32>,
    dims: AttentionDims,
    /// Targets that are not IGNORE_INDEX.
    pub supervised: usize,
}

impl DeviceBatch {
    /// `targets`: one per token, IGNORE_INDEX for unsupervised ones.
    pub fn new(gpu: &Gpu, config: &ModelConfig, batch: &Batch, targets: &[i64]) -> Result<Self> {
        if targets.len() != batch.num_tokens() {
            return Err(Error::shape(
                "GPU batch",
                format!(
                    "{} targets for {} tokens",
                    targets.len(),
                    batch.num_tokens()
                ),
            ));
        }
        let table = rope_table(&batch.positions, config.head_dim, config.rope_theta)?;
        let segments = match &batch.segments {
            Some(s) => Some(gpu.upload(&segment_ids(s)?)?),
            None => None,
        };
        Ok(DeviceBatch {
            tokens: DeviceTokens::new(gpu, &batch.input_ids, config.vocab_size)?,
            rope: DeviceRopeTable::new(gpu, &table)?,
            segments,
            targets: device_targets(gpu, targets, config.vocab_size)?,
            dims: AttentionDims {
                batch: batch.batch_size,
                seq: batch.seq_len,
                q_heads: config.num_attention_heads,
                kv_heads: config.num_key_value_heads,
                head_dim: config.head_dim,
            },
            supervised: targets.iter().filter(|&&t| t != IGNORE_INDEX).count(),
        })
    }

    pub fn tokens(&self) -> usize {
        self.tokens.len()
    }
}

fn segment_ids(segments: &[u32]) -> Result<Vec<i32>> {
    segments
        .iter()
        .map(|&s| i32::try_from(s).map_err(|_| Error::shape("GPU batch", "segment id too large")))
        .collect()
}

impl GpuModel {
    /// `model`'s parameters, uploaded.
    pub fn upload(gpu: &Gpu, model: &Model) -> Result<GpuModel> {
        let layout = FlatLayout::new(&model.config);
        let master = gpu.upload(&layout.flatten(&model.parameters())?)?;
        Ok(GpuModel {
            copy: cast_f32_to_bf16(gpu, &master)?,
            ranges: ModelRanges::new(&layout, &model.config),
            config: model.config.clone(),
            layout,
            master,
        })
    }

    /// The master weights, downloaded as a CPU model (for checkpoints and checks).
    pub fn download(&self, gpu: &Gpu) -> Result<Model> {
        let flat = gpu.download(&self.master)?;
        Model::from_named(self.config.clone(), |name, _| {
            self.layout.tensor(&flat, name)
        })
    }

    /// Replaces the weights by `model`'s (same config), and rewrites the bf16 copy.
    pub fn load(&mut self, gpu: &Gpu, model: &Model) -> Result<()> {
        self.master = gpu.upload(&self.layout.flatten(&model.parameters())?)?;
        self.copy = cast_f32_to_bf16(gpu, &self.master)?;
        Ok(())
    }

    /// Forward and backward of one batch: adds the gradients of `sum(losses) * grad_scale`
    /// into `grads` (the flat layout's length, f32) and writes each token's loss into
    /// `losses`. With `recompute`, each layer's activations are recomputed in the backward
    /// from its input instead of being kept.
    pub fn forward_backward<T: ComputeType>(
        &self,
        gpu: &Gpu,
        batch: &DeviceBatch,
        (grads, losses): (&mut GpuBuffer<f32>, &mut GpuBuffer<f32>),
        grad_scale: f32,
        recompute: bool,
    ) -> Result<()> {
        let w = T::weights(&self.master, &self.copy);
        let c = &self.config;
        let (n, d) = (batch.tokens(), c.hidden_size);
        let mut x = embedding_forward(gpu, view(w, &self.ranges.embed_tokens)?, d, &batch.tokens)?;
        let mut saved = Vec::with_capacity(c.num_hidden_layers);
        for ranges in &self.ranges.layers {
            let layer = self.layer(ranges);
            let (next, s) = layer.forward::<T>(gpu, w, batch, x, recompute)?;
            saved.push(s);
            x = next;
        }
        let norm = view(w, &self.ranges.norm)?;
        let (hidden, rstd) = rmsnorm_forward(gpu, &x, norm, d, c.rms_norm_eps)?;
        let mut dhidden = gpu.alloc::<T>(n * d)?;
        let chunk_rows = (LOGIT_CHUNK_BYTES / (c.vocab_size * std::mem::size_of::<T>())).max(1);
        output_layer_loss(
            gpu,
            OutputLayerInputs {
                hidden: &hidden,
                weight: view(w, &self.ranges.output)?,
                targets: &batch.targets,
            },
            OutputLayerGrads {
                dhidden: &mut dhidden,
                dweight: view_mut(grads, &self.ranges.output)?,
                losses,
            },
            (d, c.vocab_size),
            grad_scale,
            chunk_rows,
        )?;
        drop(hidden);
        let dnorm = view_mut(grads, &self.ranges.norm)?;
        let mut dx = rmsnorm_backward(gpu, &dhidden, &x, norm, &rstd, d, dnorm, true)?;
        drop((dhidden, x));
        for (ranges, s) in self.ranges.layers.iter().zip(saved).rev() {
            dx = self
                .layer(ranges)
                .backward::<T>(gpu, w, grads, batch, s, dx)?;
        }
        let demb = view_mut(grads, &self.ranges.embed_tokens)?;
        embedding_backward(gpu, &dx, &batch.tokens, d, demb, true)
    }

    fn layer<'a>(&'a self, ranges: &'a layout::LayerRanges) -> layer::GpuLayer<'a> {
        layer::GpuLayer {
            config: &self.config,
            ranges,
        }
    }
}

fn view<'a, T: GpuFloat>(
    buffer: &'a GpuBuffer<T>,
    range: &std::ops::Range<usize>,
) -> Result<GpuView<'a, T>> {
    buffer.view(range.clone())
}

fn view_mut<'a, T: GpuFloat>(
    buffer: &'a mut GpuBuffer<T>,
    range: &std::ops::Range<usize>,
) -> Result<GpuViewMut<'a, T>> {
    buffer.view_mut(range.clone())
}
