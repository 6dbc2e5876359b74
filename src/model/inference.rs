//! Incremental forward for generation: new tokens of several sequences at once, each
//! continuing its own KV cache. Prefill (a whole prompt) and decode (one token) are the
//! same call with chunks of different lengths, so a batch can mix both, and sequences
//! of different lengths need no padding.

use std::sync::Arc;

use super::{KvCache, Layer, Model};
use crate::autograd::no_grad;
use crate::ops::{self, attention_with_caches, CachedDims, CachedQueries, RopeTable};
use crate::{Error, Result, Tensor};

/// Where each sequence's new tokens sit in the concatenated step.
struct StepLayout {
    /// Row range of each chunk in the concatenated tokens.
    rows: Vec<std::ops::Range<usize>>,
    /// Cache length of each sequence before this step (the position of its first new token).
    starts: Vec<usize>,
}

impl Model {
    /// Feeds `chunks[s]` (new tokens of sequence s) through the model, appending to
    /// `caches[s]`; returns the logits at each chunk's last token, [chunks.len(), vocab].
    pub fn forward_step(&self, chunks: &[&[u32]], caches: &mut [KvCache]) -> Result<Tensor> {
        // A decode step is hundreds of small parallel ops. Run on a pool thread, each one
        // forks inside the pool instead of handing its work over from this thread and
        // sleeping until it is done.
        rayon::scope(|_| self.step_in_pool(chunks, caches))
    }

    fn step_in_pool(&self, chunks: &[&[u32]], caches: &mut [KvCache]) -> Result<Tensor> {
        let _no_tape = no_grad();
        let layout = self.step_layout(chunks, caches)?;
        let ids = chunks.concat();
        let positions: Vec<u32> = layout
            .rows
            .iter()
            .zip(&layout.starts)
            .flat_map(|(r, &start)| (start..start + r.len()).map(|p| p as u32))
            .collect();
        let mut x = ops::embedding(&self.embed_tokens, &ids)?;
        let rope = self.rope_table(&positions)?;
        for (l, layer) in self.layers.iter().enumerate() {
            x = self.layer_step(l, layer, &x, &rope, &layout, caches)?;
        }
        let d = self.config.hidden_size;
        let xs = x.read_f32()?;
        let last: Vec<f32> = layout
            .rows
            .iter()
            .flat_map(|r| &xs[(r.end - 1) * d..r.end * d])
            .copied()
            .collect();
        let last = Tensor::from_vec(last, [chunks.len(), d])?;
        let h = ops::rmsnorm(&last, &self.norm, self.config.rms_norm_eps)?;
        ops::linear(&h, self.output_weight(), None)
    }

    fn step_layout(&self, chunks: &[&[u32]], caches: &[KvCache]) -> Result<StepLayout> {
        if chunks.len() != caches.len() {
            return Err(Error::shape(
                "forward_step",
                format!("{} chunks for {} caches", chunks.len(), caches.len()),
            ));
        }
        let mut rows = Vec::with_capacity(chunks.len());
        let mut offset = 0;
        for (s, (chunk, cache)) in chunks.iter().zip(caches).enumerate() {
            if chunk.is_empty() {
                return Err(Error::shape(
                    "forward_step",
                    format!("sequence {s} has no new tokens"),
                ));
            }
            let end = cache.len() + chunk.len();
            if let Some(max) = self.config.max_position_embeddings.filter(|&m| end > m) {
                return Err(Error::shape(
                    "forward_step",
                    format!(
                        "sequence {s} would reach {end} tokens, past the model's context of {max}"
                    ),
                ));
            }
            rows.push(offset..offset + chunk.len());
            offset += chunk.len();
        }
        let starts = caches.iter().map(KvCache::len).collect();
        Ok(StepLayout { rows, starts })
    }

    fn layer_step(
        &self,
        l: usize,
        layer: &Layer,
        x: &Tensor,
        rope: &Arc<RopeTable>,
        layout: &StepLayout,
        caches: &mut [KvCache],
    ) -> Result<Tensor> {
        let c = &self.config;
        let (q, k, v) = self.rotated_qkv(layer, x, rope)?;
        let (q, k, v) = (q.read_f32()?, k.read_f32()?, v.read_f32()?);
        let kv_width = c.num_key_value_heads * c.head_dim;
        for (rows, cache) in layout.rows.iter().zip(caches.iter_mut()) {
            let kv_rows = rows.start * kv_width..rows.end * kv_width;
            cache.append(l, &k[kv_rows.clone()], &v[kv_rows]);
        }
        let attn = self.cached_attention(l, &q, layout, caches)?;
        let q_width = c.num_attention_heads * c.head_dim;
        let attn = Tensor::from_vec(attn, [x.shape().rows(), q_width])?;
        let x = ops::add(x, &layer.o_proj.forward(&attn)?)?;
        self.mlp_block(layer, &x)
    }

    /// Attention of each sequence's new queries (rows of q, [n, Hq, Dh]) over its cache
    /// of layer l, which already holds the new keys.
    fn cached_attention(
        &self,
        l: usize,
        q: &[f32],
        layout: &StepLayout,
        caches: &[KvCache],
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let dims = CachedDims {
            q_heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
        };
        let q_width = c.num_attention_heads * c.head_dim;
        let mut out = vec![0.0f32; q.len()];
        // Decoding sequences go through one parallel pass together.
        let mut decoding = Vec::new();
        let mut decoding_rows = Vec::new();
        for ((rows, &start), cache) in layout.rows.iter().zip(&layout.starts).zip(caches) {
            let (k_cache, v_cache) = cache.layer(l);
            let q_rows = rows.start * q_width..rows.end * q_width;
            if start == 0 && rows.len() > 1 {
                // A fresh prompt: the cache holds exactly its keys, so the blockwise-GEMM
                // attention of training applies and is much faster than row-by-row dots.
                out[q_rows.clone()]
                    .copy_from_slice(&prefill_attention(&q[q_rows], k_cache, v_cache, dims)?);
            } else {
                decoding.push(CachedQueries {
                    q: &q[q_rows.clone()],
                    k_cache,
                    v_cache,
                    start,
                });
                decoding_rows.push(q_rows);
            }
        }
        let attended = attention_with_caches(&decoding, dims);
        let mut offset = 0;
        for rows in decoding_rows {
            out[rows.clone()].copy_from_slice(&attended[offset..offset + rows.len()]);
            offset += rows.len();
        }
        Ok(out)
    }
}

/// Causal attention of a whole prompt over its own keys (q [n, Hq, Dh], k/v [n, Hkv, Dh]).
fn prefill_attention(q: &[f32], k: &[f32], v: &[f32], dims: CachedDims) -> Result<Vec<f32>> {
    let n = q.len() / (dims.q_heads * dims.head_dim);
    let as_tensor =
        |x: &[f32], heads: usize| Tensor::from_vec(x.to_vec(), [1, n, heads, dims.head_dim]);
    let out = ops::attention(
        &as_tensor(q, dims.q_heads)?,
        &as_tensor(k, dims.kv_heads)?,
        &as_tensor(v, dims.kv_heads)?,
        None,
    )?;
    Ok(out.to_vec_f32())
}
