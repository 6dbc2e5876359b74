//! Where each parameter lives in the flat device buffers (master weights, their bf16
//! copy, gradients, AdamW moments: one layout for all, see src/optim/cuda.rs), and the
//! ranges of one layer's parameters, resolved once so a step does no name lookups.

use std::ops::Range;

use crate::model::{parameter_layout, ModelConfig};
use crate::optim::{cuda::FlatSegment, default_decay};
use crate::{Error, Result, Tensor};

/// Every parameter starts at a multiple of this many elements: 256 bytes in f32, which
/// keeps cuBLAS's operands and the kernels' vector loads aligned.
const ALIGN: usize = 64;

/// One parameter in the flat buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlatParam {
    pub name: String,
    pub shape: Vec<usize>,
    pub range: Range<usize>,
}

/// The flat layout of a model's parameters, in checkpoint order.
#[derive(Clone, Debug)]
pub struct FlatLayout {
    pub params: Vec<FlatParam>,
    /// Elements of each flat buffer, alignment gaps included.
    pub len: usize,
}

impl FlatLayout {
    pub fn new(config: &ModelConfig) -> FlatLayout {
        let mut len = 0usize;
        let params = parameter_layout(config)
            .into_iter()
            .map(|(name, shape)| {
                let start = len.next_multiple_of(ALIGN);
                len = start + shape.iter().product::<usize>();
                FlatParam {
                    name,
                    shape,
                    range: start..len,
                }
            })
            .collect();
        FlatLayout { params, len }
    }

    /// One flat buffer's host image: each named tensor at its parameter's place, zeros in
    /// the alignment gaps. `tensors` must hold every parameter of the layout.
    pub fn flatten(&self, tensors: &[(String, Tensor)]) -> Result<Vec<f32>> {
        let mut flat = vec![0.0f32; self.len];
        for p in &self.params {
            let (_, t) = tensors
                .iter()
                .find(|(name, _)| *name == p.name)
                .ok_or_else(|| Error::shape("flat layout", format!("{} is missing", p.name)))?;
            flat[p.range.clone()].copy_from_slice(&t.read_f32()?);
        }
        Ok(flat)
    }

    /// Parameter `name`; an error naming it when the model has no such parameter.
    pub fn param(&self, name: &str) -> Result<&FlatParam> {
        self.params
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::shape("flat layout", format!("{name} is not a parameter")))
    }

    /// Parameter `name`'s elements of a flat buffer's host image, as a tensor.
    pub fn tensor(&self, flat: &[f32], name: &str) -> Result<Tensor> {
        let param = self.param(name)?;
        Tensor::from_vec(flat[param.range.clone()].to_vec(), param.shape.clone())
    }

    /// The range of parameter `name`; every name the model code asks for is in the layout.
    fn range(&self, name: &str) -> Range<usize> {
        let param = self.param(name);
        param
            .expect("the model asks only for its own parameters")
            .range
            .clone()
    }

    /// The segments AdamW updates, with the CPU optimizer's weight-decay rule.
    pub fn adamw_segments(&self) -> Vec<FlatSegment> {
        self.params
            .iter()
            .map(|p| FlatSegment {
                offset: p.range.start,
                len: p.range.len(),
                decay: default_decay(&p.name),
            })
            .collect()
    }
}

/// A linear layer's weight and (optional) bias.
#[derive(Clone, Debug)]
pub struct LinearRanges {
    pub weight: Range<usize>,
    pub bias: Option<Range<usize>>,
}

/// One decoder layer's parameters.
#[derive(Clone, Debug)]
pub struct LayerRanges {
    pub input_layernorm: Range<usize>,
    pub q_proj: LinearRanges,
    pub k_proj: LinearRanges,
    pub v_proj: LinearRanges,
    pub o_proj: LinearRanges,
    pub post_attention_layernorm: Range<usize>,
    pub gate_proj: Range<usize>,
    pub up_proj: Range<usize>,
    pub down_proj: Range<usize>,
}

/// The whole model's parameter ranges.
#[derive(Clone, Debug)]
pub struct ModelRanges {
    pub embed_tokens: Range<usize>,
    pub layers: Vec<LayerRanges>,
    pub norm: Range<usize>,
    /// The output projection: lm_head, or the embedding when tied.
    pub output: Range<usize>,
}

impl ModelRanges {
    pub fn new(layout: &FlatLayout, config: &ModelConfig) -> ModelRanges {
        let linear = |prefix: &str, bias: bool| LinearRanges {
            weight: layout.range(&format!("{prefix}.weight")),
            bias: bias.then(|| layout.range(&format!("{prefix}.bias"))),
        };
        let layers = (0..config.num_hidden_layers)
            .map(|l| {
                let p = format!("model.layers.{l}");
                LayerRanges {
                    input_layernorm: layout.range(&format!("{p}.input_layernorm.weight")),
                    q_proj: linear(&format!("{p}.self_attn.q_proj"), config.qkv_bias),
                    k_proj: linear(&format!("{p}.self_attn.k_proj"), config.qkv_bias),
                    v_proj: linear(&format!("{p}.self_attn.v_proj"), config.qkv_bias),
                    o_proj: linear(&format!("{p}.self_attn.o_proj"), config.o_bias),
                    post_attention_layernorm: layout
                        .range(&format!("{p}.post_attention_layernorm.weight")),
                    gate_proj: layout.range(&format!("{p}.mlp.gate_proj.weight")),
                    up_proj: layout.range(&format!("{p}.mlp.up_proj.weight")),
                    down_proj: layout.range(&format!("{p}.mlp.down_proj.weight")),
                }
            })
            .collect();
        let embed_tokens = layout.range("model.embed_tokens.weight");
        let output = if config.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            layout.range("lm_head.weight")
        };
        ModelRanges {
            embed_tokens,
            layers,
            norm: layout.range("model.norm.weight"),
            output,
        }
    }
}
