//! Qwen2 / Llama decoder-only models: config, weights, forward. The forward is written
//! once in terms of ops, so it runs with or without the tape (training or inference).

mod batch;
mod checkpoint;
mod config;
pub mod gpu;
mod inference;
mod kv_cache;
mod weights;

pub use batch::Batch;
pub use checkpoint::save_checkpoint;
pub use config::{Architecture, ModelConfig};
pub use kv_cache::KvCache;
pub use weights::{save_safetensors, Weights};

use std::path::Path;
use std::sync::Arc;

use crate::ops::{self, Reduction, RopeTable};
use crate::probe::{self, Probes, Site, SiteKind};
use crate::rng::Rng;
use crate::{Result, Tensor};

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

/// Where each parameter lives under its Hugging Face name, with its shape. The one
/// place that knows the checkpoint layout: loading, random init and saving all use it.
pub(crate) fn parameter_layout(c: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (d, dh, i) = (c.hidden_size, c.head_dim, c.intermediate_size);
    let q = c.num_attention_heads * dh;
    let kv = c.num_key_value_heads * dh;
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![c.vocab_size, d],
    )];
    for l in 0..c.num_hidden_layers {
        let p = format!("model.layers.{l}");
        out.push((format!("{p}.input_layernorm.weight"), vec![d]));
        for (name, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
            out.push((format!("{p}.self_attn.{name}.weight"), vec![rows, d]));
            if c.qkv_bias {
                out.push((format!("{p}.self_attn.{name}.bias"), vec![rows]));
            }
        }
        out.push((format!("{p}.self_attn.o_proj.weight"), vec![d, q]));
        if c.o_bias {
            out.push((format!("{p}.self_attn.o_proj.bias"), vec![d]));
        }
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![d]));
        out.push((format!("{p}.mlp.gate_proj.weight"), vec![i, d]));
        out.push((format!("{p}.mlp.up_proj.weight"), vec![i, d]));
        out.push((format!("{p}.mlp.down_proj.weight"), vec![d, i]));
    }
    out.push(("model.norm.weight".to_string(), vec![d]));
    if !c.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![c.vocab_size, d]));
    }
    out
}

/// Parameters by name while a model is assembled from them.
#[derive(Default)]
struct NamedParams(std::collections::HashMap<String, Tensor>);

impl NamedParams {
    fn take(&mut self, name: &str) -> Tensor {
        self.0
            .remove(name)
            .expect("every name asked for comes from parameter_layout")
    }

    fn linear(&mut self, prefix: &str, bias: bool) -> Linear {
        Linear {
            weight: self.take(&format!("{prefix}.weight")),
            bias: bias.then(|| self.take(&format!("{prefix}.bias"))),
        }
    }
}

impl Model {
    /// Loads `dir/config.json` and the safetensors weights beside it, as f32 parameters.
    pub fn load(dir: &Path) -> Result<Model> {
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let weights = Weights::open(dir)?;
        Self::from_named(config, |name, shape| weights.read(name, shape))
    }

    /// Loads a model for generation only: weight matrices stored in bf16 stay bf16 (half
    /// the memory, and half the bytes a decode step reads), everything else is f32; the
    /// ops compute in f32 on the exactly widened values, so the outputs are those of
    /// the checkpoint upcast to f32. Not for training (the optimizer updates f32 only);
    /// for an f32 checkpoint this is [`Model::load`].
    pub fn load_for_inference(dir: &Path) -> Result<Model> {
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let weights = Weights::open(dir)?;
        Self::from_named(config, |name, shape| {
            if shape.len() == 2 {
                weights.read_for_inference(name, shape)
            } else {
                weights.read(name, shape)
            }
        })
    }

    /// A model with random weights (normal, std 0.02; norms at 1), for tests and benchmarks.
    pub fn random(config: ModelConfig, seed: u64) -> Model {
        let mut rng = Rng::new(seed);
        Self::from_named(config, |name, shape| {
            let n: usize = shape.iter().product();
            let data = if name.ends_with("norm.weight") {
                vec![1.0; n]
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                rng.normal_vec(n, 0.02)
            };
            Tensor::from_vec(data, shape.to_vec())
        })
        .expect("random init builds tensors of exactly the layout's shapes")
    }

    pub(crate) fn from_named(
        config: ModelConfig,
        mut get: impl FnMut(&str, &[usize]) -> Result<Tensor>,
    ) -> Result<Model> {
        let mut params = NamedParams::default();
        for (name, shape) in parameter_layout(&config) {
            let t = get(&name, &shape)?.into_param();
            params.0.insert(name, t);
        }
        let layers = (0..config.num_hidden_layers)
            .map(|l| {
                let p = format!("model.layers.{l}");
                Layer {
                    input_layernorm: params.take(&format!("{p}.input_layernorm.weight")),
                    q_proj: params.linear(&format!("{p}.self_attn.q_proj"), config.qkv_bias),
                    k_proj: params.linear(&format!("{p}.self_attn.k_proj"), config.qkv_bias),
                    v_proj: params.linear(&format!("{p}.self_attn.v_proj"), config.qkv_bias),
                    o_proj: params.linear(&format!("{p}.self_attn.o_proj"), config.o_bias),
                    post_attention_layernorm: params
                        .take(&format!("{p}.post_attention_layernorm.weight")),
                    gate_proj: params.linear(&format!("{p}.mlp.gate_proj"), false),
                    up_proj: params.linear(&format!("{p}.mlp.up_proj"), false),
                    down_proj: params.linear(&format!("{p}.mlp.down_proj"), false),
                }
            })
            .collect();
        Ok(Model {
            embed_tokens: params.take("model.embed_tokens.weight"),
            layers,
            norm: params.take("model.norm.weight"),
            lm_head: (!config.tie_word_embeddings).then(|| params.take("lm_head.weight")),
            config,
        })
    }

    /// Every parameter under its Hugging Face name, in checkpoint order.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            self.embed_tokens.clone(),
        )];
        let push_linear = |out: &mut Vec<(String, Tensor)>, name: String, lin: &Linear| {
            out.push((format!("{name}.weight"), lin.weight.clone()));
            if let Some(b) = &lin.bias {
                out.push((format!("{name}.bias"), b.clone()));
            }
        };
        for (l, layer) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{l}");
            out.push((
                format!("{p}.input_layernorm.weight"),
                layer.input_layernorm.clone(),
            ));
            push_linear(&mut out, format!("{p}.self_attn.q_proj"), &layer.q_proj);
            push_linear(&mut out, format!("{p}.self_attn.k_proj"), &layer.k_proj);
            push_linear(&mut out, format!("{p}.self_attn.v_proj"), &layer.v_proj);
            push_linear(&mut out, format!("{p}.self_attn.o_proj"), &layer.o_proj);
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                layer.post_attention_layernorm.clone(),
            ));
            push_linear(&mut out, format!("{p}.mlp.gate_proj"), &layer.gate_proj);
            push_linear(&mut out, format!("{p}.mlp.up_proj"), &layer.up_proj);
            push_linear(&mut out, format!("{p}.mlp.down_proj"), &layer.down_proj);
        }
        out.push(("model.norm.weight".to_string(), self.norm.clone()));
        if let Some(h) = &self.lm_head {
            out.push(("lm_head.weight".to_string(), h.clone()));
        }
        out
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
            x = self.layer_forward((l, layer), &x, batch, &rope, probes)?;
        }
        let h = ops::rmsnorm(&x, &self.norm, self.config.rms_norm_eps)?;
        probe::visit(probes, Site::last(SiteKind::FinalNorm), h)
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

    /// Cross-entropy of the logits against `targets` (one per token, -100 = ignored).
    pub fn loss(&self, batch: &Batch, targets: &[i64], reduction: Reduction) -> Result<Tensor> {
        let logits = self.forward(batch)?;
        ops::cross_entropy(&logits, targets, reduction)
    }

    /// RoPE's cos/sin at `positions`, shared by every layer's q and k.
    fn rope_table(&self, positions: &[u32]) -> Result<Arc<RopeTable>> {
        ops::rope_table(positions, self.config.head_dim, self.config.rope_theta)
    }

    fn layer_forward(
        &self,
        (l, layer): (usize, &Layer),
        x: &Tensor,
        batch: &Batch,
        rope: &Arc<RopeTable>,
        probes: &mut Option<&mut Probes>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, t, dh) = (batch.batch_size, batch.seq_len, c.head_dim);
        let (n, hq, hkv) = (b * t, c.num_attention_heads, c.num_key_value_heads);
        let site = |kind| Site::layer(kind, l);
        let x = probe::visit(probes, site(SiteKind::ResidPre), x.clone())?;
        let (q, k, v) = self.rotated_qkv(layer, &x, rope)?;
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
        let out = probe::visit(
            probes,
            site(SiteKind::AttnOut),
            layer.o_proj.forward(&attn)?,
        )?;
        let x = probe::visit(probes, site(SiteKind::ResidMid), ops::add(&x, &out)?)?;
        let mlp = probe::visit(probes, site(SiteKind::MlpOut), self.mlp_output(layer, &x)?)?;
        probe::visit(probes, site(SiteKind::ResidPost), ops::add(&x, &mlp)?)
    }

    /// The attention block's projections for tokens x [n, hidden] at the positions of
    /// `rope`: q [n, Hq, Dh] and k [n, Hkv, Dh] rotated, v [n, Hkv, Dh].
    fn rotated_qkv(
        &self,
        layer: &Layer,
        x: &Tensor,
        rope: &Arc<RopeTable>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let c = &self.config;
        let n = x.shape().rows();
        let h = ops::rmsnorm(x, &layer.input_layernorm, c.rms_norm_eps)?;
        let [q, k, v] = Linear::forward_all([&layer.q_proj, &layer.k_proj, &layer.v_proj], &h)?;
        let heads = |t: Tensor, n_heads: usize| t.reshape([n, n_heads, c.head_dim]);
        let q = ops::rope_with_table(&heads(q, c.num_attention_heads)?, rope)?;
        let k = ops::rope_with_table(&heads(k, c.num_key_value_heads)?, rope)?;
        let v = heads(v, c.num_key_value_heads)?;
        Ok((q, k, v))
    }

    /// The residual MLP half of a layer: x + down(swiglu(gate(norm x), up(norm x))).
    fn mlp_block(&self, layer: &Layer, x: &Tensor) -> Result<Tensor> {
        ops::add(x, &self.mlp_output(layer, x)?)
    }

    /// The MLP's output, before the residual add.
    fn mlp_output(&self, layer: &Layer, x: &Tensor) -> Result<Tensor> {
        let h = ops::rmsnorm(x, &layer.post_attention_layernorm, self.config.rms_norm_eps)?;
        let [gate, up] = Linear::forward_all([&layer.gate_proj, &layer.up_proj], &h)?;
        let act = ops::swiglu(&gate, &up)?;
        layer.down_proj.forward(&act)
    }
}
