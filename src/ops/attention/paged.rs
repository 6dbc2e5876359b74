//! Attention of new queries over a paged key/value cache, for generation (inference only,
//! no tape), and the write that puts a step's keys and values into the cache.
//!
//! A layer's cache is a pool of blocks, k and v [blocks, block_size, Hkv, Dh]; each
//! sequence owns the blocks its table lists, in order. Query row r is at position p of
//! sequence s and sees that sequence's positions 0..=p: the causal rule of `attention`,
//! one sequence per table, so no segment mask is needed. The GPU half is
//! kernels/paged_attention.cu (flash-decoding; see its head for the bytes it must move).

use std::sync::OnceLock;

use rayon::prelude::*;

use super::paged_cuda;
use crate::backend::cuda::{Gpu, GpuBuffer};
use crate::ops::{device_of, expect_f32, gpu_dtype_of, on_gpu_dtype};
use crate::{Device, Error, Result, Tensor};

const OP: &str = "paged_attention";

/// Where each query row of a step reads and writes: its sequence, its position and the
/// pool row of that position, with the block tables of the sequences. Built once a step
/// and shared by every layer (on a GPU, uploaded once, on first use).
pub struct PagedRows {
    block_size: usize,
    rows: usize,
    table_width: usize,
    /// The longest context a row sees (its position + 1).
    max_context: usize,
    /// [rows] sequence, [rows] position, [rows] pool row, [seqs × table_width] block ids
    /// (-1 past a table's end): the layout kernels/paged_attention.cu reads.
    meta: Vec<i32>,
    uploaded: OnceLock<(usize, GpuBuffer<i32>)>,
}

impl PagedRows {
    /// `rows[r] = (s, p)`: query row r is position p of the sequence whose block table is
    /// `tables[s]`; each table must reach its rows' positions.
    pub fn new(block_size: usize, tables: &[&[u32]], rows: &[(usize, usize)]) -> Result<PagedRows> {
        let fail = |msg: String| Err(Error::shape(OP, msg));
        if block_size == 0 {
            return fail("the block size must be at least 1".into());
        }
        let table_width = tables.iter().map(|t| t.len()).max().unwrap_or(0);
        let int = |v: usize| {
            i32::try_from(v).map_err(|_| Error::shape(OP, format!("{v} does not fit an i32")))
        };
        let mut meta = Vec::with_capacity(3 * rows.len() + tables.len() * table_width);
        let mut slots = Vec::with_capacity(rows.len());
        for (r, &(s, p)) in rows.iter().enumerate() {
            let Some(table) = tables.get(s) else {
                return fail(format!("row {r} names sequence {s} of {}", tables.len()));
            };
            let Some(&block) = table.get(p / block_size) else {
                return fail(format!(
                    "row {r} is at position {p}, past its table of {} blocks of {block_size}",
                    table.len()
                ));
            };
            meta.push(int(s)?);
            slots.push(int(block as usize * block_size + p % block_size)?);
        }
        for &(_, p) in rows {
            meta.push(int(p)?);
        }
        meta.extend(slots);
        for table in tables {
            for &b in table.iter() {
                meta.push(int(b as usize)?);
            }
            meta.extend(std::iter::repeat_n(-1, table_width - table.len()));
        }
        Ok(PagedRows {
            block_size,
            rows: rows.len(),
            table_width,
            max_context: rows.iter().map(|&(_, p)| p + 1).max().unwrap_or(0),
            meta,
            uploaded: OnceLock::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub(super) fn table_width(&self) -> usize {
        self.table_width
    }

    pub(super) fn max_context(&self) -> usize {
        self.max_context
    }

    fn position(&self, r: usize) -> usize {
        self.meta[self.rows + r] as usize
    }

    /// The pool row that holds row r's own position (where its new key is written).
    fn slot(&self, r: usize) -> usize {
        self.meta[2 * self.rows + r] as usize
    }

    /// The pool rows of positions 0..=p of row r's sequence (r at position p).
    fn pool_rows(&self, r: usize) -> Vec<usize> {
        let keys = self.position(r) + 1;
        let seq = self.meta[r] as usize;
        let table = &self.meta[3 * self.rows + seq * self.table_width..][..self.table_width];
        let rows_of =
            |&block: &i32| (0..self.block_size).map(move |i| block as usize * self.block_size + i);
        table.iter().flat_map(rows_of).take(keys).collect()
    }

    /// The largest block id the tables name (to check them against a pool).
    fn max_block(&self) -> Option<usize> {
        self.meta[3 * self.rows..]
            .iter()
            .filter(|&&b| b >= 0)
            .map(|&b| b as usize)
            .max()
    }

    /// The layout on `gpu`: uploaded on first use and kept for the step's other layers.
    pub(super) fn on_gpu(&self, gpu: &Gpu) -> Result<&GpuBuffer<i32>> {
        let key = gpu as *const Gpu as usize;
        if self.uploaded.get().is_none() {
            let _ = self.uploaded.set((key, gpu.upload(&self.meta)?));
        }
        match self.uploaded.get() {
            Some((k, buffer)) if *k == key => Ok(buffer),
            _ => Err(Error::Gpu(format!(
                "{OP}: the rows were uploaded to another device"
            ))),
        }
    }
}

/// Sizes of one paged-attention call.
#[derive(Clone, Copy, Debug)]
pub struct PagedDims {
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// Attention of the query rows q [n, Hq, Dh] (row r at its `rows` position) over the pools
/// k_pool, v_pool [blocks, block_size, Hkv, Dh], which already hold every key the rows
/// see: [n, Hq·Dh] on their device. Inference only: nothing is recorded.
pub fn paged_attention(
    q: &Tensor,
    k_pool: &Tensor,
    v_pool: &Tensor,
    rows: &PagedRows,
) -> Result<Tensor> {
    let dims = check(q, k_pool, v_pool, rows)?;
    let width = dims.q_heads * dims.head_dim;
    if rows.is_empty() {
        return Tensor::zeros_on([0, width], q.dtype(), q.device());
    }
    match device_of(OP, &[q, k_pool, v_pool])? {
        Device::Cpu => {
            expect_f32(OP, &[q, k_pool, v_pool])?;
            let out = attention_over_pool(
                &q.read_f32()?,
                (&k_pool.read_f32()?, &v_pool.read_f32()?),
                rows,
                dims,
            );
            Tensor::from_vec(out, [rows.len(), width])
        }
        _ => on_gpu_dtype!(OP, gpu_dtype_of(OP, &[q, k_pool, v_pool])?, T => {
            let (rq, rk, rv) = (q.read_gpu(OP)?, k_pool.read_gpu(OP)?, v_pool.read_gpu(OP)?);
            let gpu = rq.gpu().clone();
            let pools = (rk.view::<T>(OP)?, rv.view::<T>(OP)?);
            let out = paged_cuda::paged_attention_forward(&gpu, rq.view::<T>(OP)?, pools, rows, dims)?;
            Ok(Tensor::from_gpu((rq.device(), &gpu), out, [rows.len(), width]))
        }),
    }
}

/// Writes the step's new keys and values k, v [n, Hkv, Dh] (row r at its `rows`
/// position) into the pools k_pool, v_pool [blocks, block_size, Hkv, Dh], in place.
pub fn kv_cache_write(
    k_pool: &Tensor,
    v_pool: &Tensor,
    k: &Tensor,
    v: &Tensor,
    rows: &PagedRows,
) -> Result<()> {
    const OP: &str = "kv_cache_write";
    let width = check_pools(OP, k_pool, v_pool, rows)?;
    if k.shape() != v.shape() || k.elem_count() != rows.len() * width {
        return Err(Error::shape(
            OP,
            format!(
                "k {} and v {} must be {} rows of the pool's width {width}",
                k.shape(),
                v.shape(),
                rows.len()
            ),
        ));
    }
    match device_of(OP, &[k_pool, v_pool, k, v])? {
        Device::Cpu => {
            expect_f32(OP, &[k_pool, v_pool, k, v])?;
            for (pool, new) in [(k_pool, k), (v_pool, v)] {
                let (mut pool, new) = (pool.write_f32()?, new.read_f32()?);
                for (r, row) in new.chunks_exact(width).enumerate() {
                    pool[rows.slot(r) * width..][..width].copy_from_slice(row);
                }
            }
            Ok(())
        }
        _ => on_gpu_dtype!(OP, gpu_dtype_of(OP, &[k_pool, v_pool, k, v])?, T => {
            let (rk, rv) = (k.read_gpu(OP)?, v.read_gpu(OP)?);
            let (mut wk, mut wv) = (k_pool.write_gpu(OP)?, v_pool.write_gpu(OP)?);
            let gpu = wk.gpu();
            let pools = (wk.view_mut::<T>(OP)?, wv.view_mut::<T>(OP)?);
            paged_cuda::kv_cache_write(&gpu, pools, (rk.view::<T>(OP)?, rv.view::<T>(OP)?), rows, width)
        }),
    }
}

/// The pools' row width (Hkv·Dh), after checking their shapes against `rows`.
fn check_pools(
    op: &'static str,
    k_pool: &Tensor,
    v_pool: &Tensor,
    rows: &PagedRows,
) -> Result<usize> {
    let dims = k_pool.dims();
    if dims.len() != 4 || k_pool.shape() != v_pool.shape() || dims[1] != rows.block_size {
        return Err(Error::shape(
            op,
            format!(
                "the pools must be [blocks, {}, Hkv, Dh] alike, got k {} and v {}",
                rows.block_size,
                k_pool.shape(),
                v_pool.shape()
            ),
        ));
    }
    if let Some(b) = rows.max_block().filter(|&b| b >= dims[0]) {
        return Err(Error::shape(
            op,
            format!("a table names block {b} of a pool of {}", dims[0]),
        ));
    }
    Ok(dims[2] * dims[3])
}

fn check(q: &Tensor, k_pool: &Tensor, v_pool: &Tensor, rows: &PagedRows) -> Result<PagedDims> {
    check_pools(OP, k_pool, v_pool, rows)?;
    let (qd, kd) = (q.dims(), k_pool.dims());
    let dims = PagedDims {
        q_heads: qd.get(1).copied().unwrap_or(0),
        kv_heads: kd[2],
        head_dim: kd[3],
    };
    let heads_fit =
        dims.kv_heads > 0 && dims.q_heads.is_multiple_of(dims.kv_heads) && dims.q_heads > 0;
    if qd.len() != 3 || qd[0] != rows.len() || qd[2] != dims.head_dim || !heads_fit {
        return Err(Error::shape(
            OP,
            format!(
                "q must be [{}, Hq, {}] with Hq a multiple of the pool's {} heads, got {}",
                rows.len(),
                dims.head_dim,
                dims.kv_heads,
                q.shape()
            ),
        ));
    }
    Ok(dims)
}

/// The CPU reference: every (row, head) pair of the step in one parallel pass, each over
/// its sequence's cached positions 0..=p.
fn attention_over_pool(
    q: &[f32],
    (k, v): (&[f32], &[f32]),
    rows: &PagedRows,
    dims: PagedDims,
) -> Vec<f32> {
    let mut out = vec![0.0f32; q.len()];
    if dims.head_dim == 0 {
        return out;
    }
    // Each row's pool rows once, block by block, shared by its heads.
    let slots: Vec<Vec<usize>> = (0..rows.len()).map(|r| rows.pool_rows(r)).collect();
    out.par_chunks_mut(dims.head_dim)
        .enumerate()
        .for_each(|(unit, o)| {
            let (r, head) = (unit / dims.q_heads, unit % dims.q_heads);
            let qv = &q[unit * dims.head_dim..][..dims.head_dim];
            attend(o, qv, (k, v), &slots[r], head, dims);
        });
    out
}

/// Output `o` of one query head over the positions held at pool rows `slots`.
fn attend(
    o: &mut [f32],
    qv: &[f32],
    (k, v): (&[f32], &[f32]),
    slots: &[usize],
    head: usize,
    dims: PagedDims,
) {
    let dh = dims.head_dim;
    let kv = head / (dims.q_heads / dims.kv_heads);
    let offset = |slot: usize| (slot * dims.kv_heads + kv) * dh;
    let scale = (1.0 / (dh as f64).sqrt()) as f32;
    let scores: Vec<f32> = slots
        .iter()
        .map(|&slot| dot(qv, &k[offset(slot)..][..dh]) * scale)
        .collect();
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let probs: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let inv_sum = (1.0 / probs.iter().map(|&p| p as f64).sum::<f64>()) as f32;
    for (&slot, p) in slots.iter().zip(&probs) {
        let w = p * inv_sum;
        let value = &v[offset(slot)..][..dh];
        o.iter_mut().zip(value).for_each(|(o, v)| *o += w * v);
    }
}

/// Independent partial sums per dot product, so the compiler can keep them in one
/// vector register instead of a serial chain of adds.
const DOT_LANES: usize = 8;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; DOT_LANES];
    let (ca, cb) = (a.chunks_exact(DOT_LANES), b.chunks_exact(DOT_LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((l, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *l += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests;
