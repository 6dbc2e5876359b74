//! Launchers of the optimizer's kernels: kernels/adamw.cu (AdamW over every parameter in
//! one launch, writing the bf16 compute copy in the same pass) and kernels/grad_norm.cu
//! (the global gradient norm and the clip factor, which AdamW reads on the device).
//!
//! Parameters live in flat buffers: the f32 master weights, their bf16 copy, the f32
//! gradients and the two moments, all of the same length, each parameter at the same
//! offset in every one (kernels/adamw.cu says why). An [`AdamwPlan`] lists the parameters
//! to update, split into chunks of [`CHUNK`] elements, one block each; it is built once
//! per layout and kept on the device.

use bytemuck::{Pod, Zeroable};
use half::bf16;

use super::adamw::{decay_factor, Coefficients};
use super::AdamWConfig;
use crate::backend::cuda::{
    expect_len, Gpu, GpuBuffer, GpuView, GpuViewMut, KernelArg, LaunchConfig,
};
use crate::{Error, Result};

/// Elements one block of adamw_update handles at most: small enough for tens of
/// thousands of equal blocks at Qwen2.5-0.5B's size (an even spread over the SMs, little
/// tail), large enough that the table (16 bytes a chunk) is noise.
pub const CHUNK: usize = 16384;
const ADAMW_THREADS: u32 = 256;
/// grad_norm_partial's blocks at most, and so the partials the final block sums (16 a
/// thread): about four waves of an H100 (1056 resident) or an A100 (864), so that the last,
/// partial wave costs little on either.
const NORM_BLOCKS: usize = 4096;
const NORM_THREADS: u32 = 256;

/// Where one parameter lies in the flat buffers, and whether it gets weight decay
/// (`default_decay` of its name, as the CPU optimizer decides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlatSegment {
    pub offset: usize,
    pub len: usize,
    pub decay: bool,
}

/// One row of the chunk table, as kernels/adamw.cu's `AdamwChunk`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AdamwChunk {
    offset: u64,
    len: u32,
    decay: u32,
}

// SAFETY: plain integers, 16 bytes with no padding (8 + 4 + 4, alignment 8); every bit
// pattern is a valid value.
unsafe impl Zeroable for AdamwChunk {}
// SAFETY: as above.
unsafe impl Pod for AdamwChunk {}

/// The chunk table of a flat layout, on the device.
pub struct AdamwPlan {
    chunks: GpuBuffer<AdamwChunk>,
    flat_len: usize,
}

impl AdamwPlan {
    /// The table for the parameters `segments` of flat buffers of `flat_len` elements.
    /// Segments must lie inside the buffers and must not overlap (two blocks would update
    /// the same element); elements in no segment are never touched. A segment whose
    /// offset is a multiple of 4 elements takes the kernel's 16-byte loads; any other is
    /// updated element by element.
    pub fn new(gpu: &Gpu, segments: &[FlatSegment], flat_len: usize) -> Result<AdamwPlan> {
        let mut sorted = segments.to_vec();
        sorted.sort_by_key(|s| s.offset);
        let mut end = 0;
        for s in &sorted {
            if s.offset < end || s.offset.checked_add(s.len).is_none_or(|e| e > flat_len) {
                return Err(Error::shape(
                    "AdamwPlan",
                    format!(
                        "segment {s:?} overlaps the one before it (ending at {end}) or \
                         passes the end of the {flat_len}-element buffers"
                    ),
                ));
            }
            end = s.offset + s.len;
        }
        let chunks: Vec<AdamwChunk> = segments
            .iter()
            .flat_map(|s| {
                (0..s.len).step_by(CHUNK).map(move |start| AdamwChunk {
                    offset: (s.offset + start) as u64,
                    len: CHUNK.min(s.len - start) as u32,
                    decay: s.decay as u32,
                })
            })
            .collect();
        Ok(AdamwPlan {
            chunks: gpu.upload(&chunks)?,
            flat_len,
        })
    }

    /// The length of the flat buffers the plan is for.
    pub fn flat_len(&self) -> usize {
        self.flat_len
    }
}

/// The flat buffers one AdamW step reads and writes.
pub struct AdamwBuffers<'a> {
    /// The f32 master weights.
    pub params: GpuViewMut<'a, f32>,
    /// Their bf16 copy for the forward and backward, rewritten from the new weights, when
    /// the model computes in bf16.
    pub params_bf16: Option<GpuViewMut<'a, bf16>>,
    pub exp_avg: GpuViewMut<'a, f32>,
    pub exp_avg_sq: GpuViewMut<'a, f32>,
    pub grads: GpuView<'a, f32>,
}

/// One AdamW step over every parameter of `plan`, as `AdamW::step` computes it: `step`
/// is the step's number, 1 for the first (the bias corrections use it), `lr` the
/// scheduled learning rate. `clip`, [`grad_norm`]'s output, scales every gradient by its
/// factor as it is read; when its norm is not finite the kernel changes nothing (the
/// trainer skips such a step, so the caller must then not count it).
pub fn adamw_update(
    gpu: &Gpu,
    plan: &AdamwPlan,
    buffers: AdamwBuffers<'_>,
    config: &AdamWConfig,
    step: u64,
    lr: f32,
    clip: Option<&GpuBuffer<f32>>,
) -> Result<()> {
    let n = plan.flat_len;
    let what = "AdamW update";
    let AdamwBuffers {
        params,
        params_bf16,
        exp_avg,
        exp_avg_sq,
        grads,
    } = buffers;
    expect_len(what, "the parameters", &params, n)?;
    if let Some(copy) = &params_bf16 {
        expect_len(what, "the bf16 parameters", copy, n)?;
    }
    expect_len(what, "exp_avg", &exp_avg, n)?;
    expect_len(what, "exp_avg_sq", &exp_avg_sq, n)?;
    expect_len(what, "the gradients", &grads, n)?;
    if let Some(clip) = clip {
        expect_len(what, "the clip buffer ([norm, factor])", clip, 2)?;
    }
    if step == 0 {
        return Err(Error::shape(
            what,
            "steps count from 1 (step 0 has no bias correction)",
        ));
    }
    if plan.chunks.is_empty() {
        return Ok(());
    }
    let c = Coefficients::new(config, step, lr);
    let args = [
        KernelArg::output(params),
        params_bf16.map_or(KernelArg::Ptr(0), KernelArg::output),
        KernelArg::output(exp_avg),
        KernelArg::output(exp_avg_sq),
        KernelArg::input(grads),
        KernelArg::input(&plan.chunks),
        clip.map_or(KernelArg::Ptr(0), KernelArg::input),
        KernelArg::F32(c.one_minus_beta1),
        KernelArg::F32(c.beta2),
        KernelArg::F32(c.one_minus_beta2),
        KernelArg::F32(c.bias_correction2_sqrt),
        KernelArg::F32(c.eps),
        KernelArg::F32(c.neg_step_size),
        KernelArg::F32(decay_factor(lr, config.weight_decay)),
    ];
    let blocks = u32::try_from(plan.chunks.len())
        .map_err(|_| Error::Gpu(format!("{} AdamW chunks in one launch", plan.chunks.len())))?;
    let cfg = LaunchConfig::linear(blocks, ADAMW_THREADS, 0);
    // SAFETY: the arguments match adamw_update's parameters; every flat buffer holds n
    // elements, and the plan's chunks lie inside n (checked when it was built); clip is
    // null or two floats; params_bf16 null or n elements.
    unsafe { gpu.launch("adamw_update", cfg, &args) }
}

/// The global L2 norm of `grads` (f64 sums, deterministic) and the factor clipping to
/// `max_norm` multiplies every gradient by, as `clip_grad_norm`: a 2-element device
/// buffer `[norm, factor]`, the factor 1 when the norm is within `max_norm` or not
/// finite. Pass it to [`adamw_update`]; download it to log the norm.
pub fn grad_norm<'g>(
    gpu: &Gpu,
    grads: impl Into<GpuView<'g, f32>>,
    max_norm: f32,
) -> Result<GpuBuffer<f32>> {
    let grads = grads.into();
    let n = grads.len();
    let blocks = n.div_ceil(NORM_THREADS as usize * 4).clamp(1, NORM_BLOCKS);
    let mut partial = gpu.alloc::<f64>(blocks)?;
    let args = [
        KernelArg::output(&mut partial),
        KernelArg::input(grads),
        KernelArg::int(n)?,
    ];
    let cfg = LaunchConfig::linear(blocks as u32, NORM_THREADS, 0);
    // SAFETY: the arguments match grad_norm_partial's parameters; partial holds one
    // double per block, grads n floats.
    unsafe { gpu.launch("grad_norm_partial", cfg, &args)? };
    let mut out = gpu.alloc::<f32>(2)?;
    let args = [
        KernelArg::output(&mut out),
        KernelArg::input(&partial),
        KernelArg::int(blocks)?,
        KernelArg::F32(max_norm),
    ];
    let cfg = LaunchConfig::linear(1, NORM_THREADS, 0);
    // SAFETY: out holds two floats, partial `blocks` doubles.
    unsafe { gpu.launch("grad_norm_finalize", cfg, &args)? };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::test_gpus;
    use crate::rng::Rng;

    /// The reference: f64 sum of squares, torch's clip coefficient in f32.
    fn norm_and_factor(values: &[f32], max_norm: f32) -> (f32, f32) {
        let norm = values
            .iter()
            .map(|&x| x as f64 * x as f64)
            .sum::<f64>()
            .sqrt() as f32;
        let coefficient = max_norm / (norm + 1e-6);
        let factor = if norm.is_finite() && coefficient < 1.0 {
            coefficient
        } else {
            1.0
        };
        (norm, factor)
    }

    /// Odd lengths (a tail after the packs), more elements than one pass of the grid,
    /// values whose f32 squares would overflow, and norms below the limit (factor 1).
    #[test]
    fn grad_norm_matches_the_f64_reference() {
        for gpu in test_gpus() {
            let mut rng = Rng::new(44);
            let cases: Vec<(Vec<f32>, f32)> = vec![
                (vec![3.0, 4.0, 12.0], 1.0),
                (rng.normal_vec(7, 1.0), 100.0),
                (rng.normal_vec(4_500_003, 0.01), 1.0),
                (vec![3e20, 4e20, 0.0, 1.0, 2.0], 1.0),
                (rng.normal_vec(4099, 1.0), f32::INFINITY),
            ];
            for (values, max_norm) in cases {
                let n = values.len();
                let (norm, factor) = norm_and_factor(&values, max_norm);
                let got = gpu
                    .download(&grad_norm(&gpu, &gpu.upload(&values).unwrap(), max_norm).unwrap())
                    .unwrap();
                assert!(
                    (got[0] - norm).abs() <= 1e-6 * norm,
                    "n {n}: {got:?} vs {norm}"
                );
                let coefficient = max_norm / (got[0] + 1e-6);
                let expected = if coefficient < 1.0 { coefficient } else { 1.0 };
                assert_eq!(got[1], expected, "n {n}: {got:?}");
                assert!((got[1] - factor).abs() <= 1e-6 * factor, "n {n}");
            }
        }
    }

    #[test]
    fn grad_norm_is_the_same_bits_every_time() {
        for gpu in test_gpus() {
            let values = gpu.upload(&Rng::new(45).normal_vec(300_001, 1.0)).unwrap();
            let run = || {
                gpu.download(&grad_norm(&gpu, &values, 1.0).unwrap())
                    .unwrap()
            };
            assert_eq!(run(), run());
        }
    }

    #[test]
    fn a_non_finite_norm_changes_nothing() {
        for gpu in test_gpus() {
            let n = 300;
            let seg = [FlatSegment {
                offset: 0,
                len: n,
                decay: true,
            }];
            let plan = AdamwPlan::new(&gpu, &seg, n).unwrap();
            let mut grads = Rng::new(43).normal_vec(n, 1.0);
            grads[3] = f32::NAN;
            let grads = gpu.upload(&grads).unwrap();
            let clip = grad_norm(&gpu, &grads, 1.0).unwrap();
            let got = gpu.download(&clip).unwrap();
            assert!(got[0].is_nan() && got[1] == 1.0, "{got:?}");
            let before = Rng::new(1).normal_vec(n, 1.0);
            let (mut w, mut m, mut v) = (
                gpu.upload(&before).unwrap(),
                gpu.zeros::<f32>(n).unwrap(),
                gpu.zeros::<f32>(n).unwrap(),
            );
            let buffers = AdamwBuffers {
                params: (&mut w).into(),
                params_bf16: None,
                exp_avg: (&mut m).into(),
                exp_avg_sq: (&mut v).into(),
                grads: (&grads).into(),
            };
            let config = AdamWConfig::default();
            adamw_update(&gpu, &plan, buffers, &config, 1, 1e-3, Some(&clip)).unwrap();
            assert_eq!(gpu.download(&w).unwrap(), before);
            assert!(gpu.download(&m).unwrap().iter().all(|&x| x == 0.0));
            assert!(gpu.download(&v).unwrap().iter().all(|&x| x == 0.0));
        }
    }

    #[test]
    fn bad_layouts_and_buffers_are_errors() {
        for gpu in test_gpus() {
            let seg = |offset, len| FlatSegment {
                offset,
                len,
                decay: true,
            };
            let overlap = AdamwPlan::new(&gpu, &[seg(0, 10), seg(9, 5)], 20)
                .err()
                .unwrap();
            assert!(overlap.to_string().contains("overlaps"), "{overlap}");
            assert!(AdamwPlan::new(&gpu, &[seg(15, 6)], 20).is_err());
            let plan = AdamwPlan::new(&gpu, &[seg(0, 10)], 20).unwrap();
            let (mut w, mut m, mut v) = (
                gpu.zeros::<f32>(20).unwrap(),
                gpu.zeros::<f32>(20).unwrap(),
                gpu.zeros::<f32>(20).unwrap(),
            );
            let mut wb = gpu.zeros::<bf16>(19).unwrap();
            let g = gpu.zeros::<f32>(20).unwrap();
            let buffers = AdamwBuffers {
                params: (&mut w).into(),
                params_bf16: Some((&mut wb).into()),
                exp_avg: (&mut m).into(),
                exp_avg_sq: (&mut v).into(),
                grads: (&g).into(),
            };
            let config = AdamWConfig::default();
            let err = adamw_update(&gpu, &plan, buffers, &config, 1, 1e-3, None)
                .err()
                .unwrap();
            assert!(err.to_string().contains("bf16"), "{err}");
        }
    }
}
