//! `scotd bench train`: the GPU training step of a model shape with random weights,
//! timed, with its MFU and peak memory. tools/bench_torch.py runs the same step in
//! PyTorch + transformers on the same card, with the same token data
//! ([`bench_token`]) and the same FLOP count ([`step_flops`]).

use std::time::Instant;

use half::bf16;
use serde::Serialize;

use super::step::train_step;
use crate::backend::cuda::bench::median;
use crate::backend::cuda::Gpu;
use crate::model::{Batch, Model, ModelConfig, ParamStore};
use crate::ops::IGNORE_INDEX;
use crate::optim::{AdamW, AdamWConfig};
use crate::tensor::gpu_of;
use crate::{DType, Device, Error, Result};

/// The arithmetic the benchmark runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BenchDtype {
    /// bf16 weights and activations, f32 accumulation, f32 master weights.
    Bf16,
    /// f32 throughout.
    F32,
}

#[derive(Clone, Debug)]
pub struct TrainBenchOptions {
    pub batch: usize,
    pub seq: usize,
    /// Untimed steps first (kernel loading, the memory pool filling).
    pub warmup: usize,
    pub steps: usize,
    pub dtype: BenchDtype,
    pub recompute: bool,
    /// The side of the square bf16 GEMM whose rate is the MFU's peak.
    pub peak_gemm_size: usize,
}

/// The measurements, as written to JSON.
#[derive(Clone, Debug, Serialize)]
pub struct TrainBenchReport {
    pub device: String,
    pub batch: usize,
    pub seq: usize,
    pub dtype: BenchDtype,
    pub recompute: bool,
    pub params: usize,
    pub step_ms_median: f64,
    pub step_ms_all: Vec<f64>,
    pub tokens_per_s: f64,
    pub step_flops: f64,
    pub tflops: f64,
    pub peak_gemm_tflops: f64,
    pub peak_gemm_size: usize,
    pub mfu: f64,
    /// The device memory pool's high-water mark over the timed steps; None on the emulator.
    pub peak_memory_gib: Option<f64>,
    pub losses: Vec<f32>,
}

/// Token `i` of the benchmark's data: a fixed hash of the position, so the PyTorch
/// script builds exactly the same batch (Knuth's multiplicative hash, mod the vocabulary).
pub fn bench_token(i: usize, vocab: usize) -> u32 {
    ((i as u64 * 2_654_435_761 + 12_345) % (1 << 32) % vocab as u64) as u32
}

/// FLOPs of one training step, as tools/bench_torch_gpu.py counts them:
/// 6·params·tokens for the matrices, plus 6·L·Hq·Dh·T²·B for causal attention forward and
/// backward (12·L·Hq·Dh·T²·B halved by the causal mask).
pub fn step_flops(config: &ModelConfig, batch: usize, seq: usize) -> f64 {
    let (b, t) = (batch as f64, seq as f64);
    let attention = 6.0
        * config.num_hidden_layers as f64
        * config.num_attention_heads as f64
        * config.head_dim as f64
        * t
        * t
        * b;
    6.0 * config.num_parameters() as f64 * b * t + attention
}

/// The benchmark's batch: `batch` rows of `seq` tokens, each token's target the next
/// one (the last of each row ignored), as transformers' `labels=input_ids` does.
pub fn bench_batch(config: &ModelConfig, batch: usize, seq: usize) -> Result<(Batch, Vec<i64>)> {
    let ids: Vec<u32> = (0..batch * seq)
        .map(|i| bench_token(i, config.vocab_size))
        .collect();
    let targets = (0..ids.len())
        .map(|i| {
            if (i + 1) % seq == 0 {
                IGNORE_INDEX
            } else {
                ids[i + 1] as i64
            }
        })
        .collect();
    Ok((Batch::new(ids, batch, seq)?, targets))
}

/// Runs the benchmark on `device` (a GPU or the emulator): the trainer's own step
/// ([`train_step`]) on a random model of `config`'s shape; `progress` is told each
/// finished step (warm-up included).
pub fn bench_train(
    device: Device,
    config: &ModelConfig,
    options: &TrainBenchOptions,
    mut progress: impl FnMut(usize),
) -> Result<TrainBenchReport> {
    if options.batch == 0 || options.seq == 0 || options.steps == 0 {
        return Err(Error::shape(
            "bench train",
            "batch, seq and steps must be at least 1",
        ));
    }
    if !device.is_gpu() {
        return Err(Error::Device(
            device,
            "bench train times the GPU step: use --device emulator or cuda (the CPU step's benchmark is `cargo bench --bench cpu_train_step`)".into(),
        ));
    }
    let gpu = gpu_of(device)?;
    let dtype = match options.dtype {
        BenchDtype::Bf16 => DType::BF16,
        BenchDtype::F32 => DType::F32,
    };
    let store = ParamStore::new(&Model::random(config.clone(), 0), device, dtype)?;
    let mut optimizer = AdamW::new(&store.flat, AdamWConfig::default())?;
    let batches = [bench_batch(config, options.batch, options.seq)?];
    let mut step = || -> Result<(f64, f32)> {
        let start = Instant::now();
        let r = train_step(
            (&store, &mut optimizer),
            &batches,
            1e-5,
            1.0,
            options.recompute,
        )?;
        Ok((start.elapsed().as_secs_f64() * 1e3, r.loss))
    };
    for i in 0..options.warmup {
        step()?;
        progress(i + 1);
    }
    gpu.synchronize()?;
    gpu.reset_peak_memory()?;
    let mut times = Vec::with_capacity(options.steps);
    let mut losses = Vec::with_capacity(options.steps);
    for i in 0..options.steps {
        let (ms, loss) = step()?;
        times.push(ms);
        losses.push(loss);
        progress(options.warmup + i + 1);
    }
    let peak_memory_gib = gpu.peak_memory().map(|b| b as f64 / (1u64 << 30) as f64);
    drop((store, optimizer));
    let peak_gemm_tflops = gemm_tflops(&gpu, options.peak_gemm_size)?;
    Ok(report(
        &gpu,
        config,
        options,
        (times, losses),
        peak_gemm_tflops,
        peak_memory_gib,
    ))
}

fn report(
    gpu: &Gpu,
    config: &ModelConfig,
    options: &TrainBenchOptions,
    (times, losses): (Vec<f64>, Vec<f32>),
    peak_gemm_tflops: f64,
    peak_memory_gib: Option<f64>,
) -> TrainBenchReport {
    let step_ms = median(times.clone());
    let flops = step_flops(config, options.batch, options.seq);
    let tflops = flops / (step_ms / 1e3) / 1e12;
    TrainBenchReport {
        device: gpu.describe(),
        batch: options.batch,
        seq: options.seq,
        dtype: options.dtype,
        recompute: options.recompute,
        params: config.num_parameters(),
        step_ms_median: step_ms,
        step_ms_all: times,
        tokens_per_s: (options.batch * options.seq) as f64 / (step_ms / 1e3),
        step_flops: flops,
        tflops,
        peak_gemm_tflops,
        peak_gemm_size: options.peak_gemm_size,
        mfu: tflops / peak_gemm_tflops,
        peak_memory_gib,
        losses,
    }
}

/// The rate of a square bf16 GEMM of side `n` (cuBLAS on a device), in TFLOP/s: the
/// peak the MFU is measured against, as tools/bench_torch_gpu.py measures torch's.
fn gemm_tflops(gpu: &Gpu, n: usize) -> Result<f64> {
    let a = gpu.zeros::<bf16>(n * n)?;
    let b = gpu.zeros::<bf16>(n * n)?;
    let mut c = gpu.zeros::<bf16>(n * n)?;
    let mut run = || gpu.gemm(&mut c, &a, false, &b, true, (n, n, n), false);
    run()?;
    let times = gpu.time_ms(10, run)?;
    Ok(2.0 * (n as f64).powi(3) / (median(times) / 1e3) / 1e12)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ModelConfig {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/configs/tiny-qwen2.json"
        );
        ModelConfig::from_file(std::path::Path::new(path)).unwrap()
    }

    #[test]
    fn tokens_are_the_ones_tools_bench_torch_py_builds() {
        // tools/bench_torch.py's bench_tokens(i, 151936) for these i.
        let expected = [
            (0, 12345),
            (1, 126186),
            (2, 47643),
            (1000, 125857),
            (16383, 138504),
        ];
        for (i, token) in expected {
            assert_eq!(bench_token(i, 151_936), token, "token {i}");
        }
    }

    #[test]
    fn flops_are_counted_as_the_pytorch_baseline_counts_them() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/configs/qwen2.5-0.5b.json"
        );
        let qwen = ModelConfig::from_file(std::path::Path::new(path)).unwrap();
        // 494.0M parameters (tied embedding once), 16 x 1024 tokens.
        assert_eq!(qwen.num_parameters(), 494_032_768);
        let expected = 6.0 * 494_032_768.0 * 16384.0 + 6.0 * 24.0 * 14.0 * 64.0 * 1024.0 * 16384.0;
        assert_eq!(step_flops(&qwen, 16, 1024), expected);
    }

    #[test]
    fn the_benchmark_runs_on_the_emulator() {
        let options = TrainBenchOptions {
            batch: 2,
            seq: 16,
            warmup: 1,
            steps: 2,
            dtype: BenchDtype::Bf16,
            recompute: true,
            peak_gemm_size: 64,
        };
        let mut seen = Vec::new();
        let r = bench_train(Device::Emulator, &tiny(), &options, |done| seen.push(done)).unwrap();
        assert_eq!(seen, [1, 2, 3]);
        assert_eq!(r.step_ms_all.len(), 2);
        assert!(r.tokens_per_s > 0.0 && r.mfu > 0.0 && r.peak_memory_gib.is_none());
        assert!(r.losses.iter().all(|l| l.is_finite()));
        let zero_steps = TrainBenchOptions {
            steps: 0,
            ..options
        };
        assert!(bench_train(Device::Emulator, &tiny(), &zero_steps, |_| {}).is_err());
        let on_cpu = bench_train(Device::Cpu, &tiny(), &options, |_| {});
        assert!(on_cpu
            .unwrap_err()
            .to_string()
            .contains("--device emulator"));
    }
}
