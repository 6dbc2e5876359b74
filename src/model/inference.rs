//! Incremental forward for generation: new tokens of several sequences at once, each
//! continuing its own KV cache. Prefill (a whole prompt) and decode (one token) are the
//! same call with chunks of different lengths, so a batch can mix both, and sequences
//! of different lengths need no padding. Runs on the model's device: the caches live
//! there too.

use std::sync::Arc;

use super::{KvCache, Layer, Model};
use crate::autograd::no_grad;
use crate::ops::{self, attention_with_caches, CachedDims, CachedQueries, RopeTable};
use crate::{Device, Error, Result, Tensor};

/// Where each sequence's new tokens sit in the concatenated step.
struct StepLayout {
    /// Row range of each chunk in the concatenated tokens.
    rows: Vec<std::ops::Range<usize>>,
    /// Cache length of each sequence before this step (the position of its first new token).
    starts: Vec<usize>,
}

impl Model {
    /// Feeds `chunks[s]` (new tokens of sequence s) through the model, appending to
    /// `caches[s]`; returns the logits at each chunk's last token, [chunks.len(), vocab],
    /// on the model's device.
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
            x = self.layer_step((l, layer), &x, &rope, &layout, caches)?;
        }
        for (cache, rows) in caches.iter_mut().zip(&layout.rows) {
            cache.advance(rows.len());
        }
        let last: Vec<u32> = layout.rows.iter().map(|r| r.end as u32 - 1).collect();
        let last = ops::embedding(&x, &last)?;
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
        (l, layer): (usize, &Layer),
        x: &Tensor,
        rope: &Arc<RopeTable>,
        layout: &StepLayout,
        caches: &mut [KvCache],
    ) -> Result<Tensor> {
        let c = &self.config;
        let (q, k, v) = layer.rotated_qkv(c, x, rope)?;
        let kv_width = c.num_key_value_heads * c.head_dim;
        for (rows, cache) in layout.rows.iter().zip(caches.iter_mut()) {
            let n = rows.len() * kv_width;
            let (k, v) = (
                k.view_of_flat(rows.start * kv_width, [n])?,
                v.view_of_flat(rows.start * kv_width, [n])?,
            );
            cache.write(l, &k, &v)?;
        }
        let attn = self.cached_attention(l, &q, layout, caches)?;
        let x = ops::add(x, &layer.o_proj.forward(&attn)?)?;
        layer.mlp_block(c, &x)
    }

    fn cached_dims(&self) -> CachedDims {
        let c = &self.config;
        CachedDims {
            q_heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
        }
    }

    /// Attention of each sequence's new queries (rows of q, [n, Hq, Dh]) over its cache
    /// of layer l, which already holds the new keys: [n, Hq·Dh].
    fn cached_attention(
        &self,
        l: usize,
        q: &Tensor,
        layout: &StepLayout,
        caches: &[KvCache],
    ) -> Result<Tensor> {
        let dims = self.cached_dims();
        let q_width = dims.q_heads * dims.head_dim;
        let rows = q.elem_count() / q_width;
        if q.device() == Device::Cpu {
            let out = self.cached_attention_on_cpu(l, &q.read_f32()?, layout, caches)?;
            return Tensor::from_vec(out, [rows, q_width]);
        }
        let out = Tensor::zeros_on([rows, q_width], q.dtype(), q.device())?;
        for ((range, &start), cache) in layout.rows.iter().zip(&layout.starts).zip(caches) {
            let n = range.len();
            let q_rows = q.view_of_flat(range.start * q_width, [n, dims.q_heads, dims.head_dim])?;
            let (k, v) = cache.layer(l, start + n)?;
            let attended = if start == 0 && n > 1 {
                let as_batch = |t: &Tensor, heads| t.reshape([1, n, heads, dims.head_dim]);
                let kv = dims.kv_heads;
                ops::attention(
                    &as_batch(&q_rows, dims.q_heads)?,
                    &as_batch(&k, kv)?,
                    &as_batch(&v, kv)?,
                    None,
                )?
            } else {
                ops::attention_cached(&q_rows, &k, &v, start)?
            };
            out.view_of_flat(range.start * q_width, [n * q_width])?
                .copy_from(&attended)?;
        }
        Ok(out)
    }

    /// [`Model::cached_attention`] on the CPU: decoding sequences in one parallel pass,
    /// fresh prompts through the blockwise attention of training (much faster than
    /// row-by-row dots).
    fn cached_attention_on_cpu(
        &self,
        l: usize,
        q: &[f32],
        layout: &StepLayout,
        caches: &[KvCache],
    ) -> Result<Vec<f32>> {
        let dims = self.cached_dims();
        let q_width = dims.q_heads * dims.head_dim;
        let mut out = vec![0.0f32; q.len()];
        let mut layers = Vec::with_capacity(caches.len());
        for ((rows, &start), cache) in layout.rows.iter().zip(&layout.starts).zip(caches) {
            layers.push(cache.layer(l, start + rows.len())?);
        }
        let reads = layers
            .iter()
            .map(|(k, v)| Ok((k.read_f32()?, v.read_f32()?)))
            .collect::<Result<Vec<_>>>()?;
        let mut decoding = Vec::new();
        let mut decoding_rows = Vec::new();
        for ((rows, &start), (k_cache, v_cache)) in
            layout.rows.iter().zip(&layout.starts).zip(&reads)
        {
            let q_rows = rows.start * q_width..rows.end * q_width;
            if start == 0 && rows.len() > 1 {
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
    out.to_vec_f32()
}
