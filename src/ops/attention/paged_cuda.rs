//! Launchers of kernels/paged_attention.cu: decode attention over the paged cache (its
//! parts merged by the combine kernel when a context spans several), and the cache write.

use super::paged::{PagedDims, PagedRows};
use crate::backend::cuda::{
    Gpu, GpuBuffer, GpuFloat, GpuView, GpuViewMut, KernelArg, LaunchConfig,
};
use crate::{Error, Result};

const OP: &str = "paged_attention";
/// Keys of one part of a context (the kernel's PAGED_SPLIT_KEYS). A constant, never a
/// function of the batch: a row's arithmetic must not depend on its neighbours. 256 gives
/// a 7B model (32 KV heads) 128 blocks a layer at 1,024 positions.
pub const SPLIT_KEYS: usize = 256;
/// Query heads a block serves (kernels/paged_attention.cu, PAGED_MAX_HEADS).
const MAX_HEADS: usize = 8;
/// The largest head dim: four columns a lane (PAGED_MAX_COLS).
const MAX_HEAD_DIM: usize = 128;
const WARPS: usize = 4;

/// Attention of the query rows q [n, Hq, D] over the pools [blocks, block_size, Hkv, D]:
/// out [n, Hq, D].
pub fn paged_attention_forward<T: GpuFloat>(
    gpu: &Gpu,
    q: GpuView<'_, T>,
    (k_pool, v_pool): (GpuView<'_, T>, GpuView<'_, T>),
    rows: &PagedRows,
    dims: PagedDims,
) -> Result<GpuBuffer<T>> {
    if dims.head_dim > MAX_HEAD_DIM {
        return Err(Error::shape(
            OP,
            format!(
                "head dim {} is past the kernel's {MAX_HEAD_DIM}",
                dims.head_dim
            ),
        ));
    }
    let meta = rows.on_gpu(gpu)?;
    let parts = rows.max_context().div_ceil(SPLIT_KEYS).max(1);
    let chunks = (dims.q_heads / dims.kv_heads).div_ceil(MAX_HEADS);
    let slots = rows.len() * dims.q_heads;
    let mut out = gpu.alloc::<T>(slots * dims.head_dim)?;
    // One part writes the output directly: the partial buffers are not read then.
    let partial_len = |per_slot: usize| {
        if parts > 1 {
            slots * parts * per_slot
        } else {
            1
        }
    };
    let mut part_out = gpu.alloc::<f32>(partial_len(dims.head_dim))?;
    let mut part_stats = gpu.alloc::<f32>(partial_len(2))?;
    let args = [
        KernelArg::output(&mut out),
        KernelArg::output(&mut part_out),
        KernelArg::output(&mut part_stats),
        KernelArg::input(q),
        KernelArg::input(k_pool),
        KernelArg::input(v_pool),
        KernelArg::input(meta),
        KernelArg::int(rows.len())?,
        KernelArg::int(dims.q_heads)?,
        KernelArg::int(dims.kv_heads)?,
        KernelArg::int(dims.head_dim)?,
        KernelArg::int(rows.block_size())?,
        KernelArg::int(rows.table_width())?,
        KernelArg::F32(super::cuda::scale(dims.head_dim)),
    ];
    let blocks = rows.len() * dims.kv_heads * chunks;
    let heads = (dims.q_heads / dims.kv_heads).min(MAX_HEADS);
    let floats = heads * (dims.head_dim + SPLIT_KEYS + WARPS * dims.head_dim);
    let cfg = LaunchConfig {
        grid: [grid_size(blocks)?, grid_size(parts)?, 1],
        block: [32 * WARPS as u32, 1, 1],
        shared_bytes: floats * 4,
    };
    // SAFETY: the arguments match paged_attention_decode_<T>'s parameters; q and out hold
    // rows × Hq × D, the partial buffers slots × parts entries when parts > 1; the
    // tables were checked against the pool (check_pools) and every row's position against
    // its table (PagedRows::new); the shared memory is the kernel's layout.
    unsafe { gpu.launch(&format!("paged_attention_decode_{}", T::SUFFIX), cfg, &args)? };
    if parts > 1 {
        combine(
            gpu,
            &mut out,
            (&part_out, &part_stats),
            (slots, parts),
            dims.head_dim,
        )?;
    }
    Ok(out)
}

fn combine<T: GpuFloat>(
    gpu: &Gpu,
    out: &mut GpuBuffer<T>,
    (part_out, part_stats): (&GpuBuffer<f32>, &GpuBuffer<f32>),
    (slots, parts): (usize, usize),
    head_dim: usize,
) -> Result<()> {
    let args = [
        KernelArg::output(out),
        KernelArg::input(part_out),
        KernelArg::input(part_stats),
        KernelArg::int(parts)?,
        KernelArg::int(head_dim)?,
    ];
    let threads = head_dim.div_ceil(32).max(1) * 32;
    let cfg = LaunchConfig::linear(grid_size(slots)?, threads as u32, 0);
    // SAFETY: out holds slots × head_dim, the partial buffers slots × parts entries, all
    // written by paged_attention_decode before this launch on the same stream.
    unsafe {
        gpu.launch(
            &format!("paged_attention_combine_{}", T::SUFFIX),
            cfg,
            &args,
        )
    }
}

/// Writes k, v [rows, width] into the pools at the rows' slots.
pub fn kv_cache_write<T: GpuFloat>(
    gpu: &Gpu,
    (k_pool, v_pool): (GpuViewMut<'_, T>, GpuViewMut<'_, T>),
    (k, v): (GpuView<'_, T>, GpuView<'_, T>),
    rows: &PagedRows,
    width: usize,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let meta = rows.on_gpu(gpu)?;
    let slots = meta.view(2 * rows.len()..3 * rows.len())?;
    let args = [
        KernelArg::output(k_pool),
        KernelArg::output(v_pool),
        KernelArg::input(k),
        KernelArg::input(v),
        KernelArg::input(slots),
        KernelArg::int(rows.len())?,
        KernelArg::int(width)?,
    ];
    // SAFETY: k and v hold rows × width (checked by the op), every slot is a row of the
    // pools (its block was checked against the pool's), one thread per element.
    unsafe {
        gpu.launch(
            &format!("kv_cache_write_{}", T::SUFFIX),
            LaunchConfig::elementwise(rows.len() * width, 1),
            &args,
        )
    }
}

fn grid_size(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::shape(OP, format!("a grid of {n} blocks is too large")))
}
