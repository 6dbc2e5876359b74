//! Launchers of kernels/attention.cu: the simple exact causal GQA attention (forward with
//! the saved log-sum-exp; backward as dq then dk/dv) and its checks on every GPU.

use super::cpu::AttentionDims;
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
    if (2 * d.seq + 2 * d.head_dim) * 4 > SHARED_LIMIT {
        return Err(Error::shape(
            "attention",
            format!("sequences of {} are too long for the simple kernels", d.seq),
        ));
    }
    Ok(())
}

fn blocks(d: AttentionDims, heads: usize) -> Result<u32> {
    u32::try_from(d.batch * heads * d.seq).map_err(|_| Error::shape("attention", "too many rows"))
}

/// `(out, lse)`: out [B, T, Hq, D] and the log-sum-exp of every score row [B, Hq, T].
pub fn attention_forward<T: GpuFloat>(
    gpu: &Gpu,
    (q, k, v): (&GpuBuffer<T>, &GpuBuffer<T>, &GpuBuffer<T>),
    segments: Option<&GpuBuffer<i32>>,
    dims: AttentionDims,
) -> Result<(GpuBuffer<T>, GpuBuffer<f32>)> {
    check(q, k, v, segments, dims)?;
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
    check(q, k, v, segments, dims)?;
    expect_len("attention_backward", "out", out, q.len())?;
    expect_len("attention_backward", "the output gradient", dout, q.len())?;
    expect_len(
        "attention_backward",
        "lse",
        lse,
        dims.batch * dims.q_heads * dims.seq,
    )?;
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
