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
use crate::backend::cuda::{expect_len, Gpu, GpuBuffer, KernelArg, LaunchConfig};
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
    pub params: &'a mut GpuBuffer<f32>,
    /// Their bf16 copy for the forward and backward, rewritten from the new weights.
    pub params_bf16: &'a mut GpuBuffer<bf16>,
    pub exp_avg: &'a mut GpuBuffer<f32>,
    pub exp_avg_sq: &'a mut GpuBuffer<f32>,
    pub grads: &'a GpuBuffer<f32>,
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
    expect_len(what, "the parameters", buffers.params, n)?;
    expect_len(what, "the bf16 parameters", buffers.params_bf16, n)?;
    expect_len(what, "exp_avg", buffers.exp_avg, n)?;
    expect_len(what, "exp_avg_sq", buffers.exp_avg_sq, n)?;
    expect_len(what, "the gradients", buffers.grads, n)?;
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
        KernelArg::output(buffers.params),
        KernelArg::output(buffers.params_bf16),
        KernelArg::output(buffers.exp_avg),
        KernelArg::output(buffers.exp_avg_sq),
        KernelArg::input(buffers.grads),
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
    // null or two floats.
    unsafe { gpu.launch("adamw_update", cfg, &args) }
}

/// The global L2 norm of `grads` (f64 sums, deterministic) and the factor clipping to
/// `max_norm` multiplies every gradient by, as `clip_grad_norm`: a 2-element device
/// buffer `[norm, factor]`, the factor 1 when the norm is within `max_norm` or not
/// finite. Pass it to [`adamw_update`]; download it to log the norm.
pub fn grad_norm(gpu: &Gpu, grads: &GpuBuffer<f32>, max_norm: f32) -> Result<GpuBuffer<f32>> {
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
    use crate::autograd::Gradients;
    use crate::backend::cuda::test_gpus;
    use crate::optim::{clip_grad_norm, default_decay, AdamW};
    use crate::rng::Rng;
    use crate::Tensor;

    /// Odd sizes, laid out back to back (so most offsets are not multiples of 4 and take
    /// the element-by-element loop; the first does not), one larger than two chunks,
    /// decayed and not, and one frozen parameter the plan leaves out.
    const PARAMS: &[(&str, usize)] = &[
        ("model.layers.0.mlp.up_proj.weight", 7 * 13),
        ("model.norm.weight", 37),
        ("model.layers.0.self_attn.q_proj.bias", 5),
        ("frozen.weight", 11),
        ("lm_head.weight", 2 * CHUNK + 389),
        ("model.embed_tokens.weight", 1003),
    ];

    fn is_frozen(name: &str) -> bool {
        name.starts_with("frozen")
    }

    /// The GPU's flat buffers and the CPU optimizer's tensors, from the same values.
    struct Setup {
        params: Vec<(String, Tensor)>,
        segments: Vec<FlatSegment>,
        flat_len: usize,
    }

    fn setup(rng: &mut Rng) -> Setup {
        let mut params = Vec::new();
        let mut segments = Vec::new();
        let mut offset = 0;
        for &(name, len) in PARAMS {
            let p = Tensor::from_vec(rng.normal_vec(len, 1.0), [len]).unwrap();
            params.push((name.to_string(), p.into_param()));
            if !is_frozen(name) {
                segments.push(FlatSegment {
                    offset,
                    len,
                    decay: default_decay(name),
                });
            }
            offset += len;
        }
        Setup {
            params,
            segments,
            flat_len: offset,
        }
    }

    fn flatten(tensors: &[Tensor]) -> Vec<f32> {
        tensors.iter().flat_map(|t| t.to_vec_f32()).collect()
    }

    /// Random gradients (scaled by `scale`) for every parameter but the frozen one, as the
    /// CPU's Gradients and as the flat buffer (zeros where frozen).
    fn gradients(rng: &mut Rng, setup: &Setup, scale: f32) -> (Gradients, Vec<f32>) {
        let mut grads = Gradients::default();
        let mut flat = Vec::new();
        for (name, p) in &setup.params {
            let n = p.elem_count();
            if is_frozen(name) {
                flat.extend(std::iter::repeat_n(0.0, n));
                continue;
            }
            let g = rng.normal_vec(n, scale);
            flat.extend_from_slice(&g);
            let seed = Tensor::from_vec(g, [n]).unwrap();
            grads
                .add_from(p.reshape([n]).unwrap().backward_with(seed).unwrap())
                .unwrap();
        }
        (grads, flat)
    }

    /// Within 1e-6 of the CPU's, relatively: room for an FMA on a GPU. (The emulator
    /// has none and matches bit for bit; checked once with `to_bits` equality.)
    fn assert_relative(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len());
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs(),
                "{what}[{i}]: {g:e} vs {w:e}"
            );
        }
    }

    struct GpuState {
        params: GpuBuffer<f32>,
        params_bf16: GpuBuffer<bf16>,
        exp_avg: GpuBuffer<f32>,
        exp_avg_sq: GpuBuffer<f32>,
    }

    impl GpuState {
        fn new(gpu: &Gpu, setup: &Setup) -> GpuState {
            let w = flatten(
                &setup
                    .params
                    .iter()
                    .map(|(_, p)| p.clone())
                    .collect::<Vec<_>>(),
            );
            let wb: Vec<bf16> = w.iter().map(|&x| bf16::from_f32(x)).collect();
            GpuState {
                params: gpu.upload(&w).unwrap(),
                params_bf16: gpu.upload(&wb).unwrap(),
                exp_avg: gpu.zeros(w.len()).unwrap(),
                exp_avg_sq: gpu.zeros(w.len()).unwrap(),
            }
        }

        fn buffers<'a>(&'a mut self, grads: &'a GpuBuffer<f32>) -> AdamwBuffers<'a> {
            AdamwBuffers {
                params: &mut self.params,
                params_bf16: &mut self.params_bf16,
                exp_avg: &mut self.exp_avg,
                exp_avg_sq: &mut self.exp_avg_sq,
                grads,
            }
        }

        /// The GPU's weights, moments and bf16 copy against the CPU optimizer's.
        fn assert_matches(&self, gpu: &Gpu, setup: &Setup, cpu: &AdamW, step: u64) {
            let w = gpu.download(&self.params).unwrap();
            let want = flatten(
                &setup
                    .params
                    .iter()
                    .map(|(_, p)| p.clone())
                    .collect::<Vec<_>>(),
            );
            assert_relative(&w, &want, &format!("weights after step {step}"));
            let wb = gpu.download(&self.params_bf16).unwrap();
            for (i, (&b, &x)) in wb.iter().zip(&w).enumerate() {
                assert_eq!(b, bf16::from_f32(x), "bf16 copy [{i}] after step {step}");
            }
            let state = cpu.state_tensors();
            let moment = |prefix: &str| -> Vec<f32> {
                flatten(
                    &state
                        .iter()
                        .filter(|(n, _)| n.starts_with(prefix))
                        .map(|(_, t)| t.clone())
                        .collect::<Vec<_>>(),
                )
            };
            let m = gpu.download(&self.exp_avg).unwrap();
            let v = gpu.download(&self.exp_avg_sq).unwrap();
            assert_relative(&m, &moment("exp_avg."), &format!("exp_avg after {step}"));
            assert_relative(
                &v,
                &moment("exp_avg_sq."),
                &format!("exp_avg_sq after {step}"),
            );
        }
    }

    fn config(weight_decay: f32) -> AdamWConfig {
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay,
        }
    }

    /// Five steps with changing learning rates against the CPU optimizer, with weight
    /// decay (on the parameters `default_decay` picks) and without.
    #[test]
    fn steps_match_the_cpu_adamw() {
        for gpu in test_gpus() {
            for weight_decay in [0.1, 0.0] {
                let mut rng = Rng::new(41);
                let setup = setup(&mut rng);
                let plan = AdamwPlan::new(&gpu, &setup.segments, setup.flat_len).unwrap();
                let config = config(weight_decay);
                let mut cpu = AdamW::new(&setup.params, config.clone(), default_decay);
                let mut state = GpuState::new(&gpu, &setup);
                for step in 1..=5u64 {
                    let lr = 1e-3 * (1.0 - 0.15 * step as f32);
                    let (grads, flat) = gradients(&mut rng, &setup, 1.0);
                    cpu.step(&setup.params, &grads, lr).unwrap();
                    let flat = gpu.upload(&flat).unwrap();
                    let buffers = state.buffers(&flat);
                    adamw_update(&gpu, &plan, buffers, &config, step, lr, None).unwrap();
                    state.assert_matches(&gpu, &setup, &cpu, step);
                }
            }
        }
    }

    /// Clipping on the device (grad_norm's factor read by AdamW) against the CPU's
    /// clip_grad_norm followed by a step, where the norm is far above the limit.
    #[test]
    fn clipped_steps_match_the_cpu_clip_then_step() {
        for gpu in test_gpus() {
            let mut rng = Rng::new(42);
            let setup = setup(&mut rng);
            let plan = AdamwPlan::new(&gpu, &setup.segments, setup.flat_len).unwrap();
            let config = config(0.1);
            let mut cpu = AdamW::new(&setup.params, config.clone(), default_decay);
            let mut state = GpuState::new(&gpu, &setup);
            for step in 1..=3u64 {
                let (mut grads, flat) = gradients(&mut rng, &setup, 3.0);
                let norm = clip_grad_norm(&setup.params, &mut grads, 1.0).unwrap();
                cpu.step(&setup.params, &grads, 1e-3).unwrap();
                let flat = gpu.upload(&flat).unwrap();
                let clip = grad_norm(&gpu, &flat, 1.0).unwrap();
                let got = gpu.download(&clip).unwrap();
                assert!((got[0] - norm).abs() <= 1e-6 * norm, "{got:?} vs {norm}");
                assert!(got[1] < 0.01, "the norm ({norm}) is well above 1: {got:?}");
                let buffers = state.buffers(&flat);
                adamw_update(&gpu, &plan, buffers, &config, step, 1e-3, Some(&clip)).unwrap();
                state.assert_matches(&gpu, &setup, &cpu, step);
            }
        }
    }

    #[test]
    fn a_non_finite_norm_changes_nothing() {
        for gpu in test_gpus() {
            let mut rng = Rng::new(43);
            let setup = setup(&mut rng);
            let plan = AdamwPlan::new(&gpu, &setup.segments, setup.flat_len).unwrap();
            let mut state = GpuState::new(&gpu, &setup);
            let (_, mut flat) = gradients(&mut rng, &setup, 1.0);
            flat[3] = f32::NAN;
            let flat = gpu.upload(&flat).unwrap();
            let clip = grad_norm(&gpu, &flat, 1.0).unwrap();
            let got = gpu.download(&clip).unwrap();
            assert!(got[0].is_nan() && got[1] == 1.0, "{got:?}");
            let before = gpu.download(&state.params).unwrap();
            let buffers = state.buffers(&flat);
            adamw_update(&gpu, &plan, buffers, &config(0.1), 1, 1e-3, Some(&clip)).unwrap();
            assert_eq!(gpu.download(&state.params).unwrap(), before);
            assert!(gpu
                .download(&state.exp_avg)
                .unwrap()
                .iter()
                .all(|&m| m == 0.0));
            assert!(gpu
                .download(&state.exp_avg_sq)
                .unwrap()
                .iter()
                .all(|&v| v == 0.0));
        }
    }

    /// The norm against clip_grad_norm's, and its factor exactly torch's coefficient:
    /// odd lengths (a tail after the packs), more elements than one pass of the grid,
    /// values whose f32 squares would overflow, and norms below the limit (factor 1).
    #[test]
    fn grad_norm_matches_clip_grad_norm() {
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
                let p = Tensor::zeros([n], crate::DType::F32).into_param();
                let seed = Tensor::from_vec(values.clone(), [n]).unwrap();
                let mut grads = p.reshape([n]).unwrap().backward_with(seed).unwrap();
                let params = vec![("p".to_string(), p)];
                let norm = clip_grad_norm(&params, &mut grads, max_norm).unwrap();
                let got = gpu
                    .download(&grad_norm(&gpu, &gpu.upload(&values).unwrap(), max_norm).unwrap())
                    .unwrap();
                assert!(
                    (got[0] - norm).abs() <= 1e-6 * norm,
                    "n {n}: {got:?} vs {norm}"
                );
                let coefficient = max_norm / (got[0] + 1e-6);
                let factor = if coefficient < 1.0 { coefficient } else { 1.0 };
                assert_eq!(got[1], factor, "n {n}: {got:?}");
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
                params: &mut w,
                params_bf16: &mut wb,
                exp_avg: &mut m,
                exp_avg_sq: &mut v,
                grads: &g,
            };
            let err = adamw_update(&gpu, &plan, buffers, &config(0.1), 1, 1e-3, None)
                .err()
                .unwrap();
            assert!(err.to_string().contains("bf16"), "{err}");
        }
    }
}
