//! Causal GQA attention on a GPU, three launcher families that cannot be confused:
//! - `simple_attention_forward` / `simple_attention_backward`: the simple exact kernels of
//!   kernels/attention.cu (forward with the saved log-sum-exp; backward as dq then dk/dv),
//!   any dtype and head dim, sequences bounded by shared memory (checked); they stay
//!   callable as the on-device reference.
//! - `flash::forward` / `flash::backward` (flash.rs): kernels/flash_attention.cu on tensor
//!   cores, bf16 at head dims 64 and 128, any length.
//! - `attention_forward` / `attention_backward`: the choice, flash where it applies and
//!   simple otherwise.
//!
//! At the end, the attention op on GPU tensors, through the choice. Generation's kernels
//! over the paged cache are paged_cuda.rs.
//!
//! Tensor inputs are views, so they may be parts of larger buffers (a flat parameter
//! buffer, a KV cache): `(&buffer).into()` for a whole buffer, `buffer.view(range)?` for
//! part of one. Outputs are fresh buffers.

use half::bf16;

use super::cpu::AttentionDims;
use super::{flash, AttentionBackward};
use crate::backend::cuda::{
    expect_len, Gpu, GpuBuffer, GpuFloat, GpuView, KernelArg, LaunchConfig,
};
use crate::ops::{gpu_dtype_of, on_gpu_dtype};
use crate::{DType, Error, Result, Tensor};

const THREADS: u32 = 128;
/// Dynamic shared memory a block may use without opting in: 48 KB on every architecture,
/// less 1 KB for the static scratch of the kernels' block reductions.
const SHARED_LIMIT: usize = 47 * 1024;

/// q [B, T, Hq, D], k and v [B, T, Hkv, D].
pub type Qkv<'a, T> = (GpuView<'a, T>, GpuView<'a, T>, GpuView<'a, T>);
/// What the backward reads besides q, k and v: the forward's out [B, T, Hq, D] and lse
/// [B, Hq, T], and the gradient of out, dout [B, T, Hq, D].
pub type BackwardInputs<'a, T> = (GpuView<'a, T>, GpuView<'a, f32>, GpuView<'a, T>);
/// The segment id of every token [B·T] when sequences are packed into rows.
pub type Segments<'a> = Option<GpuView<'a, i32>>;
/// The forward's (out, lse) and the backward's (dq, dk, dv).
pub type ForwardOutputs<T> = (GpuBuffer<T>, GpuBuffer<f32>);
pub type Gradients<T> = (GpuBuffer<T>, GpuBuffer<T>, GpuBuffer<T>);
/// A forward and a backward launcher, as the benchmark and the tests hold them.
pub type AttentionForwardFn<T> =
    fn(&Gpu, Qkv<'_, T>, Segments<'_>, AttentionDims) -> Result<ForwardOutputs<T>>;
pub type AttentionBackwardFn<T> = fn(
    &Gpu,
    Qkv<'_, T>,
    BackwardInputs<'_, T>,
    Segments<'_>,
    AttentionDims,
) -> Result<Gradients<T>>;

/// The storage types `attention_forward` / `attention_backward` take; a type with flash
/// kernels runs them where they apply (`None`: the simple kernels run).
pub trait AttentionFloat: GpuFloat {
    fn flash_forward(
        _gpu: &Gpu,
        _qkv: Qkv<'_, Self>,
        _segments: Segments<'_>,
        _dims: AttentionDims,
    ) -> Option<Result<ForwardOutputs<Self>>> {
        None
    }

    fn flash_backward(
        _gpu: &Gpu,
        _qkv: Qkv<'_, Self>,
        _saved: BackwardInputs<'_, Self>,
        _segments: Segments<'_>,
        _dims: AttentionDims,
    ) -> Option<Result<Gradients<Self>>> {
        None
    }
}

impl AttentionFloat for f32 {}

impl AttentionFloat for bf16 {
    fn flash_forward(
        gpu: &Gpu,
        qkv: Qkv<'_, bf16>,
        segments: Segments<'_>,
        dims: AttentionDims,
    ) -> Option<Result<ForwardOutputs<bf16>>> {
        flash::supports(dims).then(|| flash::forward(gpu, qkv, segments, dims))
    }

    fn flash_backward(
        gpu: &Gpu,
        qkv: Qkv<'_, bf16>,
        saved: BackwardInputs<'_, bf16>,
        segments: Segments<'_>,
        dims: AttentionDims,
    ) -> Option<Result<Gradients<bf16>>> {
        flash::supports(dims).then(|| flash::backward(gpu, qkv, saved, segments, dims))
    }
}

/// `(out, lse)`: out [B, T, Hq, D] and the log-sum-exp of every score row [B, Hq, T], from
/// the flash kernels for bf16 at head dims 64 and 128, from the simple ones otherwise.
pub fn attention_forward<T: AttentionFloat>(
    gpu: &Gpu,
    qkv: Qkv<'_, T>,
    segments: Segments<'_>,
    dims: AttentionDims,
) -> Result<ForwardOutputs<T>> {
    T::flash_forward(gpu, qkv, segments, dims)
        .unwrap_or_else(|| simple_attention_forward(gpu, qkv, segments, dims))
}

/// `(dq, dk, dv)` from the forward's inputs, output and lse, and the output gradient; the
/// same choice of kernels as `attention_forward`.
pub fn attention_backward<T: AttentionFloat>(
    gpu: &Gpu,
    qkv: Qkv<'_, T>,
    saved: BackwardInputs<'_, T>,
    segments: Segments<'_>,
    dims: AttentionDims,
) -> Result<Gradients<T>> {
    T::flash_backward(gpu, qkv, saved, segments, dims)
        .unwrap_or_else(|| simple_attention_backward(gpu, qkv, saved, segments, dims))
}

/// The simple kernels' trailing shape parameters: batch, seq, heads, kv heads, head dim,
/// scale.
fn dims_args(dims: AttentionDims) -> Result<[KernelArg; 6]> {
    Ok([
        KernelArg::int(dims.batch)?,
        KernelArg::int(dims.seq)?,
        KernelArg::int(dims.q_heads)?,
        KernelArg::int(dims.kv_heads)?,
        KernelArg::int(dims.head_dim)?,
        KernelArg::F32(scale(dims.head_dim)),
    ])
}

/// HF's `head_dim ** -0.5`, a double rounded to f32 (as the CPU reference).
pub(super) fn scale(head_dim: usize) -> f32 {
    (1.0 / (head_dim as f64).sqrt()) as f32
}

pub(super) fn segments_arg(segments: Segments<'_>) -> KernelArg {
    segments.map_or(KernelArg::Ptr(0), KernelArg::input)
}

fn check_heads(op: &'static str, q_heads: usize, kv_heads: usize, head_dim: usize) -> Result<()> {
    if kv_heads == 0 || !q_heads.is_multiple_of(kv_heads) || head_dim == 0 {
        return Err(Error::shape(
            op,
            format!(
                "{q_heads} query heads are not groups of {kv_heads} kv heads, or head dim {head_dim} is 0"
            ),
        ));
    }
    Ok(())
}

/// Fails unless q, k, v (and the segments) hold what `d` says.
pub(super) fn check<T: GpuFloat>(
    op: &'static str,
    (q, k, v): Qkv<'_, T>,
    segments: Segments<'_>,
    d: AttentionDims,
) -> Result<()> {
    check_heads(op, d.q_heads, d.kv_heads, d.head_dim)?;
    let tokens = d.batch * d.seq;
    expect_len(op, "q", &q, tokens * d.q_heads * d.head_dim)?;
    expect_len(op, "k", &k, tokens * d.kv_heads * d.head_dim)?;
    expect_len(op, "v", &v, tokens * d.kv_heads * d.head_dim)?;
    if let Some(s) = segments {
        expect_len(op, "segments", &s, tokens)?;
    }
    Ok(())
}

/// `check`, and out, lse and dout against q.
pub(super) fn check_backward<T: GpuFloat>(
    op: &'static str,
    qkv: Qkv<'_, T>,
    (out, lse, dout): BackwardInputs<'_, T>,
    segments: Segments<'_>,
    dims: AttentionDims,
) -> Result<()> {
    check(op, qkv, segments, dims)?;
    expect_len(op, "out", &out, qkv.0.len())?;
    expect_len(op, "the output gradient", &dout, qkv.0.len())?;
    expect_len(op, "lse", &lse, dims.batch * dims.q_heads * dims.seq)
}

/// Fails when `floats` of dynamic shared memory (what `holds`, for `what`) do not fit a
/// block.
fn check_shared(op: &'static str, floats: usize, holds: &str, what: &str) -> Result<usize> {
    let bytes = floats * 4;
    if bytes > SHARED_LIMIT {
        return Err(Error::shape(
            op,
            format!(
                "{what} is too long for the simple kernel: it keeps {holds} in shared memory, \
                 {bytes} bytes where a block has {SHARED_LIMIT}"
            ),
        ));
    }
    Ok(bytes)
}

fn blocks(d: AttentionDims, heads: usize) -> Result<u32> {
    u32::try_from(d.batch * d.seq * heads).map_err(|_| Error::shape("attention", "too many rows"))
}

/// The simple kernels' forward: any dtype and head dim, sequences up to 12k (a row of
/// scores in shared memory).
pub fn simple_attention_forward<T: GpuFloat>(
    gpu: &Gpu,
    qkv: Qkv<'_, T>,
    segments: Segments<'_>,
    dims: AttentionDims,
) -> Result<ForwardOutputs<T>> {
    let op = "simple_attention_forward";
    check(op, qkv, segments, dims)?;
    let what = format!("a sequence of {}", dims.seq);
    let shared = check_shared(op, dims.seq, "a row of scores", &what)?;
    let (q, k, v) = qkv;
    let mut out = gpu.alloc::<T>(q.len())?;
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
    let cfg = LaunchConfig::linear(blocks(dims, dims.q_heads)?, THREADS, shared);
    // SAFETY: lengths checked against dims; every row of out and lse is written by its
    // block; the scores fit the shared memory.
    unsafe { gpu.launch(&format!("attention_forward_{}", T::SUFFIX), cfg, &args)? };
    Ok((out, lse))
}

/// The simple kernels' backward: any dtype and head dim, sequences up to about 6k (the
/// dk/dv kernel keeps two rows of T in shared memory).
pub fn simple_attention_backward<T: GpuFloat>(
    gpu: &Gpu,
    qkv: Qkv<'_, T>,
    saved: BackwardInputs<'_, T>,
    segments: Segments<'_>,
    dims: AttentionDims,
) -> Result<Gradients<T>> {
    let op = "simple_attention_backward";
    check_backward(op, qkv, saved, segments, dims)?;
    let what = format!("a sequence of {}", dims.seq);
    let dq_shared = check_shared(op, dims.seq, "a row of scores", &what)?;
    let dkv_floats = 2 * dims.seq + 2 * dims.head_dim;
    let dkv_shared = check_shared(op, dkv_floats, "two rows of scores", &what)?;
    let ((q, k, v), (out, lse, dout)) = (qkv, saved);
    let mut dq = gpu.alloc::<T>(q.len())?;
    let mut delta = gpu.alloc::<f32>(lse.len())?;
    let mut args = vec![
        KernelArg::output(&mut dq),
        KernelArg::output(&mut delta),
        KernelArg::input(q),
        KernelArg::input(k),
        KernelArg::input(v),
        KernelArg::input(out),
        KernelArg::input(dout),
        KernelArg::input(lse),
        segments_arg(segments),
    ];
    args.extend(dims_args(dims)?);
    let cfg = LaunchConfig::linear(blocks(dims, dims.q_heads)?, THREADS, dq_shared);
    // SAFETY: as the forward; delta has one entry per score row, each written.
    unsafe { gpu.launch(&format!("attention_backward_dq_{}", T::SUFFIX), cfg, &args)? };
    let (mut dk, mut dv) = (gpu.alloc::<T>(k.len())?, gpu.alloc::<T>(v.len())?);
    let mut args = vec![
        KernelArg::output(&mut dk),
        KernelArg::output(&mut dv),
        KernelArg::input(q),
        KernelArg::input(k),
        KernelArg::input(v),
        KernelArg::input(dout),
        KernelArg::input(lse),
        KernelArg::input(&delta),
        segments_arg(segments),
    ];
    args.extend(dims_args(dims)?);
    let cfg = LaunchConfig::linear(blocks(dims, dims.kv_heads)?, THREADS, dkv_shared);
    // SAFETY: as above; the shared memory holds p and ds rows and two accumulators.
    unsafe { gpu.launch(&format!("attention_backward_dkv_{}", T::SUFFIX), cfg, &args)? };
    Ok((dq, dk, dv))
}

/// Segment ids as the kernels take them (i32), uploaded.
fn device_segments(gpu: &Gpu, segments: Option<&[u32]>) -> Result<Option<GpuBuffer<i32>>> {
    let Some(segments) = segments else {
        return Ok(None);
    };
    let ids = segments
        .iter()
        .map(|&s| i32::try_from(s).map_err(|_| Error::shape("attention", "segment id too large")))
        .collect::<Result<Vec<i32>>>()?;
    Ok(Some(gpu.upload(&ids)?))
}

/// Whether attention of this dtype and these dimensions runs the flash kernels.
pub fn uses_flash(dtype: DType, dims: AttentionDims) -> bool {
    dtype == DType::BF16 && flash::supports(dims)
}

/// [`super::attention`] of GPU tensors of one dtype, through [`attention_forward`].
pub(super) fn attention(
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    segments: Option<&[u32]>,
    dims: AttentionDims,
) -> Result<Tensor> {
    const OP: &str = "attention";
    on_gpu_dtype!(OP, gpu_dtype_of(OP, &[q, k, v])?, T => {
        let (rq, rk, rv) = (q.read_gpu(OP)?, k.read_gpu(OP)?, v.read_gpu(OP)?);
        let gpu = rq.gpu().clone();
        let on = (rq.device(), &gpu);
        let seg = device_segments(&gpu, segments)?;
        let qkv = (rq.view::<T>(OP)?, rk.view::<T>(OP)?, rv.view::<T>(OP)?);
        let (out, lse) = attention_forward(&gpu, qkv, seg.as_ref().map(GpuView::from), dims)?;
        let out = Tensor::from_gpu(on, out, q.shape().clone());
        let rows = lse.len();
        let backward = AttentionBackward {
            qkv: [q.clone(), k.clone(), v.clone()],
            out: Some(out.clone()),
            lse: Tensor::from_gpu(on, lse, [rows]),
            segments: segments.map(<[u32]>::to_vec),
            dims,
        };
        Ok(out.with_op(&[q, k, v], backward))
    })
}

/// The backward of [`attention`]: (dq, dk, dv) in the inputs' dtype, by the kernels the
/// forward chose.
pub(super) fn attention_backward_on_gpu(
    saved: &AttentionBackward,
    dout: &Tensor,
) -> Result<Vec<Option<Tensor>>> {
    const OP: &str = "attention backward";
    let [q, k, v] = &saved.qkv;
    let out = saved
        .out
        .as_ref()
        .ok_or_else(|| Error::Autograd("attention: a GPU backward without the output".into()))?;
    on_gpu_dtype!(OP, gpu_dtype_of(OP, &[q, k, v, out, dout])?, T => {
        let (rq, rk, rv) = (q.read_gpu(OP)?, k.read_gpu(OP)?, v.read_gpu(OP)?);
        let (ro, rd, rl) = (out.read_gpu(OP)?, dout.read_gpu(OP)?, saved.lse.read_gpu(OP)?);
        let gpu = rq.gpu().clone();
        let on = (rq.device(), &gpu);
        let seg = device_segments(&gpu, saved.segments.as_deref())?;
        let qkv = (rq.view::<T>(OP)?, rk.view::<T>(OP)?, rv.view::<T>(OP)?);
        let rest = (ro.view::<T>(OP)?, rl.view::<f32>(OP)?, rd.view::<T>(OP)?);
        let segments = seg.as_ref().map(GpuView::from);
        let (dq, dk, dv) = attention_backward(&gpu, qkv, rest, segments, saved.dims)?;
        Ok(vec![
            Some(Tensor::from_gpu(on, dq, q.shape().clone())),
            Some(Tensor::from_gpu(on, dk, k.shape().clone())),
            Some(Tensor::from_gpu(on, dv, v.shape().clone())),
        ])
    })
}

#[cfg(test)]
mod tests {
    use std::ops::Range;

    use super::*;
    use crate::backend::cuda::test_gpus;
    use crate::ops::attention::cpu;
    use crate::ops::test_util::assert_close_abs;
    use crate::rng::Rng;

    fn dims(
        batch: usize,
        seq: usize,
        q_heads: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> AttentionDims {
        AttentionDims {
            batch,
            seq,
            q_heads,
            kv_heads,
            head_dim,
        }
    }

    fn widen<T: GpuFloat>(v: &[T]) -> Vec<f32> {
        v.iter().map(|x| x.to_f32()).collect()
    }

    fn random<T: GpuFloat>(rng: &mut Rng, n: usize) -> Vec<T> {
        rng.normal_vec(n, 1.0)
            .into_iter()
            .map(T::from_f32)
            .collect()
    }

    /// Random q, k, v and dout of `d`.
    fn random_inputs<T: GpuFloat>(rng: &mut Rng, d: AttentionDims) -> [Vec<T>; 4] {
        let tokens = d.batch * d.seq;
        let q = random(rng, tokens * d.q_heads * d.head_dim);
        let k = random(rng, tokens * d.kv_heads * d.head_dim);
        let v = random(rng, tokens * d.kv_heads * d.head_dim);
        let dout = random(rng, q.len());
        [q, k, v, dout]
    }

    /// The segment ids of `batch` rows of `seq` tokens, a new sequence at each of `starts`
    /// (and at 0) in every row; ids differ between rows.
    fn segments(batch: usize, seq: usize, starts: &[usize]) -> Vec<u32> {
        (0..batch * seq)
            .map(|t| (t / seq * 100 + starts.iter().filter(|&&s| s <= t % seq).count()) as u32)
            .collect()
    }

    /// `parts` in one buffer, each behind `pad` NaNs, and where each lies: launchers then
    /// read them as views at offsets, and a read outside its view poisons the result.
    fn upload_views<T: GpuFloat>(
        gpu: &Gpu,
        parts: &[&[T]],
        pad: usize,
    ) -> (GpuBuffer<T>, Vec<Range<usize>>) {
        let nans = || std::iter::repeat_n(T::from_f32(f32::NAN), pad);
        let mut data = Vec::new();
        let mut ranges = Vec::new();
        for part in parts {
            data.extend(nans());
            ranges.push(data.len()..data.len() + part.len());
            data.extend_from_slice(part);
        }
        data.extend(nans());
        (gpu.upload(&data).unwrap(), ranges)
    }

    fn upload_segments(gpu: &Gpu, segments: Option<&[u32]>) -> Option<GpuBuffer<i32>> {
        segments.map(|s| {
            gpu.upload(&s.iter().map(|&x| x as i32).collect::<Vec<_>>())
                .unwrap()
        })
    }

    /// The largest difference between `got` and `want`, over the largest |want| (at least 1).
    fn relative_error(got: &[f32], want: &[f32]) -> f32 {
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(1.0f32, |m, w| m.max(w.abs()));
        let worst = got
            .iter()
            .zip(want)
            .fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
        worst / scale
    }

    /// out, lse, dq, dk and dv of the CPU reference on `inputs` (widened).
    fn reference<T: GpuFloat>(
        [q, k, v, dout]: &[Vec<T>; 4],
        segments: Option<&[u32]>,
        d: AttentionDims,
    ) -> [Vec<f32>; 5] {
        let (q, k, v) = (widen(q), widen(k), widen(v));
        let (out, lse) = cpu::attention_forward((&q, &k, &v), segments, d, cpu::ROW_BLOCK);
        let (dq, dk, dv) = cpu::attention_backward(
            (&q, &k, &v),
            segments,
            d,
            &lse,
            &widen(dout),
            cpu::ROW_BLOCK,
        );
        [out, lse, dq, dk, dv]
    }

    /// The flash kernels (bf16, tensor cores) against the f32 CPU reference on the same
    /// bf16-rounded inputs, every tensor read as a view inside one buffer. Outputs are
    /// rounded to bf16 (2^-8 relative) and P and dS are rounded to bf16 before their
    /// products, as in every flash attention: 2 % of the largest value bounds both with
    /// room; a layout or masking mistake is off by O(1). lse is f32 from exact products
    /// of bf16 inputs.
    fn check_flash(d: AttentionDims, segments: Option<&[u32]>, seed: u64) {
        let inputs = random_inputs::<bf16>(&mut Rng::new(seed), d);
        let [out_ref, lse_ref, dq_ref, dk_ref, dv_ref] = reference(&inputs, segments, d);
        for gpu in test_gpus() {
            let what = format!("{} {d:?} packed {}", gpu.describe(), segments.is_some());
            let [q, k, v, dout] = &inputs;
            let (buffer, at) = upload_views(&gpu, &[q, k, v, dout], 8);
            let view = |i: usize| buffer.view(at[i].clone()).unwrap();
            let seg_gpu = upload_segments(&gpu, segments);
            let seg_view = seg_gpu.as_ref().map(GpuView::from);
            let (out, lse) =
                flash::forward(&gpu, (view(0), view(1), view(2)), seg_view, d).unwrap();
            let err = relative_error(&widen(&gpu.download(&out).unwrap()), &out_ref);
            assert!(err < 2e-2, "out {what}: relative error {err}");
            let err = relative_error(&gpu.download(&lse).unwrap(), &lse_ref);
            assert!(err < 1e-5, "lse {what}: relative error {err}");
            let saved = ((&out).into(), (&lse).into(), view(3));
            let (dq, dk, dv) =
                flash::backward(&gpu, (view(0), view(1), view(2)), saved, seg_view, d).unwrap();
            for (name, got, want) in [
                ("dq", dq, &dq_ref),
                ("dk", dk, &dk_ref),
                ("dv", dv, &dv_ref),
            ] {
                let err = relative_error(&widen(&gpu.download(&got).unwrap()), want);
                assert!(err < 2e-2, "{name} {what}: relative error {err}");
            }
        }
    }

    #[test]
    fn flash_matches_the_cpu_reference_for_one_token() {
        check_flash(dims(1, 1, 2, 1, 64), None, 1);
    }

    /// 70 and 97 are multiples of neither the forward's 64-row tiles nor the backward's
    /// 32: every kernel has a partial last tile, and several full ones before it.
    #[test]
    fn flash_matches_the_cpu_reference_over_partial_tiles() {
        check_flash(dims(1, 70, 2, 1, 64), None, 2);
        check_flash(dims(1, 97, 2, 1, 64), None, 3);
    }

    #[test]
    fn flash_matches_the_cpu_reference_with_gqa_7_to_1() {
        check_flash(dims(1, 70, 14, 2, 64), None, 4);
    }

    /// Sequences start at 9 (inside the first tile of every kernel), 45 (inside the
    /// second backward tile) and 70 (inside the second forward and third backward tiles).
    #[test]
    fn flash_matches_the_cpu_reference_with_packed_sequences_starting_mid_tile() {
        let d = dims(1, 97, 4, 1, 64);
        check_flash(d, Some(&segments(1, 97, &[9, 45, 70])), 5);
    }

    #[test]
    fn flash_matches_the_cpu_reference_at_head_dim_128() {
        check_flash(dims(1, 70, 2, 1, 128), None, 6);
        let d = dims(1, 45, 2, 2, 128);
        check_flash(d, Some(&segments(1, 45, &[20])), 7);
    }

    /// Two rows with different packings: a kernel that read row 0's ids (or keys) for
    /// row 1 would mask (or attend) the wrong tokens.
    #[test]
    fn flash_matches_the_cpu_reference_with_batch_2() {
        check_flash(dims(2, 45, 4, 2, 64), None, 8);
        let mut packed = segments(2, 45, &[]);
        packed[45..].copy_from_slice(&segments(1, 45, &[13, 33]));
        check_flash(dims(2, 45, 4, 2, 64), Some(&packed), 9);
    }

    #[test]
    fn flash_refuses_other_head_dims() {
        let gpu = Gpu::emulated().unwrap();
        let d = dims(1, 4, 2, 1, 32);
        let q = gpu.zeros::<bf16>(4 * 2 * 32).unwrap();
        let kv = gpu.zeros::<bf16>(4 * 32).unwrap();
        let err =
            flash::forward(&gpu, ((&q).into(), (&kv).into(), (&kv).into()), None, d).unwrap_err();
        assert!(err.to_string().contains("head dims 64 and 128"), "{err}");
    }

    /// A view at an odd element would have the kernels load 32-bit words from 2-byte
    /// aligned addresses, which a GPU refuses (the emulator would not notice).
    #[test]
    fn flash_refuses_views_at_odd_offsets() {
        let gpu = Gpu::emulated().unwrap();
        let d = dims(1, 2, 1, 1, 64);
        let buffer = gpu.zeros::<bf16>(1 + 2 * 64).unwrap();
        let (odd, even) = (buffer.view(1..129).unwrap(), buffer.view(0..128).unwrap());
        let err = flash::forward(&gpu, (even, odd, even), None, d).unwrap_err();
        assert!(
            err.to_string().contains("k starts at an odd element"),
            "{err}"
        );
        let lse = gpu.zeros::<f32>(2).unwrap();
        let saved = (even, (&lse).into(), odd);
        let err = flash::backward(&gpu, (even, even, even), saved, None, d).unwrap_err();
        assert!(
            err.to_string().contains("dout starts at an odd element"),
            "{err}"
        );
    }

    /// f32 from the same inputs as the CPU reference: only summation order differs.
    #[test]
    fn simple_kernels_match_the_cpu_reference_in_f32_with_and_without_packing() {
        let d = dims(2, 13, 6, 2, 8);
        let inputs = random_inputs::<f32>(&mut Rng::new(10), d);
        let packed = segments(2, 13, &[5, 11]);
        for gpu in test_gpus() {
            for segs in [None, Some(&packed[..])] {
                let [out_ref, lse_ref, dq_ref, dk_ref, dv_ref] = reference(&inputs, segs, d);
                let [q, k, v, dout] = &inputs.clone().map(|x| gpu.upload(&x).unwrap());
                let seg_gpu = upload_segments(&gpu, segs);
                let seg_view = seg_gpu.as_ref().map(GpuView::from);
                let qkv = (q.into(), k.into(), v.into());
                let (out, lse) = simple_attention_forward(&gpu, qkv, seg_view, d).unwrap();
                assert_close_abs(&gpu.download(&out).unwrap(), &out_ref, 1e-5);
                assert_close_abs(&gpu.download(&lse).unwrap(), &lse_ref, 1e-5);
                let saved = ((&out).into(), (&lse).into(), dout.into());
                let (dq, dk, dv) =
                    simple_attention_backward(&gpu, qkv, saved, seg_view, d).unwrap();
                assert_close_abs(&gpu.download(&dq).unwrap(), &dq_ref, 1e-4);
                assert_close_abs(&gpu.download(&dk).unwrap(), &dk_ref, 1e-4);
                assert_close_abs(&gpu.download(&dv).unwrap(), &dv_ref, 1e-4);
            }
        }
    }

    /// bf16 storage, f32 arithmetic: the forward's output is off by its bf16 rounding
    /// (half an ulp, at most 2^-8 relative); lse is not rounded. The gradients are rounded
    /// once, and their delta reads the rounded output: 1 % of the largest gradient.
    #[test]
    fn simple_kernels_match_the_cpu_reference_in_bf16() {
        let d = dims(1, 37, 4, 1, 16);
        let inputs = random_inputs::<bf16>(&mut Rng::new(11), d);
        let packed = segments(1, 37, &[20]);
        for gpu in test_gpus() {
            for segs in [None, Some(&packed[..])] {
                let [out_ref, lse_ref, dq_ref, dk_ref, dv_ref] = reference(&inputs, segs, d);
                let [q, k, v, dout] = &inputs.clone().map(|x| gpu.upload(&x).unwrap());
                let seg_gpu = upload_segments(&gpu, segs);
                let seg_view = seg_gpu.as_ref().map(GpuView::from);
                let qkv = (q.into(), k.into(), v.into());
                let (out, lse) = simple_attention_forward(&gpu, qkv, seg_view, d).unwrap();
                for (a, b) in widen(&gpu.download(&out).unwrap()).iter().zip(&out_ref) {
                    assert!((a - b).abs() <= 4e-3 * b.abs() + 1e-5, "{a} vs {b}");
                }
                assert_close_abs(&gpu.download(&lse).unwrap(), &lse_ref, 1e-5);
                let saved = ((&out).into(), (&lse).into(), dout.into());
                let (dq, dk, dv) =
                    simple_attention_backward(&gpu, qkv, saved, seg_view, d).unwrap();
                for (name, got, want) in [
                    ("dq", dq, &dq_ref),
                    ("dk", dk, &dk_ref),
                    ("dv", dv, &dv_ref),
                ] {
                    let err = relative_error(&widen(&gpu.download(&got).unwrap()), want);
                    assert!(err < 1e-2, "{name}: relative error {err}");
                }
            }
        }
    }

    /// The bytes of every output of `launchers`' forward, then of their backward on the
    /// forward's out and lse: out, lse, dq, dk, dv.
    fn output_bytes<T: GpuFloat>(
        gpu: &Gpu,
        inputs: &[Vec<T>; 4],
        d: AttentionDims,
        (forward, backward): (AttentionForwardFn<T>, AttentionBackwardFn<T>),
    ) -> Vec<Vec<u8>> {
        let [q, k, v, dout] = &inputs.clone().map(|x| gpu.upload(&x).unwrap());
        let qkv = (q.into(), k.into(), v.into());
        let (out, lse) = forward(gpu, qkv, None, d).unwrap();
        let saved = ((&out).into(), (&lse).into(), dout.into());
        let (dq, dk, dv) = backward(gpu, qkv, saved, None, d).unwrap();
        let bytes = |b: &GpuBuffer<T>| bytemuck::cast_slice(&gpu.download(b).unwrap()).to_vec();
        let lse = bytemuck::cast_slice(&gpu.download(&lse).unwrap()).to_vec();
        vec![bytes(&out), lse, bytes(&dq), bytes(&dk), bytes(&dv)]
    }

    type Launchers<T> = (AttentionForwardFn<T>, AttentionBackwardFn<T>);

    fn choice<T: AttentionFloat>() -> Launchers<T> {
        (attention_forward, attention_backward)
    }

    fn simple<T: GpuFloat>() -> Launchers<T> {
        (simple_attention_forward, simple_attention_backward)
    }

    /// Which kernels the choice ran, told by the bytes of their outputs: the flash kernels
    /// round P and dS to bf16 and sum in another order, so out, dq, dk and dv differ from
    /// the simple kernels' in some bits, and equal those of the kernels that ran.
    #[test]
    fn the_choice_runs_flash_for_bf16_at_head_dim_64_and_simple_otherwise() {
        let mut rng = Rng::new(12);
        for gpu in test_gpus() {
            let d = dims(1, 37, 2, 1, 64);
            let inputs = random_inputs::<bf16>(&mut rng, d);
            let chosen = output_bytes(&gpu, &inputs, d, choice());
            let flash_bytes = output_bytes(&gpu, &inputs, d, (flash::forward, flash::backward));
            let simple_bytes = output_bytes(&gpu, &inputs, d, simple());
            assert!(chosen == flash_bytes, "bf16 D64 chose the flash kernels");
            for (i, name) in [(0, "out"), (2, "dq"), (3, "dk"), (4, "dv")] {
                assert_ne!(
                    chosen[i], simple_bytes[i],
                    "bf16 D64 {name} is not the simple kernels'"
                );
            }
            let d = dims(1, 37, 2, 1, 8);
            let inputs = random_inputs::<bf16>(&mut rng, d);
            let chosen = output_bytes(&gpu, &inputs, d, choice());
            assert!(
                chosen == output_bytes(&gpu, &inputs, d, simple()),
                "bf16 D8 chose simple"
            );
            let d = dims(1, 37, 2, 1, 64);
            let inputs = random_inputs::<f32>(&mut rng, d);
            let chosen = output_bytes(&gpu, &inputs, d, choice());
            assert!(
                chosen == output_bytes(&gpu, &inputs, d, simple()),
                "f32 D64 chose simple"
            );
        }
    }

    #[test]
    fn groups_that_do_not_divide_are_errors() {
        let gpu = Gpu::emulated().unwrap();
        let q = gpu.zeros::<f32>(24).unwrap();
        let kv = gpu.zeros::<f32>(16).unwrap();
        let qkv = ((&q).into(), (&kv).into(), (&kv).into());
        let err = attention_forward(&gpu, qkv, None, dims(1, 2, 3, 2, 4)).unwrap_err();
        assert!(err.to_string().contains("groups"), "{err}");
    }

    #[test]
    fn simple_kernels_refuse_sequences_longer_than_their_shared_memory() {
        let gpu = Gpu::emulated().unwrap();
        let too_long = |seq: usize| {
            let d = dims(1, seq, 1, 1, 8);
            let (x, lse) = (
                gpu.zeros::<f32>(seq * 8).unwrap(),
                gpu.zeros::<f32>(seq).unwrap(),
            );
            let qkv = ((&x).into(), (&x).into(), (&x).into());
            let saved = ((&x).into(), (&lse).into(), (&x).into());
            let forward = simple_attention_forward(&gpu, qkv, None, d).err();
            let backward = simple_attention_backward(&gpu, qkv, saved, None, d).err();
            let refused = |e: Option<Error>| e.is_some_and(|e| e.to_string().contains("too long"));
            (refused(forward), refused(backward))
        };
        // 12100 scores are 48400 bytes; the backward's two rows of 6100, 48864.
        assert_eq!(too_long(12100), (true, true));
        assert_eq!(too_long(6100), (false, true));
    }
}
