//! Causal GQA attention on a GPU: `attention_forward` / `attention_backward` run the flash
//! kernels (kernels/flash_attention.cu, tensor cores) for bf16 at head dims 64 and 128,
//! and otherwise the simple exact kernels of kernels/attention.cu (forward with the saved
//! log-sum-exp; backward as dq then dk/dv), which also stay callable as the on-device
//! reference. Their checks on every GPU are below.

use std::any::Any;

use super::cpu::AttentionDims;
use super::flash;
use crate::backend::cuda::{expect_len, Gpu, GpuBuffer, GpuFloat, KernelArg, LaunchConfig};
use crate::{Error, Result};

const THREADS: u32 = 128;
/// Dynamic shared memory a block may use without opting in, on every architecture.
const SHARED_LIMIT: usize = 48 * 1024;

/// The kernels' trailing shape parameters: batch, seq, heads, kv heads, head dim, scale.
fn dims_args(dims: AttentionDims) -> Result<[KernelArg; 6]> {
    let scale = (1.0 / (dims.head_dim as f64).sqrt()) as f32;
    Ok([
        KernelArg::int(dims.batch)?,
        KernelArg::int(dims.seq)?,
        KernelArg::int(dims.q_heads)?,
        KernelArg::int(dims.kv_heads)?,
        KernelArg::int(dims.head_dim)?,
        KernelArg::F32(scale),
    ])
}

fn segments_arg(segments: Option<&GpuBuffer<i32>>) -> KernelArg {
    segments.map_or(KernelArg::Ptr(0), KernelArg::input)
}

fn check<T: GpuFloat>(
    q: &GpuBuffer<T>,
    k: &GpuBuffer<T>,
    v: &GpuBuffer<T>,
    segments: Option<&GpuBuffer<i32>>,
    d: AttentionDims,
) -> Result<()> {
    if d.kv_heads == 0 || !d.q_heads.is_multiple_of(d.kv_heads) || d.head_dim == 0 {
        return Err(Error::shape(
            "attention",
            format!(
                "{} query heads are not groups of {} kv heads",
                d.q_heads, d.kv_heads
            ),
        ));
    }
    let tokens = d.batch * d.seq;
    expect_len("attention", "q", q, tokens * d.q_heads * d.head_dim)?;
    expect_len("attention", "k", k, tokens * d.kv_heads * d.head_dim)?;
    expect_len("attention", "v", v, tokens * d.kv_heads * d.head_dim)?;
    if let Some(s) = segments {
        expect_len("attention", "segments", s, tokens)?;
    }
    Ok(())
}

/// The simple kernels keep score rows in shared memory, which bounds the sequence.
fn check_simple_length(d: AttentionDims) -> Result<()> {
    if (2 * d.seq + 2 * d.head_dim) * 4 > SHARED_LIMIT {
        return Err(Error::shape(
            "attention",
            format!("sequences of {} are too long for the simple kernels", d.seq),
        ));
    }
    Ok(())
}

fn check_backward<T: GpuFloat>(
    q: &GpuBuffer<T>,
    (out, lse, dout): (&GpuBuffer<T>, &GpuBuffer<f32>, &GpuBuffer<T>),
    segments: Option<&GpuBuffer<i32>>,
    dims: AttentionDims,
    k: &GpuBuffer<T>,
    v: &GpuBuffer<T>,
) -> Result<()> {
    check(q, k, v, segments, dims)?;
    expect_len("attention_backward", "out", out, q.len())?;
    expect_len("attention_backward", "the output gradient", dout, q.len())?;
    let rows = dims.batch * dims.q_heads * dims.seq;
    expect_len("attention_backward", "lse", lse, rows)
}

fn blocks(d: AttentionDims, heads: usize) -> Result<u32> {
    u32::try_from(d.batch * heads * d.seq).map_err(|_| Error::shape("attention", "too many rows"))
}

/// `value` as the type it is: `A` and `B` are the same type, which only the caller knew
/// (the generic launchers below, on finding T is bf16).
fn same_type<A: 'static, B: 'static>(value: A) -> B {
    *(Box::new(value) as Box<dyn Any>)
        .downcast::<B>()
        .unwrap_or_else(|_| unreachable!("called only when the types are the same"))
}

/// The bf16 view of a buffer of `T`, when `T` is bf16.
fn as_bf16<T: GpuFloat>(buffer: &GpuBuffer<T>) -> Option<&GpuBuffer<half::bf16>> {
    (buffer as &dyn Any).downcast_ref()
}

/// `(out, lse)`: out [B, T, Hq, D] and the log-sum-exp of every score row [B, Hq, T].
pub fn attention_forward<T: GpuFloat>(
    gpu: &Gpu,
    (q, k, v): (&GpuBuffer<T>, &GpuBuffer<T>, &GpuBuffer<T>),
    segments: Option<&GpuBuffer<i32>>,
    dims: AttentionDims,
) -> Result<(GpuBuffer<T>, GpuBuffer<f32>)> {
    if let (Some(q16), Some(k16), Some(v16), true) =
        (as_bf16(q), as_bf16(k), as_bf16(v), flash::supports(dims))
    {
        check(q, k, v, segments, dims)?;
        let (out, lse) = flash::forward(gpu, (q16, k16, v16), segments_arg(segments), dims)?;
        return Ok((same_type(out), lse));
    }
    simple_attention_forward(gpu, (q, k, v), segments, dims)
}

/// The simple kernels' backward (sequences up to ~6k).
pub fn simple_attention_backward<T: GpuFloat>(
    gpu: &Gpu,
    (q, k, v): (&GpuBuffer<T>, &GpuBuffer<T>, &GpuBuffer<T>),
    (out, lse, dout): (&GpuBuffer<T>, &GpuBuffer<f32>, &GpuBuffer<T>),
    segments: Option<&GpuBuffer<i32>>,
    dims: AttentionDims,
) -> Result<(GpuBuffer<T>, GpuBuffer<T>, GpuBuffer<T>)> {
    let flash_inputs = (
        as_bf16(q),
        as_bf16(k),
        as_bf16(v),
        as_bf16(out),
        as_bf16(dout),
    );
    if let (Some(q16), Some(k16), Some(v16), Some(out16), Some(dout16)) = flash_inputs {
        if flash::supports(dims) {
            check_backward(q, (out, lse, dout), segments, dims, k, v)?;
            check_simple_length(dims)?;
            let (dq, dk, dv) = flash::backward(
                gpu,
                (q16, k16, v16),
                (out16, lse, dout16),
                segments_arg(segments),
                dims,
            )?;
            return Ok((same_type(dq), same_type(dk), same_type(dv)));
        }
    }
    simple_attention_backward(gpu, (q, k, v), (out, lse, dout), segments, dims)
}

/// The simple kernels' forward (any dtype and head dim; sequences up to ~12k).
pub fn simple_attention_forward<T: GpuFloat>(
    gpu: &Gpu,
    (q, k, v): (&GpuBuffer<T>, &GpuBuffer<T>, &GpuBuffer<T>),
    segments: Option<&GpuBuffer<i32>>,
    dims: AttentionDims,
) -> Result<(GpuBuffer<T>, GpuBuffer<f32>)> {
    check(q, k, v, segments, dims)?;
    check_simple_length(dims)?;
    let mut out = gpu.zeros::<T>(q.len())?;
    let mut lse = gpu.zeros::<f32>(dims.batch * dims.q_heads * dims.seq)?;
    let mut args = vec![
        KernelArg::output(&mut out),
        KernelArg::output(&mut lse),
        KernelArg::input(q),
        KernelArg::input(k),
        KernelArg::input(v),
        segments_arg(segments),
    ];
    args.extend(dims_args(dims)?);
    let cfg = LaunchConfig::linear(blocks(dims, dims.q_heads)?, THREADS, dims.seq * 4);
    // SAFETY: buffer lengths checked against dims; the scores fit the shared memory.
    unsafe { gpu.launch(&format!("attention_forward_{}", T::SUFFIX), cfg, &args)? };
    Ok((out, lse))
}

/// `(dq, dk, dv)` from the forward's inputs, output and lse, and the output gradient.
pub fn attention_backward<T: GpuFloat>(
    gpu: &Gpu,
    (q, k, v): (&GpuBuffer<T>, &GpuBuffer<T>, &GpuBuffer<T>),
    (out, lse, dout): (&GpuBuffer<T>, &GpuBuffer<f32>, &GpuBuffer<T>),
    segments: Option<&GpuBuffer<i32>>,
    dims: AttentionDims,
) -> Result<(GpuBuffer<T>, GpuBuffer<T>, GpuBuffer<T>)> {
    check_backward(q, (out, lse, dout), segments, dims, k, v)?;
    let mut dq = gpu.zeros::<T>(q.len())?;
    let mut delta = gpu.zeros::<f32>(lse.len())?;
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
    let cfg = LaunchConfig::linear(blocks(dims, dims.q_heads)?, THREADS, dims.seq * 4);
    // SAFETY: as the forward; delta has one entry per score row.
    unsafe { gpu.launch(&format!("attention_backward_dq_{}", T::SUFFIX), cfg, &args)? };
    let (mut dk, mut dv) = (gpu.zeros::<T>(k.len())?, gpu.zeros::<T>(v.len())?);
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
    let shared = (2 * dims.seq + 2 * dims.head_dim) * 4;
    let cfg = LaunchConfig::linear(blocks(dims, dims.kv_heads)?, THREADS, shared);
    // SAFETY: as above; the shared memory holds p and ds rows and two accumulators.
    unsafe { gpu.launch(&format!("attention_backward_dkv_{}", T::SUFFIX), cfg, &args)? };
    Ok((dq, dk, dv))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::test_gpus;
    use crate::ops::attention::cpu;
    use crate::ops::test_util::assert_close_abs;
    use crate::rng::Rng;

    const DIMS: AttentionDims = AttentionDims {
        batch: 2,
        seq: 13,
        q_heads: 6,
        kv_heads: 2,
        head_dim: 8,
    };

    /// Row 0 packs three sequences; row 1 is one.
    fn segments() -> Vec<u32> {
        let mut s = vec![0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2];
        s.extend([5; 13]);
        s
    }

    #[test]
    fn f32_kernels_match_the_cpu_reference_with_and_without_packing() {
        let d = DIMS;
        let mut rng = Rng::new(8);
        let tokens = d.batch * d.seq;
        let q = rng.normal_vec(tokens * d.q_heads * d.head_dim, 1.0);
        let k = rng.normal_vec(tokens * d.kv_heads * d.head_dim, 1.0);
        let v = rng.normal_vec(tokens * d.kv_heads * d.head_dim, 1.0);
        let dout = rng.normal_vec(q.len(), 1.0);
        let packed = segments();
        for gpu in test_gpus() {
            for segs in [None, Some(&packed[..])] {
                let (out_ref, lse_ref) =
                    cpu::attention_forward((&q, &k, &v), segs, d, cpu::ROW_BLOCK);
                let (dq_ref, dk_ref, dv_ref) =
                    cpu::attention_backward((&q, &k, &v), segs, d, &lse_ref, &dout, cpu::ROW_BLOCK);
                let ids: Option<Vec<i32>> = segs.map(|s| s.iter().map(|&x| x as i32).collect());
                let seg_gpu = ids.map(|s| gpu.upload(&s).unwrap());
                let (gq, gk, gv) = (
                    gpu.upload(&q).unwrap(),
                    gpu.upload(&k).unwrap(),
                    gpu.upload(&v).unwrap(),
                );
                let (out, lse) =
                    attention_forward(&gpu, (&gq, &gk, &gv), seg_gpu.as_ref(), d).unwrap();
                assert_close_abs(&gpu.download(&out).unwrap(), &out_ref, 1e-5);
                assert_close_abs(&gpu.download(&lse).unwrap(), &lse_ref, 1e-5);
                let gdout = gpu.upload(&dout).unwrap();
                let (dq, dk, dv) = attention_backward(
                    &gpu,
                    (&gq, &gk, &gv),
                    (&out, &lse, &gdout),
                    seg_gpu.as_ref(),
                    d,
                )
                .unwrap();
                assert_close_abs(&gpu.download(&dq).unwrap(), &dq_ref, 1e-4);
                assert_close_abs(&gpu.download(&dk).unwrap(), &dk_ref, 1e-4);
                assert_close_abs(&gpu.download(&dv).unwrap(), &dv_ref, 1e-4);
            }
        }
    }

    #[test]
    fn bf16_forward_matches_within_rounding() {
        let d = AttentionDims {
            batch: 1,
            seq: 37,
            q_heads: 4,
            kv_heads: 1,
            head_dim: 16,
        };
        let mut rng = Rng::new(9);
        let round =
            |v: Vec<f32>| -> Vec<half::bf16> { v.into_iter().map(half::bf16::from_f32).collect() };
        let widen = |v: &[half::bf16]| -> Vec<f32> { v.iter().map(|h| h.to_f32()).collect() };
        let q = round(rng.normal_vec(d.seq * d.q_heads * d.head_dim, 1.0));
        let k = round(rng.normal_vec(d.seq * d.head_dim, 1.0));
        let v = round(rng.normal_vec(d.seq * d.head_dim, 1.0));
        let (out_ref, _) = cpu::attention_forward(
            (&widen(&q), &widen(&k), &widen(&v)),
            None,
            d,
            cpu::ROW_BLOCK,
        );
        for gpu in test_gpus() {
            let (gq, gk, gv) = (
                gpu.upload(&q).unwrap(),
                gpu.upload(&k).unwrap(),
                gpu.upload(&v).unwrap(),
            );
            let (out, _) = attention_forward(&gpu, (&gq, &gk, &gv), None, d).unwrap();
            for (a, b) in widen(&gpu.download(&out).unwrap()).iter().zip(&out_ref) {
                assert!((a - b).abs() <= 1e-2 * b.abs() + 2e-3, "{a} vs {b}");
            }
        }
    }

    /// The largest difference between `got` and `want`, over the largest |want| (at least 1).
    fn relative_error(got: &[f32], want: &[f32]) -> f32 {
        let scale = want.iter().fold(1.0f32, |m, w| m.max(w.abs()));
        let worst = got
            .iter()
            .zip(want)
            .fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
        worst / scale
    }

    /// The flash kernels (bf16, tensor cores) against the f32 CPU reference on the same
    /// bf16-rounded inputs. Their outputs are rounded to bf16 (2^-8 relative) and P is
    /// rounded to bf16 before P · V, as in every flash attention: 2 % of the largest value
    /// bounds both with room; a layout or masking mistake is off by O(1).
    #[test]
    fn flash_kernels_match_the_cpu_reference() {
        let widen = |v: &[half::bf16]| -> Vec<f32> { v.iter().map(|h| h.to_f32()).collect() };
        // (dims, packed): one token; GQA 7:1 over two forward tiles, not a multiple of
        // either tile; head dim 128; three packed sequences, one starting mid-tile.
        let cases = [
            (
                AttentionDims {
                    batch: 1,
                    seq: 1,
                    q_heads: 2,
                    kv_heads: 1,
                    head_dim: 64,
                },
                false,
            ),
            (
                AttentionDims {
                    batch: 2,
                    seq: 70,
                    q_heads: 14,
                    kv_heads: 2,
                    head_dim: 64,
                },
                false,
            ),
            (
                AttentionDims {
                    batch: 1,
                    seq: 37,
                    q_heads: 2,
                    kv_heads: 2,
                    head_dim: 128,
                },
                false,
            ),
            (
                AttentionDims {
                    batch: 1,
                    seq: 45,
                    q_heads: 4,
                    kv_heads: 1,
                    head_dim: 64,
                },
                true,
            ),
        ];
        let mut rng = Rng::new(12);
        for (d, packed) in cases {
            let tokens = d.batch * d.seq;
            let mut round = |n: usize| -> Vec<half::bf16> {
                rng.normal_vec(n, 1.0)
                    .into_iter()
                    .map(half::bf16::from_f32)
                    .collect()
            };
            let q = round(tokens * d.q_heads * d.head_dim);
            let k = round(tokens * d.kv_heads * d.head_dim);
            let v = round(tokens * d.kv_heads * d.head_dim);
            let dout = round(q.len());
            // Sequences of 9, 26 and 10 tokens: the second starts inside the first tile.
            let segs: Option<Vec<u32>> = packed.then(|| {
                (0..d.seq as u32)
                    .map(|i| u32::from(i >= 9) + u32::from(i >= 35))
                    .collect()
            });
            let (qf, kf, vf) = (widen(&q), widen(&k), widen(&v));
            let (out_ref, lse_ref) =
                cpu::attention_forward((&qf, &kf, &vf), segs.as_deref(), d, cpu::ROW_BLOCK);
            let grads_ref = cpu::attention_backward(
                (&qf, &kf, &vf),
                segs.as_deref(),
                d,
                &lse_ref,
                &widen(&dout),
                cpu::ROW_BLOCK,
            );
            for gpu in test_gpus() {
                let ids: Option<Vec<i32>> =
                    segs.as_ref().map(|s| s.iter().map(|&x| x as i32).collect());
                let seg_gpu = ids.map(|s| gpu.upload(&s).unwrap());
                let up = |x: &[half::bf16]| gpu.upload(x).unwrap();
                let (gq, gk, gv) = (up(&q), up(&k), up(&v));
                let (out, lse) =
                    attention_forward(&gpu, (&gq, &gk, &gv), seg_gpu.as_ref(), d).unwrap();
                let what = format!("{d:?} packed {packed}");
                assert!(
                    relative_error(&widen(&gpu.download(&out).unwrap()), &out_ref) < 2e-2,
                    "out {what}"
                );
                assert!(
                    relative_error(&gpu.download(&lse).unwrap(), &lse_ref) < 1e-4,
                    "lse {what}"
                );
                let (dq, dk, dv) = attention_backward(
                    &gpu,
                    (&gq, &gk, &gv),
                    (&out, &lse, &up(&dout)),
                    seg_gpu.as_ref(),
                    d,
                )
                .unwrap();
                for (name, got, want) in [
                    ("dq", dq, &grads_ref.0),
                    ("dk", dk, &grads_ref.1),
                    ("dv", dv, &grads_ref.2),
                ] {
                    let err = relative_error(&widen(&gpu.download(&got).unwrap()), want);
                    assert!(err < 2e-2, "{name} {what}: relative error {err}");
                }
            }
        }
    }

    #[test]
    fn groups_that_do_not_divide_are_errors() {
        let gpu = Gpu::emulated().unwrap();
        let d = AttentionDims {
            batch: 1,
            seq: 2,
            q_heads: 3,
            kv_heads: 2,
            head_dim: 4,
        };
        let q = gpu.zeros::<f32>(24).unwrap();
        let kv = gpu.zeros::<f32>(16).unwrap();
        let err = attention_forward(&gpu, (&q, &kv, &kv), None, d).unwrap_err();
        assert!(err.to_string().contains("groups"), "{err}");
    }
}
