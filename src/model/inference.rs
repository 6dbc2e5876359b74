//! Incremental forward for generation: new tokens of several sequences at once, each
//! continuing its own part of the paged KV cache. Prefill (a whole prompt) and decode
//! (one token) are the same call with chunks of different lengths, so a batch mixes
//! both and sequences of different lengths need no padding. A step's rows are ordered
//! fresh prompts first, grouped by length (each group one flash-attention call, as a
//! batch), then every other row (one paged-attention call over the cache). Runs on the
//! model's device, where the cache is.

use std::ops::Range;
use std::sync::Arc;

use super::{KvCache, Layer, Model, SeqId};
use crate::autograd::no_grad;
use crate::ops::{self, PagedRows, RopeTable};
use crate::{DType, Device, Error, Result, Tensor};

/// Where a step's rows are and what attends how.
struct StepPlan {
    /// Each chunk's rows in the step's order, indexed as the chunks were given.
    rows: Vec<Range<usize>>,
    /// Fresh prompts of one length side by side: (first row, prompts, length).
    prefill_groups: Vec<(usize, usize, usize)>,
    /// Rows from here on attend through the cache.
    cached_from: usize,
    /// Every row, for writing its key and value into the cache.
    writes: PagedRows,
    /// The rows from `cached_from`, for attending over the cache.
    cached: PagedRows,
    ids: Vec<u32>,
    positions: Vec<u32>,
}

impl Model {
    /// Feeds each chunk's new tokens through the model, appending them to its sequence
    /// in `cache`; returns the logits at each chunk's last token, [chunks.len(), vocab],
    /// on the model's device.
    pub fn forward_step(&self, chunks: &[(SeqId, &[u32])], cache: &mut KvCache) -> Result<Tensor> {
        // On the CPU a decode step is hundreds of small parallel ops. Run on a pool thread,
        // each one forks inside the pool instead of handing its work over from this
        // thread and sleeping until it is done. A GPU's launches stay on this thread.
        match self.device() {
            Device::Cpu => rayon::scope(|_| self.step(chunks, cache)),
            _ => self.step(chunks, cache),
        }
    }

    /// The dtype of the activations a forward makes: f32 on the CPU (whatever the weights'
    /// storage), the parameters' dtype on a GPU. The KV cache holds this.
    pub fn activation_dtype(&self) -> DType {
        match self.device() {
            Device::Cpu => DType::F32,
            _ => self.embed_tokens.dtype(),
        }
    }

    fn step(&self, chunks: &[(SeqId, &[u32])], cache: &mut KvCache) -> Result<Tensor> {
        let _no_tape = no_grad();
        let plan = self.plan_step(chunks, cache)?;
        let mut x = ops::embedding(&self.embed_tokens, &plan.ids)?;
        let rope = self.rope_table(&plan.positions)?;
        for (l, layer) in self.layers.iter().enumerate() {
            x = self.layer_step((l, layer), &x, &rope, &plan, cache)?;
        }
        for &(seq, chunk) in chunks {
            cache.advance(seq, chunk.len())?;
        }
        let last: Vec<u32> = plan.rows.iter().map(|r| r.end as u32 - 1).collect();
        let last = ops::embedding(&x, &last)?;
        let h = ops::rmsnorm(&last, &self.norm, self.config.rms_norm_eps)?;
        ops::linear(&h, self.output_weight(), None)
    }

    fn plan_step(&self, chunks: &[(SeqId, &[u32])], cache: &mut KvCache) -> Result<StepPlan> {
        let starts = self.check_step(chunks, cache)?;
        for (&(seq, chunk), &start) in chunks.iter().zip(&starts) {
            cache.ensure(seq, start + chunk.len())?;
        }
        let fresh = |c: usize| starts[c] == 0 && chunks[c].1.len() > 1;
        let mut order: Vec<usize> = (0..chunks.len()).filter(|&c| fresh(c)).collect();
        order.sort_by_key(|&c| chunks[c].1.len());
        let cached_chunks = order.len();
        order.extend((0..chunks.len()).filter(|&c| !fresh(c)));

        let mut rows = vec![0..0; chunks.len()];
        let (mut ids, mut positions, mut row_places) = (Vec::new(), Vec::new(), Vec::new());
        let mut prefill_groups: Vec<(usize, usize, usize)> = Vec::new();
        for (k, &c) in order.iter().enumerate() {
            let (start, chunk) = (starts[c], chunks[c].1);
            let first = ids.len();
            rows[c] = first..first + chunk.len();
            ids.extend_from_slice(chunk);
            positions.extend((start..start + chunk.len()).map(|p| p as u32));
            row_places.extend((start..start + chunk.len()).map(|p| (c, p)));
            if k < cached_chunks {
                match prefill_groups.last_mut() {
                    Some((_, count, len)) if *len == chunk.len() => *count += 1,
                    _ => prefill_groups.push((first, 1, chunk.len())),
                }
            }
        }
        let cached_from = order[..cached_chunks]
            .iter()
            .map(|&c| chunks[c].1.len())
            .sum();
        let sequences: Vec<SeqId> = chunks.iter().map(|&(s, _)| s).collect();
        Ok(StepPlan {
            writes: cache.paged_rows(&sequences, &row_places)?,
            cached: cache.paged_rows(&sequences, &row_places[cached_from..])?,
            rows,
            prefill_groups,
            cached_from,
            ids,
            positions,
        })
    }

    /// Each chunk's start (its sequence's cached length), after checking the chunks.
    fn check_step(&self, chunks: &[(SeqId, &[u32])], cache: &KvCache) -> Result<Vec<usize>> {
        let fail = |msg: String| Err(Error::shape("forward_step", msg));
        let mut starts = Vec::with_capacity(chunks.len());
        for (s, &(seq, chunk)) in chunks.iter().enumerate() {
            if chunk.is_empty() {
                return fail(format!("sequence {s} has no new tokens"));
            }
            if chunks[..s].iter().any(|&(other, _)| other == seq) {
                return fail(format!("sequence {s} is given twice"));
            }
            let start = cache.len(seq)?;
            let end = start + chunk.len();
            if let Some(max) = self.config.max_position_embeddings.filter(|&m| end > m) {
                return fail(format!(
                    "sequence {s} would reach {end} tokens, past the model's context of {max}"
                ));
            }
            starts.push(start);
        }
        Ok(starts)
    }

    fn layer_step(
        &self,
        (l, layer): (usize, &Layer),
        x: &Tensor,
        rope: &Arc<RopeTable>,
        plan: &StepPlan,
        cache: &KvCache,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (q, k, v) = layer.rotated_qkv(c, x, rope)?;
        let (k_pool, v_pool) = cache.layer(l);
        ops::kv_cache_write(k_pool, v_pool, &k, &v, &plan.writes)?;
        let attn = self.step_attention((&q, &k, &v), (k_pool, v_pool), plan)?;
        let x = ops::add(x, &layer.o_proj.forward(&attn)?)?;
        layer.mlp_block(c, &x)
    }

    /// The attention of every row of the step, [n, Hq·Dh]: each group of fresh prompts
    /// over its own keys, the other rows over the cache (which holds their keys now).
    fn step_attention(
        &self,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        pools: (&Tensor, &Tensor),
        plan: &StepPlan,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (hq, hkv, dh) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let n = plan.writes.len();
        let mut parts = Vec::new();
        for &(first, prompts, len) in &plan.prefill_groups {
            let group = |t: &Tensor, heads: usize| {
                t.view_of_flat(first * heads * dh, [prompts, len, heads, dh])
            };
            parts.push(ops::attention(
                &group(q, hq)?,
                &group(k, hkv)?,
                &group(v, hkv)?,
                None,
            )?);
        }
        if plan.cached_from < n {
            let rows = n - plan.cached_from;
            let q_rows = q.view_of_flat(plan.cached_from * hq * dh, [rows, hq, dh])?;
            parts.push(ops::paged_attention(
                &q_rows,
                pools.0,
                pools.1,
                &plan.cached,
            )?);
        }
        if let [only] = parts.as_slice() {
            return only.reshape([n, hq * dh]);
        }
        let out = Tensor::zeros_on([n, hq * dh], q.dtype(), q.device())?;
        let mut offset = 0;
        for part in parts {
            out.view_of_flat(offset, [part.elem_count()])?
                .copy_from(&part)?;
            offset += part.elem_count();
        }
        Ok(out)
    }
}
