//! Qwen2 / Llama decoder-only models: config, weights, forward, loss, KV-cache step. The
//! model is written once in terms of ops, so it runs with or without the tape (training
//! or inference) and on every device its parameters are on.

mod batch;
mod checkpoint;
mod config;
mod inference;
mod kv_cache;
mod params;
mod weights;

pub use batch::Batch;
pub use checkpoint::save_checkpoint;
pub use config::{Architecture, ModelConfig};
pub use kv_cache::{KvCache, SeqId, KV_BLOCK};
pub use params::{
    parameter_specs, FlatLayout, FlatParam, FlatParams, Init, LayerParam, ParamKind, ParamSpec,
    ParamStore, Projection,
};
pub(crate) use weights::shard_paths;
pub use weights::{save_safetensors, Weights};

use std::path::Path;
use std::sync::Arc;

use crate::ops::{self, Reduction, RopeTable};
use crate::probe::{self, Probes, Site, SiteKind};
use crate::rng::Rng;
use crate::{autograd, DType, Device, Error, Result, Tensor};

/// A linear layer's parameters, in Hugging Face layout (weight [out, in]).
#[derive(Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear(x, &self.weight, self.bias.as_ref())
    }

    /// Each layer's forward of the same x, computed together ([`ops::linears`]).
    pub fn forward_all<const N: usize>(layers: [&Linear; N], x: &Tensor) -> Result<[Tensor; N]> {
        let params = layers.map(|l| (&l.weight, l.bias.as_ref()));
        let outputs = ops::linears(x, &params)?;
        Ok(outputs
            .try_into()
            .unwrap_or_else(|_| unreachable!("ops::linears returns one output per layer")))
    }
}

#[derive(Clone)]
pub struct Layer {
    pub input_layernorm: Tensor,
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub post_attention_layernorm: Tensor,
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

#[derive(Clone)]
pub struct Model {
    pub config: ModelConfig,
    pub embed_tokens: Tensor,
    pub layers: Vec<Layer>,
    pub norm: Tensor,
    /// `None` when the output projection is tied to the embedding.
    pub lm_head: Option<Tensor>,
}

impl Model {
    /// Loads `dir/config.json` and the safetensors weights beside it, as f32 parameters.
    pub fn load(dir: &Path) -> Result<Model> {
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let weights = Weights::open(dir)?;
        Self::build(config, |spec| {
            Ok(weights.read(&spec.name, &spec.shape)?.into_param())
        })
    }

    /// Loads a model for generation only: weight matrices stored in bf16 stay bf16 (half
    /// the memory, and half the bytes a decode step reads), everything else is f32; the
    /// ops compute in f32 on the exactly widened values, so the outputs are those of
    /// the checkpoint upcast to f32. Not for training (the optimizer updates f32 only);
    /// for an f32 checkpoint this is [`Model::load`].
    pub fn load_for_inference(dir: &Path) -> Result<Model> {
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let weights = Weights::open(dir)?;
        Self::build(config, |spec| {
            let t = if spec.shape.len() == 2 {
                weights.read_for_inference(&spec.name, &spec.shape)?
            } else {
                weights.read(&spec.name, &spec.shape)?
            };
            Ok(t.into_param())
        })
    }

    /// Loads a model for inference on `device` with every parameter in `dtype`. On a GPU
    /// (f32 or bf16) each tensor is read from the memory map in its stored dtype, moved to
    /// the device and converted there before the next is read, so the host holds one
    /// tensor at a time: a 7B bf16 checkpoint never exists as a whole f32 copy. The bits
    /// are those of [`Model::load`] followed by [`Model::to_device`]. On the CPU, which
    /// computes in f32 either way, `F32` is [`Model::load`] and `BF16` is
    /// [`Model::load_for_inference`] (bf16-stored matrices stay bf16).
    pub fn load_on(dir: &Path, device: Device, dtype: DType) -> Result<Model> {
        match (device, dtype) {
            (Device::Cpu, DType::F32) => Self::load(dir),
            (Device::Cpu, DType::BF16) => Self::load_for_inference(dir),
            (_, DType::F16) => Err(Error::DType {
                op: "Model::load_on",
                got: dtype,
                expected: "F32 or BF16",
            }),
            _ => {
                let config = ModelConfig::from_file(&dir.join("config.json"))?;
                let weights = Weights::open(dir)?;
                Self::build(config, |spec| {
                    // The host copy is dropped at the end of this statement.
                    let on_device = weights
                        .read_for_inference(&spec.name, &spec.shape)?
                        .to(device)?;
                    let t = if on_device.dtype() == dtype {
                        on_device
                    } else {
                        on_device.to_dtype(dtype)?
                    };
                    Ok(t.into_param())
                })
            }
        }
    }

    /// A model with random weights (each spec's init: normal with std 0.02, norms at 1,
    /// biases at 0), for tests and benchmarks.
    pub fn random(config: ModelConfig, seed: u64) -> Model {
        let mut rng = Rng::new(seed);
        Self::build(config, |spec| {
            let n = spec.numel();
            let data = match spec.init {
                Init::Ones => vec![1.0; n],
                Init::Zeros => vec![0.0; n],
                Init::Normal(std) => rng.normal_vec(n, std),
            };
            Ok(Tensor::from_vec(data, spec.shape.clone())?.into_param())
        })
        .expect("random init builds tensors of exactly the specs' shapes")
    }

    /// The device the parameters are on.
    pub fn device(&self) -> crate::Device {
        self.embed_tokens.device()
    }

    /// Writes `config.json` and `model.safetensors` (f32) into `dir`, each atomically.
    /// For a whole folder transformers loads (tokenizer, generation config, bf16), see
    /// [`save_checkpoint`].
    pub fn save(&self, dir: &Path) -> Result<()> {
        let config =
            serde_json::to_vec_pretty(&self.config.to_hf_json()).expect("a JSON value serialises");
        crate::io::write_atomic(&dir.join("config.json"), &config)?;
        save_safetensors(&dir.join("model.safetensors"), &self.parameters())
    }

    /// Hidden states after the final norm, [B*T, hidden].
    pub fn hidden_states(&self, batch: &Batch) -> Result<Tensor> {
        self.hidden_states_probed(batch, &mut None)
    }

    /// Logits [B, T, vocab] of a forward that passes every probe site through `probes`
    /// (recording and modifying what they ask for; see [`crate::probe`]).
    pub fn forward_with_probes(&self, batch: &Batch, probes: &mut Probes) -> Result<Tensor> {
        probes.head_dim = self.config.head_dim;
        self.forward_probed(batch, &mut Some(probes))
    }

    fn forward_probed(&self, batch: &Batch, probes: &mut Option<&mut Probes>) -> Result<Tensor> {
        let h = self.hidden_states_probed(batch, probes)?;
        let logits = ops::linear(&h, self.output_weight(), None)?;
        let logits = probe::visit(probes, Site::last(SiteKind::Logits), logits)?;
        logits.reshape([batch.batch_size, batch.seq_len, self.config.vocab_size])
    }

    fn hidden_states_probed(
        &self,
        batch: &Batch,
        probes: &mut Option<&mut Probes>,
    ) -> Result<Tensor> {
        let mut x = ops::embedding(&self.embed_tokens, &batch.input_ids)?;
        let rope = self.rope_table(&batch.positions)?;
        for (l, layer) in self.layers.iter().enumerate() {
            x = layer.forward((&self.config, l), &x, batch, &rope, probes)?;
        }
        self.final_norm(&x, probes)
    }

    fn final_norm(&self, x: &Tensor, probes: &mut Option<&mut Probes>) -> Result<Tensor> {
        let h = ops::rmsnorm(x, &self.norm, self.config.rms_norm_eps)?;
        probe::visit(probes, Site::last(SiteKind::FinalNorm), h)
    }

    /// Hidden states after the final norm with every layer checkpointed
    /// ([`autograd::checkpoint`]): a layer keeps only its input for the backward, which
    /// re-runs its forward.
    fn hidden_states_recomputing_layers(&self, batch: &Batch) -> Result<Tensor> {
        let mut x = ops::embedding(&self.embed_tokens, &batch.input_ids)?;
        let rope = self.rope_table(&batch.positions)?;
        let shared = Arc::new(batch.clone());
        for (l, layer) in self.layers.iter().enumerate() {
            let mut inputs = vec![x];
            inputs.extend(layer.params().into_iter().cloned());
            let (config, layer, batch, rope) = (
                self.config.clone(),
                layer.clone(),
                shared.clone(),
                rope.clone(),
            );
            x = autograd::checkpoint(&inputs, move |t| {
                let layer = layer.with_params(&t[1..]);
                layer.forward((&config, l), &t[0], &batch, &rope, &mut None)
            })?;
        }
        self.final_norm(&x, &mut None)
    }

    /// The logits [n, vocab] the model would give residual-stream rows [n, hidden]: the
    /// final norm and the output projection (the logit lens' reading of a layer).
    pub fn unembed(&self, residual: &Tensor) -> Result<Tensor> {
        let h = ops::rmsnorm(residual, &self.norm, self.config.rms_norm_eps)?;
        ops::linear(&h, self.output_weight(), None)
    }

    /// The output projection: lm_head, or the embedding when tied.
    fn output_weight(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
    }

    /// Logits [B, T, vocab].
    pub fn forward(&self, batch: &Batch) -> Result<Tensor> {
        self.forward_probed(batch, &mut None)
    }

    /// Cross-entropy of the next-token logits against `targets` (one per token, -100 =
    /// ignored), through the chunked LM head + loss op: the full logits never exist.
    pub fn loss(&self, batch: &Batch, targets: &[i64], reduction: Reduction) -> Result<Tensor> {
        let h = self.hidden_states(batch)?;
        ops::lm_head_loss(&h, self.output_weight(), targets, reduction)
    }

    /// [`Model::loss`] with every layer's activations recomputed in the backward instead
    /// of kept (less memory, one more forward of the layers).
    pub fn loss_recomputing_layers(
        &self,
        batch: &Batch,
        targets: &[i64],
        reduction: Reduction,
    ) -> Result<Tensor> {
        let h = self.hidden_states_recomputing_layers(batch)?;
        ops::lm_head_loss(&h, self.output_weight(), targets, reduction)
    }

    /// RoPE's cos/sin at `positions`, shared by every layer's q and k.
    fn rope_table(&self, positions: &[u32]) -> Result<Arc<RopeTable>> {
        ops::rope_table(positions, self.config.head_dim, self.config.rope_theta)
    }
}

impl Layer {
    /// The layer's parameters in a fixed order (the order [`Layer::with_params`] takes).
    fn params(&self) -> Vec<&Tensor> {
        let mut out = vec![&self.input_layernorm, &self.post_attention_layernorm];
        for lin in [
            &self.q_proj,
            &self.k_proj,
            &self.v_proj,
            &self.o_proj,
            &self.gate_proj,
            &self.up_proj,
            &self.down_proj,
        ] {
            out.push(&lin.weight);
            out.extend(&lin.bias);
        }
        out
    }

    /// This layer with its parameters replaced by `params`, in [`Layer::params`]' order.
    fn with_params(&self, params: &[Tensor]) -> Layer {
        let mut layer = self.clone();
        let mut next = params.iter().cloned();
        let mut take = || next.next().expect("one tensor per parameter of the layer");
        layer.input_layernorm = take();
        layer.post_attention_layernorm = take();
        for lin in [
            &mut layer.q_proj,
            &mut layer.k_proj,
            &mut layer.v_proj,
            &mut layer.o_proj,
            &mut layer.gate_proj,
            &mut layer.up_proj,
            &mut layer.down_proj,
        ] {
            lin.weight = take();
            if lin.bias.is_some() {
                lin.bias = Some(take());
            }
        }
        layer
    }

    /// Layer `l` of a model of config `c` on the residual stream x [B*T, hidden].
    fn forward(
        &self,
        (c, l): (&ModelConfig, usize),
        x: &Tensor,
        batch: &Batch,
        rope: &Arc<RopeTable>,
        probes: &mut Option<&mut Probes>,
    ) -> Result<Tensor> {
        let (b, t, dh) = (batch.batch_size, batch.seq_len, c.head_dim);
        let (n, hq, hkv) = (b * t, c.num_attention_heads, c.num_key_value_heads);
        let site = |kind| Site::layer(kind, l);
        let x = probe::visit(probes, site(SiteKind::ResidPre), x.clone())?;
        let (q, k, v) = self.rotated_qkv(c, &x, rope)?;
        let q = probe::visit_rows(probes, site(SiteKind::Queries), q, [n, hq * dh])?;
        let k = probe::visit_rows(probes, site(SiteKind::Keys), k, [n, hkv * dh])?;
        let q = q.reshape([b, t, hq, dh])?;
        let k = k.reshape([b, t, hkv, dh])?;
        let v = v.reshape([b, t, hkv, dh])?;
        if let Some(p) = probes
            .as_deref_mut()
            .filter(|p| p.wants(site(SiteKind::AttnProbs)))
        {
            let probs = probe::attention::probabilities(&q, &k, batch.segments.as_deref())?;
            p.visit(site(SiteKind::AttnProbs), probs)?;
        }
        let attn = ops::attention(&q, &k, &v, batch.segments.as_deref())?.reshape([n, hq * dh])?;
        let attn = probe::visit(probes, site(SiteKind::AttnHeads), attn)?;
        let out = probe::visit(probes, site(SiteKind::AttnOut), self.o_proj.forward(&attn)?)?;
        let x = probe::visit(probes, site(SiteKind::ResidMid), ops::add(&x, &out)?)?;
        let mlp = probe::visit(probes, site(SiteKind::MlpOut), self.mlp_output(c, &x)?)?;
        probe::visit(probes, site(SiteKind::ResidPost), ops::add(&x, &mlp)?)
    }

    /// The attention block's projections for tokens x [n, hidden] at the positions of
    /// `rope`: q [n, Hq, Dh] and k [n, Hkv, Dh] rotated, v [n, Hkv, Dh].
    fn rotated_qkv(
        &self,
        c: &ModelConfig,
        x: &Tensor,
        rope: &Arc<RopeTable>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let n = x.shape().rows();
        let h = ops::rmsnorm(x, &self.input_layernorm, c.rms_norm_eps)?;
        let [q, k, v] = Linear::forward_all([&self.q_proj, &self.k_proj, &self.v_proj], &h)?;
        let heads = |t: Tensor, n_heads: usize| t.reshape([n, n_heads, c.head_dim]);
        let q = ops::rope_with_table(&heads(q, c.num_attention_heads)?, rope)?;
        let k = ops::rope_with_table(&heads(k, c.num_key_value_heads)?, rope)?;
        let v = heads(v, c.num_key_value_heads)?;
        Ok((q, k, v))
    }

    /// The residual MLP half of a layer: x + down(swiglu(gate(norm x), up(norm x))).
    fn mlp_block(&self, c: &ModelConfig, x: &Tensor) -> Result<Tensor> {
        ops::add(x, &self.mlp_output(c, x)?)
    }

    /// The MLP's output, before the residual add.
    fn mlp_output(&self, c: &ModelConfig, x: &Tensor) -> Result<Tensor> {
        let h = ops::rmsnorm(x, &self.post_attention_layernorm, c.rms_norm_eps)?;
        let [gate, up] = Linear::forward_all([&self.gate_proj, &self.up_proj], &h)?;
        let act = ops::swiglu(&gate, &up)?;
        self.down_proj.forward(&act)
    }
}
