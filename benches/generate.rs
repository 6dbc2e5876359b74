//! Generation throughput on the real SmolLM2-135M-Instruct (fetched by
//! tools/fetch-test-models.sh), stored in f32 and in bf16 (loaded with
//! `Model::load_for_inference`, so the bf16 matrices stay bf16): prefill tokens/s on a
//! 256-token prompt, and greedy decode tokens/s at batch 1, 8 and 32 (issue 5's sampling
//! throughput). The PyTorch side
//! is tools/bench_torch_generate.py, run in the same sitting; the README's table holds
//! both.

use std::time::{Duration, Instant};

// The integration tests' paths to the cached test models.
#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use scotd::model::{KvCache, Model};
use scotd::sample::{generate, SamplingConfig};

const PROMPT_TOKENS: usize = 256;
const NEW_TOKENS: usize = 64;

/// A deterministic prompt of ordinary token ids.
fn prompt(seed: usize, len: usize) -> Vec<u32> {
    (0..len)
        .map(|i| (1000 + (i * 7919 + seed * 104_729) % 30_000) as u32)
        .collect()
}

/// Seconds to generate `new_tokens` greedy tokens for each prompt.
fn time_generate(model: &Model, prompts: &[Vec<u32>], new_tokens: usize) -> Duration {
    let cfg = SamplingConfig {
        max_new_tokens: new_tokens,
        batch_size: prompts.len(),
        ..SamplingConfig::default()
    };
    let start = Instant::now();
    generate(model, prompts, &[], &cfg, |_, _| {}).unwrap();
    start.elapsed()
}

fn bench_model(c: &mut Criterion, name: &str, dir: &str) {
    let model = Model::load_for_inference(&common::real_model_dir(dir)).expect("load SmolLM2");
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));

    group.throughput(Throughput::Elements(PROMPT_TOKENS as u64));
    group.bench_function("prefill_256", |b| {
        let p = prompt(0, PROMPT_TOKENS);
        b.iter(|| {
            let mut cache = KvCache::for_model(&model, p.len()).unwrap();
            let seq = cache.add_sequence(p.len()).unwrap();
            model.forward_step(&[(seq, &p)], &mut cache).unwrap()
        })
    });

    // Decode time is t(64 new tokens) - t(1 new token), as tools/bench_torch_generate.py
    // measures transformers' generate: the prompts' prefill and the setup cancel out,
    // leaving 63 decode steps.
    group.sampling_mode(SamplingMode::Flat);
    for batch in [1usize, 8, 32] {
        let prompts: Vec<Vec<u32>> = (0..batch).map(|s| prompt(s, 32)).collect();
        group.throughput(Throughput::Elements((batch * (NEW_TOKENS - 1)) as u64));
        group.bench_function(format!("greedy_decode_batch{batch}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        time_generate(&model, &prompts, NEW_TOKENS)
                            - time_generate(&model, &prompts, 1)
                    })
                    .sum()
            })
        });
    }
    group.finish();
}

fn bench_generation(c: &mut Criterion) {
    bench_model(c, "smollm2_135m_f32", "smollm2-135m-instruct");
    bench_model(c, "smollm2_135m_bf16", "smollm2-135m-instruct-bf16");
}

criterion_group!(benches, bench_generation);
criterion_main!(benches);
