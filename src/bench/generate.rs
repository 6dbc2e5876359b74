//! `scotd bench generate`: greedy decoding of random prompts through the library's own
//! decoder ([`crate::sample::decode`]) on a model of a config's shape with random weights,
//! timed: the prefill (to every sequence's first token), the decode rate, and how close a
//! decode step comes to the memory roofline (the bytes it must read over the device's copy
//! bandwidth, measured in the same run). tools/bench_generate.py runs the same job through
//! transformers' `generate` and writes a report with the same fields.

use std::time::Instant;

use serde::Serialize;

use crate::backend::cuda::bench::median;
use crate::backend::cuda::Gpu;
use crate::model::{Init, KvCache, Model, ModelConfig, ParamSpec, KV_BLOCK};
use crate::rng::Rng;
use crate::sample::{decode, kv_pool_blocks, Event, Request, SamplingConfig, StopReason};
use crate::tensor::gpu_of;
use crate::train::bench::{bench_token, BenchDtype};
use crate::{DType, Device, Error, Result, Tensor};

#[derive(Clone, Debug)]
pub struct GenerateBenchOptions {
    /// Sequences decoded together.
    pub batch: usize,
    pub prompt_len: usize,
    /// Tokens generated per sequence: exactly this many, no end-of-sequence id stops one.
    pub new_tokens: usize,
    /// New tokens of the untimed warm-up decode of the same prompts (0: none).
    pub warmup_tokens: usize,
    pub precision: BenchDtype,
    /// The decoder's KV-cache budget in bytes ([`SamplingConfig::kv_budget`]). One too
    /// small for the whole batch makes the later sequences wait for a finished one, and
    /// the times include the wait.
    pub kv_budget: Option<u64>,
}

/// The measurements, as written to JSON (tools/bench_generate.py writes the same keys).
#[derive(Clone, Debug, Serialize)]
pub struct GenerateBenchReport {
    pub engine: String,
    pub device: String,
    pub params: usize,
    pub precision: BenchDtype,
    pub batch: usize,
    pub prompt_len: usize,
    pub new_tokens: usize,
    /// Tokens the decoder reported, all sequences together (batch × new_tokens).
    pub generated_tokens: usize,
    /// From the start of the decode to the first token of every sequence.
    pub prefill_ms: f64,
    pub prefill_tokens_per_s: f64,
    /// The steps after the prefill, all sequences together: (new_tokens - 1) × batch.
    pub decode_tokens: usize,
    pub decode_ms: f64,
    pub decode_ms_per_step: f64,
    /// The median of the single steps' times (None where only the total is known).
    pub decode_step_ms_median: Option<f64>,
    pub decode_tokens_per_s: f64,
    pub total_ms: f64,
    pub roofline: Roofline,
    pub memory: MemoryReport,
}

/// A decode step against the memory bandwidth: the time its bytes take at the measured
/// copy rate, and the fraction of that rate the step reached.
#[derive(Clone, Debug, Serialize)]
pub struct Roofline {
    /// Cached positions each sequence attends over, averaged over the decode steps.
    pub mean_context: f64,
    pub weight_bytes_per_step: u64,
    pub kv_bytes_per_step: u64,
    pub bytes_per_step: u64,
    /// Bytes read plus written per second by a device-to-device copy; None on the emulator.
    pub copy_gb_per_s: Option<f64>,
    pub step_ms_at_limit: Option<f64>,
    pub decode_tokens_per_s_at_limit: Option<f64>,
    /// step_ms_at_limit over the measured decode_ms_per_step.
    pub fraction: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MemoryReport {
    /// Every parameter on the device, in the benchmark's precision.
    pub weight_bytes: u64,
    pub kv_bytes_per_token: u64,
    /// The KV cache of the batch at its longest (prompt + new tokens - 1 positions).
    pub kv_bytes_needed: u64,
    /// What the decoder reserves up front ([`kv_bytes_reserved`]).
    pub kv_bytes_reserved: u64,
    pub kv_budget: Option<u64>,
    /// The driver's free and total memory right after the timed decode (blocks the
    /// memory pool keeps for reuse count as used); None on the emulator.
    pub device_free_bytes: Option<u64>,
    pub device_total_bytes: Option<u64>,
    /// The memory pool's high-water mark from the model's upload to the end of the decode.
    pub peak_bytes: Option<u64>,
}

/// Bytes of KV cache the decoder reserves up front for `batch` sequences that may each
/// fill `positions`, within the budget when one is given: [`kv_pool_blocks`], the rule
/// [`crate::sample::decode`] sizes its pool by.
pub fn kv_bytes_reserved(
    config: &ModelConfig,
    dtype: DType,
    (batch, positions): (usize, usize),
    budget: Option<u64>,
) -> u64 {
    let block_bytes = (KvCache::bytes_per_token(config, dtype) * KV_BLOCK) as u64;
    let affordable = budget.map(|b| (b / block_bytes) as usize);
    kv_pool_blocks(&vec![positions; batch], batch, affordable) as u64 * block_bytes
}

/// Bytes of every parameter (a tied embedding once) held in `dtype`, as the model sits on
/// a device for inference.
pub fn weight_bytes(config: &ModelConfig, dtype: DType) -> u64 {
    (config.num_parameters() * dtype.size_in_bytes()) as u64
}

/// Device memory generation needs besides its activations: the weights, and the KV cache
/// of `batch` sequences of `context` positions each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    pub weight_bytes: u64,
    pub kv_bytes_per_token: u64,
    pub kv_bytes: u64,
}

impl MemoryPlan {
    pub fn new(config: &ModelConfig, dtype: DType, batch: usize, context: usize) -> MemoryPlan {
        let per_token = KvCache::bytes_per_token(config, dtype) as u64;
        MemoryPlan {
            weight_bytes: weight_bytes(config, dtype),
            kv_bytes_per_token: per_token,
            kv_bytes: per_token * (batch * context) as u64,
        }
    }

    pub fn total_bytes(&self) -> u64 {
        self.weight_bytes + self.kv_bytes
    }
}

/// Bytes a decode step must read from device memory, by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeStepBytes {
    /// Every weight once; of an untied embedding table only the `batch` rows looked up
    /// (a tied one is read whole, as the LM head).
    pub weights: u64,
    /// Every sequence's cached keys and values, at the mean context of the decode steps.
    pub kv: u64,
}

impl DecodeStepBytes {
    /// The mean over the `new_tokens - 1` steps after the prefill of prompts of
    /// `prompt_len`: step k (1-based) attends over prompt_len + k positions, so the mean
    /// context is prompt_len + new_tokens / 2. Activations and logits are left out (a few
    /// percent of the weights at most at these shapes).
    pub fn new(
        config: &ModelConfig,
        dtype: DType,
        batch: usize,
        prompt_len: usize,
        new_tokens: usize,
    ) -> DecodeStepBytes {
        let size = dtype.size_in_bytes() as u64;
        let mut weight_elements = config.num_parameters() as u64;
        if !config.tie_word_embeddings {
            weight_elements -=
                (config.vocab_size.saturating_sub(batch) * config.hidden_size) as u64;
        }
        // Exact in integers: the per-token bytes are even (a key and a value).
        let kv = KvCache::bytes_per_token(config, dtype) as u64 / 2
            * batch as u64
            * (2 * prompt_len + new_tokens) as u64;
        DecodeStepBytes {
            weights: weight_elements * size,
            kv,
        }
    }

    pub fn total(&self) -> u64 {
        self.weights + self.kv
    }
}

/// The benchmark's prompts: token t of prompt b is `bench_token(b * prompt_len + t)`, as
/// tools/bench_generate.py builds them.
pub fn bench_prompts(config: &ModelConfig, batch: usize, prompt_len: usize) -> Vec<Vec<u32>> {
    (0..batch)
        .map(|b| {
            (0..prompt_len)
                .map(|t| bench_token(b * prompt_len + t, config.vocab_size))
                .collect()
        })
        .collect()
}

/// Runs the benchmark on `device` (a GPU or the emulator): a warm-up decode, then the
/// timed one; `progress` is told each timed step begun (1 is the prefill).
pub fn bench_generate(
    device: Device,
    config: &ModelConfig,
    options: &GenerateBenchOptions,
    mut progress: impl FnMut(usize),
) -> Result<GenerateBenchReport> {
    validate(device, config, options)?;
    let gpu = gpu_of(device)?;
    let dtype = dtype_of(options.precision);
    gpu.synchronize()?;
    gpu.reset_peak_memory()?;
    let model = random_model_on(config, device, dtype, 0)?;
    let prompts = bench_prompts(config, options.batch, options.prompt_len);
    if options.warmup_tokens > 0 {
        timed_decode(&model, &prompts, options, options.warmup_tokens, |_| {})?;
    }
    let steps = timed_decode(&model, &prompts, options, options.new_tokens, &mut progress)?;
    let memory = gpu.memory_info()?;
    let peak_bytes = gpu.peak_memory();
    drop(model);
    let copy_gb_per_s = copy_bandwidth(device, &gpu)?;
    let mut report = report(config, options, &steps, copy_gb_per_s);
    report.device = gpu.describe();
    report.memory.device_free_bytes = memory.map(|m| m.0);
    report.memory.device_total_bytes = memory.map(|m| m.1);
    report.memory.peak_bytes = peak_bytes;
    Ok(report)
}

fn dtype_of(precision: BenchDtype) -> DType {
    match precision {
        BenchDtype::Bf16 => DType::BF16,
        BenchDtype::F32 => DType::F32,
    }
}

fn validate(device: Device, config: &ModelConfig, options: &GenerateBenchOptions) -> Result<()> {
    let fail = |msg: String| Err(Error::shape("bench generate", msg));
    if !device.is_gpu() {
        return Err(Error::Device(
            device,
            "bench generate times the GPU decoder: use --device emulator or cuda (the CPU's decode benchmark is `cargo bench --bench generate`)".into(),
        ));
    }
    if options.batch == 0 || options.prompt_len == 0 {
        return fail("batch and prompt length must be at least 1".into());
    }
    if options.new_tokens < 2 {
        return fail(format!(
            "{} new tokens leave no decode step after the prefill: ask for at least 2",
            options.new_tokens
        ));
    }
    let longest = options.prompt_len + options.new_tokens.max(options.warmup_tokens);
    if let Some(max) = config.max_position_embeddings.filter(|&m| longest > m) {
        return fail(format!(
            "prompt {} + new {} tokens = {longest}, past the model's context of {max}",
            options.prompt_len,
            options.new_tokens.max(options.warmup_tokens)
        ));
    }
    Ok(())
}

/// Period of the random pattern the weight matrices repeat: a prime, so that rows of a
/// matrix (whose widths have small factors) start at different places in it.
const PATTERN_LEN: usize = 1_048_573;

/// A model of `config`'s shape on `device`, every parameter in `dtype`, distributed as
/// [`Model::random`]'s (normal matrices, norms at 1, biases at 0) but quick to make at a
/// 7B shape: each matrix is copied on the device from one random pattern of
/// [`PATTERN_LEN`] values drawn once, repeated from a random starting point, instead of
/// billions of values drawn on the host. For timing, not for training.
pub fn random_model_on(
    config: &ModelConfig,
    device: Device,
    dtype: DType,
    seed: u64,
) -> Result<Model> {
    let mut rng = Rng::new(seed);
    let mut patterns = Vec::new();
    Model::build(config.clone(), |spec| {
        let t = match spec.init {
            Init::Zeros => Tensor::zeros_on(spec.shape.clone(), dtype, device)?,
            Init::Ones => Tensor::from_vec(vec![1.0; spec.numel()], spec.shape.clone())?
                .to_dtype(dtype)?
                .to(device)?,
            Init::Normal(std) => {
                let start = rng.below(PATTERN_LEN);
                let pattern = pattern_of(&mut patterns, std, (&mut rng, dtype, device))?;
                tiled(pattern, spec, start)?
            }
        };
        Ok(t.into_param())
    })
}

/// The random pattern of standard deviation `std` on the device, drawn the first time
/// it is asked for and kept in `patterns`.
fn pattern_of<'p>(
    patterns: &'p mut Vec<(f32, Tensor)>,
    std: f32,
    (rng, dtype, device): (&mut Rng, DType, Device),
) -> Result<&'p Tensor> {
    let index = match patterns.iter().position(|(s, _)| *s == std) {
        Some(index) => index,
        None => {
            let values = Tensor::from_vec(rng.normal_vec(PATTERN_LEN, std), [PATTERN_LEN])?;
            patterns.push((std, values.to_dtype(dtype)?.to(device)?));
            patterns.len() - 1
        }
    };
    Ok(&patterns[index].1)
}

/// A tensor of `spec`'s shape on `pattern`'s device and dtype, holding `pattern`
/// repeated from element `start` on.
fn tiled(pattern: &Tensor, spec: &ParamSpec, start: usize) -> Result<Tensor> {
    let target = Tensor::zeros_on(spec.shape.clone(), pattern.dtype(), pattern.device())?;
    let (n, period) = (spec.numel(), pattern.elem_count());
    let (mut filled, mut from) = (0, start);
    while filled < n {
        let len = (period - from).min(n - filled);
        target
            .view_of_flat(filled, [len])?
            .copy_from(&pattern.view_of_flat(from, [len])?)?;
        filled += len;
        from = 0;
    }
    Ok(target)
}

/// When each step of a decode ended, in ms from its start (step 0 is the prefill), and
/// how many tokens it produced.
struct StepTimes {
    end_ms: Vec<f64>,
    tokens: usize,
}

/// Decodes `prompts` together, greedily, for exactly `new_tokens` each (no
/// end-of-sequence ids), through the library's decoder. A step ends with the last token
/// of that index: the decoder reports a step's tokens once they are on the host, so
/// these are the times the caller sees.
fn timed_decode(
    model: &Model,
    prompts: &[Vec<u32>],
    options: &GenerateBenchOptions,
    new_tokens: usize,
    mut progress: impl FnMut(usize),
) -> Result<StepTimes> {
    let cfg = SamplingConfig {
        batch_size: prompts.len(),
        max_new_tokens: new_tokens,
        kv_budget: options.kv_budget,
        ..SamplingConfig::default()
    };
    let requests: Vec<Request> = prompts
        .iter()
        .enumerate()
        .map(|(i, prompt)| Request {
            prompt,
            seed: i as u64,
        })
        .collect();
    let mut counts = vec![0usize; prompts.len()];
    let mut end_ms = vec![0.0; new_tokens];
    let mut begun = 0;
    let start = Instant::now();
    decode(model, &requests, &[], &cfg, |event| {
        match event {
            Event::Token { request, .. } => {
                let step = counts[request];
                counts[request] += 1;
                let Some(end) = end_ms.get_mut(step) else {
                    return Err(unexpected(request, "more tokens than asked for"));
                };
                *end = start.elapsed().as_secs_f64() * 1e3;
                if step == begun {
                    begun += 1;
                    progress(begun);
                }
            }
            Event::Finished { request, result } => {
                if result.stop != StopReason::MaxNewTokens || result.ids.len() != new_tokens {
                    let why = format!(
                        "stopped after {} tokens ({:?})",
                        result.ids.len(),
                        result.stop
                    );
                    return Err(unexpected(request, &why));
                }
            }
        }
        Ok(())
    })?;
    Ok(StepTimes {
        end_ms,
        tokens: counts.iter().sum(),
    })
}

fn unexpected(request: usize, what: &str) -> Error {
    Error::shape(
        "bench generate",
        format!(
            "sequence {request}: {what}; the benchmark decodes exactly the new tokens asked for"
        ),
    )
}

/// Bytes of the buffer copied to measure the memory bandwidth: far past any L2 cache.
const COPY_BYTES: usize = 1 << 30;

/// The device's memory bandwidth in GB/s: bytes read plus written by a device-to-device
/// copy, the median of 10 between events. None on the emulator, whose copies are the
/// host's memcpy and say nothing of a GPU.
fn copy_bandwidth(device: Device, gpu: &Gpu) -> Result<Option<f64>> {
    if device == Device::Emulator {
        return Ok(None);
    }
    let source = gpu.zeros::<u8>(COPY_BYTES)?;
    let mut target = gpu.alloc::<u8>(COPY_BYTES)?;
    gpu.copy(&mut target, &source)?;
    let times = gpu.time_ms(10, || gpu.copy(&mut target, &source))?;
    Ok(Some(2.0 * COPY_BYTES as f64 / (median(times) / 1e3) / 1e9))
}

/// The report of a timed decode; the device's name and memory are filled in by the caller.
fn report(
    config: &ModelConfig,
    options: &GenerateBenchOptions,
    steps: &StepTimes,
    copy_gb_per_s: Option<f64>,
) -> GenerateBenchReport {
    let (batch, prompt_len, new_tokens) = (options.batch, options.prompt_len, options.new_tokens);
    let dtype = dtype_of(options.precision);
    let prefill_ms = steps.end_ms[0];
    let total_ms = steps.end_ms[new_tokens - 1];
    let decode_ms = total_ms - prefill_ms;
    let decode_ms_per_step = decode_ms / (new_tokens - 1) as f64;
    let step_ms: Vec<f64> = steps.end_ms.windows(2).map(|w| w[1] - w[0]).collect();
    let decode_tokens = (new_tokens - 1) * batch;
    let plan = MemoryPlan::new(config, dtype, batch, prompt_len + new_tokens - 1);
    let bytes = DecodeStepBytes::new(config, dtype, batch, prompt_len, new_tokens);
    let step_ms_at_limit = copy_gb_per_s.map(|gbps| bytes.total() as f64 / gbps / 1e6);
    GenerateBenchReport {
        engine: "scotd".into(),
        device: String::new(),
        params: config.num_parameters(),
        precision: options.precision,
        batch,
        prompt_len,
        new_tokens,
        generated_tokens: steps.tokens,
        prefill_ms,
        prefill_tokens_per_s: (batch * prompt_len) as f64 / (prefill_ms / 1e3),
        decode_tokens,
        decode_ms,
        decode_ms_per_step,
        decode_step_ms_median: Some(median(step_ms)),
        decode_tokens_per_s: decode_tokens as f64 / (decode_ms / 1e3),
        total_ms,
        roofline: Roofline {
            mean_context: prompt_len as f64 + new_tokens as f64 / 2.0,
            weight_bytes_per_step: bytes.weights,
            kv_bytes_per_step: bytes.kv,
            bytes_per_step: bytes.total(),
            copy_gb_per_s,
            step_ms_at_limit,
            decode_tokens_per_s_at_limit: step_ms_at_limit.map(|ms| batch as f64 / (ms / 1e3)),
            fraction: step_ms_at_limit.map(|ms| ms / decode_ms_per_step),
        },
        memory: MemoryReport {
            weight_bytes: plan.weight_bytes,
            kv_bytes_per_token: plan.kv_bytes_per_token,
            kv_bytes_needed: plan.kv_bytes,
            kv_bytes_reserved: kv_bytes_reserved(
                config,
                dtype,
                (batch, prompt_len + new_tokens),
                options.kv_budget,
            ),
            kv_budget: options.kv_budget,
            device_free_bytes: None,
            device_total_bytes: None,
            peak_bytes: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str) -> ModelConfig {
        let path = format!("{}/benches/configs/{name}", env!("CARGO_MANIFEST_DIR"));
        ModelConfig::from_file(std::path::Path::new(&path)).unwrap()
    }

    /// The teacher's shape, batch 64 × 1,024 tokens, on an 80 GB card: ~13.8 GB of bf16
    /// weights (6.91 B parameters, lm_head untied) and ~32.2 GB of bf16 KV cache
    /// (2 × 30 layers × 32 heads × 128 dims × 2 bytes = 480 KiB a token, × 65,536 tokens),
    /// 46.0 GB together: 34.0 GB are left for activations, the logits and the memory pool.
    #[test]
    fn the_7b_shape_at_batch_64_by_1024_fits_an_80_gb_card() {
        let plan = MemoryPlan::new(&config("deepseek-math-7b.json"), DType::BF16, 64, 1024);
        assert_eq!(plan.weight_bytes, 13_820_731_392);
        assert_eq!(plan.kv_bytes_per_token, 491_520);
        assert_eq!(plan.kv_bytes, 32_212_254_720);
        let activations_room = 80_000_000_000 - plan.total_bytes();
        assert!(activations_room > 30_000_000_000, "{activations_room}");
    }

    #[test]
    fn both_reference_shapes_parse_as_their_architectures() {
        use crate::model::Architecture;
        let qwen = config("qwen2.5-0.5b.json");
        assert_eq!(qwen.architecture, Architecture::Qwen2);
        assert!(qwen.qkv_bias && qwen.tie_word_embeddings);
        assert_eq!(
            (qwen.head_dim, qwen.max_position_embeddings),
            (64, Some(32768))
        );
        assert_eq!(qwen.num_parameters(), 494_032_768);
        let teacher = config("deepseek-math-7b.json");
        assert_eq!(teacher.architecture, Architecture::Llama);
        assert!(!teacher.qkv_bias && !teacher.o_bias && !teacher.tie_word_embeddings);
        assert_eq!((teacher.head_dim, teacher.num_key_value_heads), (128, 32));
        assert_eq!((teacher.rope_theta, teacher.rms_norm_eps), (10000.0, 1e-6));
        assert_eq!(teacher.max_position_embeddings, Some(4096));
        assert_eq!(teacher.num_parameters(), 6_910_365_696);
    }

    #[test]
    fn an_untied_embedding_is_read_only_at_the_looked_up_rows() {
        let teacher = config("deepseek-math-7b.json");
        let bytes = DecodeStepBytes::new(&teacher, DType::BF16, 1, 128, 128);
        // 6,910,390,272 parameters less 102,399 of the 102,400 embedding rows of 4,096.
        assert_eq!(bytes.weights, 2 * (6_910_365_696 - 102_399 * 4096));
        // 480 KiB a token at a mean context of 128 + 128 / 2 = 192.
        assert_eq!(bytes.kv, 491_520 * 192);
    }

    #[test]
    fn the_reserved_kv_cache_is_whole_blocks_within_the_budget() {
        let tiny = config("tiny-qwen2.json");
        // 256 bytes a position, 4 KiB a block of 16; 40 positions take 3 blocks.
        let reserved = |batch, budget| kv_bytes_reserved(&tiny, DType::BF16, (batch, 40), budget);
        assert_eq!(reserved(2, None), 6 * 4096);
        assert_eq!(reserved(2, Some(1 << 20)), 6 * 4096);
        assert_eq!(reserved(2, Some(5 * 4096 + 100)), 5 * 4096);
    }

    #[test]
    fn the_benchmark_runs_on_the_emulator_and_counts_what_it_decoded() {
        let tiny = config("tiny-qwen2.json");
        let options = GenerateBenchOptions {
            batch: 2,
            prompt_len: 8,
            new_tokens: 4,
            warmup_tokens: 2,
            precision: BenchDtype::Bf16,
            kv_budget: None,
        };
        let mut begun = Vec::new();
        let r = bench_generate(Device::Emulator, &tiny, &options, |s| begun.push(s)).unwrap();
        assert_eq!(begun, [1, 2, 3, 4]);
        assert_eq!((r.generated_tokens, r.decode_tokens), (2 * 4, 2 * 3));
        assert!(r.prefill_ms > 0.0 && r.decode_ms > 0.0 && r.decode_tokens_per_s > 0.0);
        assert!((r.prefill_ms + r.decode_ms - r.total_ms).abs() < 1e-9);
        // tiny-qwen2 by hand: embedding 300 × 64 (tied); per layer two norms of 64, q and o
        // 64 × 64, k and v 32 × 64, biases 64 + 32 + 32, gate, up, down 128 × 64; the final
        // norm 64. In bf16.
        let layer = 2 * 64 + 2 * 64 * 64 + 2 * 32 * 64 + (64 + 32 + 32) + 3 * 128 * 64;
        let weights = 2 * (300 * 64 + 2 * layer + 64);
        assert_eq!(r.memory.weight_bytes, weights as u64);
        assert_eq!(r.roofline.weight_bytes_per_step, weights as u64);
        // KV: 2 (k, v) × 2 layers × 2 heads × 16 dims × 2 bytes = 256 a token; 2 sequences
        // at a mean context of 8 + 4 / 2 = 10 positions per step, 8 + 4 - 1 = 11 at most.
        assert_eq!(r.memory.kv_bytes_per_token, 256);
        assert_eq!(r.roofline.kv_bytes_per_step, 2 * 10 * 256);
        assert_eq!(r.roofline.bytes_per_step, weights as u64 + 5120);
        assert_eq!(r.memory.kv_bytes_needed, 2 * 11 * 256);
        // The decoder's pool: a 16-position block for each sequence's 8 + 4.
        assert_eq!(r.memory.kv_bytes_reserved, 2 * 16 * 256);
        assert!(r.roofline.copy_gb_per_s.is_none() && r.roofline.fraction.is_none());
        assert!(r.memory.device_total_bytes.is_none() && r.memory.peak_bytes.is_none());
        assert_eq!(r.device, "CPU emulator");
    }

    #[test]
    fn the_benchmark_refuses_what_it_cannot_time() {
        let tiny = config("tiny-qwen2.json");
        let options = GenerateBenchOptions {
            batch: 1,
            prompt_len: 4,
            new_tokens: 1,
            warmup_tokens: 0,
            precision: BenchDtype::F32,
            kv_budget: None,
        };
        let one_token = bench_generate(Device::Emulator, &tiny, &options, |_| {});
        assert!(one_token.unwrap_err().to_string().contains("at least 2"));
        let on_cpu = GenerateBenchOptions {
            new_tokens: 2,
            ..options.clone()
        };
        let err = bench_generate(Device::Cpu, &tiny, &on_cpu, |_| {}).unwrap_err();
        assert!(err.to_string().contains("--device emulator"));
        let too_long = GenerateBenchOptions {
            prompt_len: 32_000,
            new_tokens: 1_000,
            ..options
        };
        let qwen = config("qwen2.5-0.5b.json");
        let err = bench_generate(Device::Emulator, &qwen, &too_long, |_| {}).unwrap_err();
        assert!(err
            .to_string()
            .contains("past the model's context of 32768"));
    }

    #[test]
    fn random_weights_on_the_device_repeat_the_pattern_from_a_random_start() {
        let tiny = config("tiny-qwen2.json");
        let model = random_model_on(&tiny, Device::Emulator, DType::F32, 7).unwrap();
        let embedding = model.embed_tokens.to_vec_f32().unwrap();
        let std = (embedding.iter().map(|x| x * x).sum::<f32>() / embedding.len() as f32).sqrt();
        assert!((std - 0.02).abs() < 0.002, "std {std}");
        let up = model.layers[0].up_proj.weight.to_vec_f32().unwrap();
        assert_ne!(
            embedding[..64],
            up[..64],
            "each matrix starts elsewhere in the pattern"
        );
        assert!(model.norm.to_vec_f32().unwrap().iter().all(|&x| x == 1.0));
        let bias = model.layers[1].q_proj.bias.as_ref().unwrap();
        assert!(bias.to_vec_f32().unwrap().iter().all(|&x| x == 0.0));
        assert_eq!(model.device(), Device::Emulator);
    }
}
