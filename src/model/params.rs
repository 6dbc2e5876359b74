//! The parameters of the architecture, defined once: each one's role, Hugging Face name,
//! shape, weight-decay group and initialisation ([`parameter_specs`]). The model's fields,
//! its checkpoint names, random init, the flat buffers of training and the optimizer's
//! decay groups all derive from this list.

use std::ops::Range;

use super::{Layer, Linear, Model, ModelConfig};
use crate::{DType, Device, Error, Result, Tensor};

/// A parameter of one decoder layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerParam {
    InputLayernorm,
    Weight(Projection),
    Bias(Projection),
    PostAttentionLayernorm,
}

/// A layer's linear projections, in Hugging Face's module order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Projection {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Projection {
    /// The module path under `model.layers.N`.
    fn module(self) -> &'static str {
        match self {
            Projection::Q => "self_attn.q_proj",
            Projection::K => "self_attn.k_proj",
            Projection::V => "self_attn.v_proj",
            Projection::O => "self_attn.o_proj",
            Projection::Gate => "mlp.gate_proj",
            Projection::Up => "mlp.up_proj",
            Projection::Down => "mlp.down_proj",
        }
    }
}

/// What a parameter is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    EmbedTokens,
    Layer(usize, LayerParam),
    Norm,
    /// The untied output projection.
    LmHead,
}

/// How a fresh (random) model initialises a parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Ones,
    Zeros,
    /// Normal with mean 0 and this standard deviation.
    Normal(f32),
}

/// One parameter: its role, Hugging Face name, shape, whether AdamW decays it, its init.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub kind: ParamKind,
    pub name: String,
    pub shape: Vec<usize>,
    /// Weight decay: every matrix but the embedding (see `optim::default_decay`).
    pub decay: bool,
    pub init: Init,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The standard deviation of random weights (Hugging Face's `initializer_range`).
const INIT_STD: f32 = 0.02;

/// Every parameter of a model of this config, in checkpoint order.
pub fn parameter_specs(c: &ModelConfig) -> Vec<ParamSpec> {
    let (d, dh, i) = (c.hidden_size, c.head_dim, c.intermediate_size);
    let q = c.num_attention_heads * dh;
    let kv = c.num_key_value_heads * dh;
    let matrix = |kind, name: String, shape: Vec<usize>| ParamSpec {
        kind,
        name,
        shape,
        decay: true,
        init: Init::Normal(INIT_STD),
    };
    let norm = |kind, name: String| ParamSpec {
        kind,
        name,
        shape: vec![d],
        decay: false,
        init: Init::Ones,
    };
    let mut specs = vec![ParamSpec {
        decay: false,
        ..matrix(
            ParamKind::EmbedTokens,
            "model.embed_tokens.weight".into(),
            vec![c.vocab_size, d],
        )
    }];
    for l in 0..c.num_hidden_layers {
        let p = format!("model.layers.{l}");
        let layer = |param| ParamKind::Layer(l, param);
        specs.push(norm(
            layer(LayerParam::InputLayernorm),
            format!("{p}.input_layernorm.weight"),
        ));
        for (proj, (rows, cols), bias) in [
            (Projection::Q, (q, d), c.qkv_bias),
            (Projection::K, (kv, d), c.qkv_bias),
            (Projection::V, (kv, d), c.qkv_bias),
            (Projection::O, (d, q), c.o_bias),
        ] {
            let module = format!("{p}.{}", proj.module());
            specs.push(matrix(
                layer(LayerParam::Weight(proj)),
                format!("{module}.weight"),
                vec![rows, cols],
            ));
            if bias {
                specs.push(ParamSpec {
                    kind: layer(LayerParam::Bias(proj)),
                    name: format!("{module}.bias"),
                    shape: vec![rows],
                    decay: false,
                    init: Init::Zeros,
                });
            }
        }
        specs.push(norm(
            layer(LayerParam::PostAttentionLayernorm),
            format!("{p}.post_attention_layernorm.weight"),
        ));
        for (proj, shape) in [
            (Projection::Gate, vec![i, d]),
            (Projection::Up, vec![i, d]),
            (Projection::Down, vec![d, i]),
        ] {
            let name = format!("{p}.{}.weight", proj.module());
            specs.push(matrix(layer(LayerParam::Weight(proj)), name, shape));
        }
    }
    specs.push(norm(ParamKind::Norm, "model.norm.weight".into()));
    if !c.tie_word_embeddings {
        specs.push(matrix(
            ParamKind::LmHead,
            "lm_head.weight".into(),
            vec![c.vocab_size, d],
        ));
    }
    specs
}

impl Model {
    /// A model whose every parameter is `get(spec)` (a tensor of the spec's shape), made a
    /// parameter of the tape.
    pub(crate) fn build(
        config: ModelConfig,
        mut get: impl FnMut(&ParamSpec) -> Result<Tensor>,
    ) -> Result<Model> {
        let mut model = Model::skeleton(config);
        for spec in parameter_specs(&model.config) {
            let t = get(&spec)?;
            if t.dims() != spec.shape.as_slice() {
                return Err(Error::shape(
                    "model",
                    format!(
                        "{} has shape {}, expected {:?}",
                        spec.name,
                        t.shape(),
                        spec.shape
                    ),
                ));
            }
            *model.param_mut(spec.kind) = t;
        }
        Ok(model)
    }

    /// A model of empty placeholders with the config's optional parameters present.
    fn skeleton(config: ModelConfig) -> Model {
        let empty = || Tensor::zeros([0], DType::F32);
        let linear = |bias: bool| Linear {
            weight: empty(),
            bias: bias.then(empty),
        };
        let layer = Layer {
            input_layernorm: empty(),
            q_proj: linear(config.qkv_bias),
            k_proj: linear(config.qkv_bias),
            v_proj: linear(config.qkv_bias),
            o_proj: linear(config.o_bias),
            post_attention_layernorm: empty(),
            gate_proj: linear(false),
            up_proj: linear(false),
            down_proj: linear(false),
        };
        Model {
            embed_tokens: empty(),
            layers: vec![layer; config.num_hidden_layers],
            norm: empty(),
            lm_head: (!config.tie_word_embeddings).then(empty),
            config,
        }
    }

    /// The tensor of parameter `kind`. Every kind [`parameter_specs`] lists for this
    /// model's config exists.
    pub fn param(&self, kind: ParamKind) -> &Tensor {
        let missing = || panic!("{kind:?} is not a parameter of this model's config");
        match kind {
            ParamKind::EmbedTokens => &self.embed_tokens,
            ParamKind::Norm => &self.norm,
            ParamKind::LmHead => self.lm_head.as_ref().unwrap_or_else(missing),
            ParamKind::Layer(l, p) => {
                let layer = &self.layers[l];
                match p {
                    LayerParam::InputLayernorm => &layer.input_layernorm,
                    LayerParam::PostAttentionLayernorm => &layer.post_attention_layernorm,
                    LayerParam::Weight(proj) => &layer.projection(proj).weight,
                    LayerParam::Bias(proj) => {
                        layer.projection(proj).bias.as_ref().unwrap_or_else(missing)
                    }
                }
            }
        }
    }

    fn param_mut(&mut self, kind: ParamKind) -> &mut Tensor {
        let missing = || panic!("{kind:?} is not a parameter of this model's config");
        match kind {
            ParamKind::EmbedTokens => &mut self.embed_tokens,
            ParamKind::Norm => &mut self.norm,
            ParamKind::LmHead => self.lm_head.as_mut().unwrap_or_else(missing),
            ParamKind::Layer(l, p) => {
                let layer = &mut self.layers[l];
                match p {
                    LayerParam::InputLayernorm => &mut layer.input_layernorm,
                    LayerParam::PostAttentionLayernorm => &mut layer.post_attention_layernorm,
                    LayerParam::Weight(proj) => &mut layer.projection_mut(proj).weight,
                    LayerParam::Bias(proj) => layer
                        .projection_mut(proj)
                        .bias
                        .as_mut()
                        .unwrap_or_else(missing),
                }
            }
        }
    }

    /// Every parameter under its Hugging Face name, in checkpoint order.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        parameter_specs(&self.config)
            .into_iter()
            .map(|spec| {
                let t = self.param(spec.kind).clone();
                (spec.name, t)
            })
            .collect()
    }

    /// A copy on `device` with every parameter in `dtype` (f32 or bf16 on a GPU, where
    /// every tensor of an op shares one dtype): for inference. Training on a device goes
    /// through [`ParamStore`], which keeps f32 master weights.
    pub fn to_device(&self, device: Device, dtype: DType) -> Result<Model> {
        Model::build(self.config.clone(), |spec| {
            let t = self.param(spec.kind).to(device)?;
            let t = if t.dtype() == dtype {
                t
            } else {
                t.to_dtype(dtype)?
            };
            Ok(t.into_param())
        })
    }
}

impl Layer {
    fn projection(&self, p: Projection) -> &Linear {
        match p {
            Projection::Q => &self.q_proj,
            Projection::K => &self.k_proj,
            Projection::V => &self.v_proj,
            Projection::O => &self.o_proj,
            Projection::Gate => &self.gate_proj,
            Projection::Up => &self.up_proj,
            Projection::Down => &self.down_proj,
        }
    }

    fn projection_mut(&mut self, p: Projection) -> &mut Linear {
        match p {
            Projection::Q => &mut self.q_proj,
            Projection::K => &mut self.k_proj,
            Projection::V => &mut self.v_proj,
            Projection::O => &mut self.o_proj,
            Projection::Gate => &mut self.gate_proj,
            Projection::Up => &mut self.up_proj,
            Projection::Down => &mut self.down_proj,
        }
    }
}

/// Every parameter starts at a multiple of this many elements: 256 bytes in f32, which
/// keeps cuBLAS's operands and the kernels' vector loads aligned.
const ALIGN: usize = 64;

/// One parameter's place in the flat buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct FlatParam {
    pub name: String,
    pub shape: Vec<usize>,
    /// Whether AdamW decays it.
    pub decay: bool,
    pub range: Range<usize>,
}

/// Where each parameter lies in flat buffers of `len` elements (master weights, their
/// bf16 copy, gradients, AdamW moments: one layout for all), in the order given.
#[derive(Clone, Debug)]
pub struct FlatLayout {
    pub params: Vec<FlatParam>,
    /// Elements of each flat buffer, alignment gaps included.
    pub len: usize,
}

impl FlatLayout {
    /// Parameters (name, shape, decay) laid out one after the other, each aligned.
    pub fn new(params: impl IntoIterator<Item = (String, Vec<usize>, bool)>) -> FlatLayout {
        let mut len = 0usize;
        let params = params
            .into_iter()
            .map(|(name, shape, decay)| {
                let start = len.next_multiple_of(ALIGN);
                len = start + shape.iter().product::<usize>();
                FlatParam {
                    name,
                    shape,
                    decay,
                    range: start..len,
                }
            })
            .collect();
        FlatLayout { params, len }
    }

    /// The layout of a model's parameters, in checkpoint order.
    pub fn of_model(config: &ModelConfig) -> FlatLayout {
        FlatLayout::new(
            parameter_specs(config)
                .into_iter()
                .map(|s| (s.name, s.shape, s.decay)),
        )
    }

    /// Each parameter of `flat` (a flat buffer of this layout) as a view of its range.
    pub fn views(&self, flat: &Tensor) -> Result<Vec<Tensor>> {
        self.params
            .iter()
            .map(|p| flat.view_of_flat(p.range.start, p.shape.clone()))
            .collect()
    }
}

/// Parameters for training on a device, each a view of one flat buffer so that the
/// gradient norm and AdamW are one pass each: f32 master weights, their copy in the
/// compute dtype when it is not f32 (bf16 on a GPU), and f32 gradients, which the tape
/// adds into.
pub struct FlatParams {
    pub layout: FlatLayout,
    pub master: Tensor,
    pub compute_copy: Option<Tensor>,
    pub grads: Tensor,
}

impl FlatParams {
    /// `params` (name, tensor on any device in any dtype, whether AdamW decays it) copied
    /// into flat buffers on `device`, computing in `dtype` (f32, or bf16 on a GPU).
    pub fn new(
        params: &[(String, Tensor, bool)],
        device: Device,
        dtype: DType,
    ) -> Result<FlatParams> {
        if dtype != DType::F32 && !(device.is_gpu() && dtype == DType::BF16) {
            return Err(Error::DType {
                op: "FlatParams",
                got: dtype,
                expected: "F32, or BF16 on a GPU",
            });
        }
        let layout = FlatLayout::new(
            params
                .iter()
                .map(|(name, t, decay)| (name.clone(), t.dims().to_vec(), *decay)),
        );
        let mut flat = vec![0.0f32; layout.len];
        for (p, (_, t, _)) in layout.params.iter().zip(params) {
            flat[p.range.clone()].copy_from_slice(&t.to_vec_f32()?);
        }
        let master = Tensor::from_vec(flat, [layout.len])?.to(device)?;
        let compute_copy = match dtype {
            DType::F32 => None,
            _ => Some(master.to_dtype(dtype)?),
        };
        Ok(FlatParams {
            grads: Tensor::zeros_on([layout.len], DType::F32, device)?,
            layout,
            master,
            compute_copy,
        })
    }

    pub fn device(&self) -> Device {
        self.master.device()
    }

    /// The parameters the forward and backward use: views of the compute copy (or of the
    /// masters in f32), each with its gradient buffer, in layout order.
    pub fn params(&self) -> Result<Vec<Tensor>> {
        let data = self
            .layout
            .views(self.compute_copy.as_ref().unwrap_or(&self.master))?;
        let grads = self.layout.views(&self.grads)?;
        data.into_iter()
            .zip(grads)
            .map(|(d, g)| d.into_param_with_grad(g))
            .collect()
    }

    /// The f32 master weights by name (views), for checkpoints.
    pub fn masters(&self) -> Result<Vec<(String, Tensor)>> {
        let views = self.layout.views(&self.master)?;
        Ok(self
            .layout
            .params
            .iter()
            .map(|p| p.name.clone())
            .zip(views)
            .collect())
    }

    /// Sets every gradient to zero, before a step's first micro-batch.
    pub fn zero_grads(&self) -> Result<()> {
        self.grads.fill_zero()
    }

    /// Rewrites the compute copy from the master weights (after they were loaded).
    pub fn refresh_compute_copy(&self) -> Result<()> {
        match &self.compute_copy {
            Some(copy) => copy.copy_from(&self.master),
            None => Ok(()),
        }
    }
}

/// A model to train on a device: its parameters in [`FlatParams`], and the model built
/// on their views.
pub struct ParamStore {
    pub flat: FlatParams,
    /// The model the forward and backward run: parameters in the compute dtype, each with
    /// its gradient buffer.
    pub model: Model,
    /// The same parameters as f32 master weights (checkpoints).
    pub masters: Model,
}

impl ParamStore {
    /// `model`'s parameters copied to `device`, computing in `dtype` (f32, or bf16 on a
    /// GPU), each decayed as its spec says.
    pub fn new(model: &Model, device: Device, dtype: DType) -> Result<ParamStore> {
        let params: Vec<(String, Tensor, bool)> = parameter_specs(&model.config)
            .into_iter()
            .map(|spec| {
                let t = model.param(spec.kind).clone();
                (spec.name, t, spec.decay)
            })
            .collect();
        let flat = FlatParams::new(&params, device, dtype)?;
        let mut params = flat.params()?.into_iter();
        let train = Model::build(model.config.clone(), |_| {
            Ok(params.next().expect("one view per spec, in order"))
        })?;
        let mut masters = flat.masters()?.into_iter();
        let masters = Model::build(model.config.clone(), |_| {
            Ok(masters.next().expect("one view per spec").1.into_param())
        })?;
        Ok(ParamStore {
            flat,
            model: train,
            masters,
        })
    }

    pub fn device(&self) -> Device {
        self.flat.device()
    }
}
