//! Launchers of kernels/flash_attention.cu: causal GQA attention on tensor cores for bf16
//! at head dims 64 and 128, any sequence length (K/V stream through shared memory in
//! tiles). `attention_forward` / `attention_backward` in cuda.rs choose them there, and
//! the simple kernels elsewhere.

use half::bf16;

use super::cpu::AttentionDims;
use super::cuda::{
    check, check_backward, scale, segments_arg, BackwardInputs, ForwardOutputs, Gradients, Qkv,
    Segments,
};
use crate::backend::cuda::{Gpu, GpuView, KernelArg, LaunchConfig};
use crate::{Error, Result};

/// Query rows of a forward block (4 warps of 16), and of a backward block (2 warps).
const FORWARD_ROWS: usize = 64;
const BACKWARD_ROWS: usize = 32;
/// Rows of delta = rowsum(dout · out) a block computes, one warp each.
const DELTA_ROWS: usize = 8;

/// Whether the flash kernels take attention of these dimensions.
pub fn supports(dims: AttentionDims) -> bool {
    matches!(dims.head_dim, 64 | 128)
}

fn check_supported(op: &'static str, dims: AttentionDims) -> Result<()> {
    if !supports(dims) {
        return Err(Error::shape(
            op,
            format!(
                "the flash kernels take head dims 64 and 128, not {} (the simple kernels take any)",
                dims.head_dim
            ),
        ));
    }
    Ok(())
}

/// The kernels load q, k, v and dout in bf16 pairs, as 32-bit words, which a GPU only
/// loads from 4-byte-aligned addresses: a view of them must start at an even element of
/// its buffer (buffers themselves are aligned).
fn check_word_aligned(op: &'static str, views: &[(&str, GpuView<'_, bf16>)]) -> Result<()> {
    for &(name, view) in views {
        if let KernelArg::Ptr(address) = KernelArg::input(view) {
            if address % 4 != 0 {
                return Err(Error::shape(
                    op,
                    format!(
                        "{name} starts at an odd element of its buffer; the flash kernels read \
                         bf16 pairs as 32-bit words, which must be 4-byte aligned"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The kernels' trailing parameters: batch, seq, heads, kv heads, scale.
fn dims_args(dims: AttentionDims) -> Result<[KernelArg; 5]> {
    Ok([
        KernelArg::int(dims.batch)?,
        KernelArg::int(dims.seq)?,
        KernelArg::int(dims.q_heads)?,
        KernelArg::int(dims.kv_heads)?,
        KernelArg::F32(scale(dims.head_dim)),
    ])
}

fn grid(tiles: usize, heads: usize) -> Result<[u32; 3]> {
    let fit =
        |n: usize| u32::try_from(n).map_err(|_| Error::shape("flash attention", "too many blocks"));
    Ok([fit(tiles)?, fit(heads)?, 1])
}

fn config(grid: [u32; 3], warps: usize) -> LaunchConfig {
    LaunchConfig {
        grid,
        block: [32 * warps as u32, 1, 1],
        shared_bytes: 0,
    }
}

fn kernel(name: &str, dims: AttentionDims) -> String {
    format!("flash_attention_{name}_d{}", dims.head_dim)
}

/// `(out, lse)` as `simple_attention_forward` returns them: out [B, T, Hq, D] and the
/// log-sum-exp of every score row [B, Hq, T].
pub fn forward(
    gpu: &Gpu,
    qkv: Qkv<'_, bf16>,
    segments: Segments<'_>,
    dims: AttentionDims,
) -> Result<ForwardOutputs<bf16>> {
    let op = "flash::forward";
    check_supported(op, dims)?;
    check(op, qkv, segments, dims)?;
    let (q, k, v) = qkv;
    check_word_aligned(op, &[("q", q), ("k", k), ("v", v)])?;
    let mut out = gpu.alloc::<bf16>(q.len())?;
    let mut lse = gpu.alloc::<f32>(dims.batch * dims.q_heads * dims.seq)?;
    let mut args = vec![
        KernelArg::output(&mut out),
        KernelArg::output(&mut lse),
        KernelArg::input(q),
        KernelArg::input(k),
        KernelArg::input(v),
        segments_arg(segments),
    ];
    args.extend(dims_args(dims)?);
    let blocks = grid(dims.seq.div_ceil(FORWARD_ROWS), dims.batch * dims.q_heads)?;
    // SAFETY: lengths checked; out and lse are written for every row < seq.
    unsafe { gpu.launch(&kernel("forward", dims), config(blocks, 4), &args)? };
    Ok((out, lse))
}

/// `(dq, dk, dv)` from the forward's inputs, output and lse, and the output gradient.
pub fn backward(
    gpu: &Gpu,
    qkv: Qkv<'_, bf16>,
    saved: BackwardInputs<'_, bf16>,
    segments: Segments<'_>,
    dims: AttentionDims,
) -> Result<Gradients<bf16>> {
    let op = "flash::backward";
    check_supported(op, dims)?;
    check_backward(op, qkv, saved, segments, dims)?;
    let ((q, k, v), (out, lse, dout)) = (qkv, saved);
    check_word_aligned(op, &[("q", q), ("k", k), ("v", v), ("dout", dout)])?;
    let rows = dims.batch * dims.seq * dims.q_heads;
    let mut delta = gpu.alloc::<f32>(lse.len())?;
    let mut args = vec![
        KernelArg::output(&mut delta),
        KernelArg::input(out),
        KernelArg::input(dout),
    ];
    args.extend(dims_args(dims)?);
    let blocks = grid(rows.div_ceil(DELTA_ROWS), 1)?;
    // SAFETY: one warp per row of out and dout ([B, T, Hq, D]), delta one float per row.
    unsafe { gpu.launch(&kernel("delta", dims), config(blocks, DELTA_ROWS), &args)? };

    let mut dq = gpu.alloc::<bf16>(q.len())?;
    let inputs = [
        KernelArg::input(q),
        KernelArg::input(k),
        KernelArg::input(v),
        KernelArg::input(dout),
        KernelArg::input(lse),
        KernelArg::input(&delta),
        segments_arg(segments),
    ];
    let mut args = vec![KernelArg::output(&mut dq)];
    args.extend(inputs);
    args.extend(dims_args(dims)?);
    let blocks = grid(dims.seq.div_ceil(BACKWARD_ROWS), dims.batch * dims.q_heads)?;
    // SAFETY: as the forward; lse and delta hold one float per query row.
    unsafe { gpu.launch(&kernel("dq", dims), config(blocks, 2), &args)? };

    let (mut dk, mut dv) = (gpu.alloc::<bf16>(k.len())?, gpu.alloc::<bf16>(v.len())?);
    let mut args = vec![KernelArg::output(&mut dk), KernelArg::output(&mut dv)];
    args.extend(inputs);
    args.extend(dims_args(dims)?);
    let blocks = grid(dims.seq.div_ceil(BACKWARD_ROWS), dims.batch * dims.kv_heads)?;
    // SAFETY: as above; every key row < seq of dk and dv is written by its block.
    unsafe { gpu.launch(&kernel("dkv", dims), config(blocks, 2), &args)? };
    Ok((dq, dk, dv))
}
