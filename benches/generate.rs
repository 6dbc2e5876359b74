//! Generation throughput on the real SmolLM2-135M-Instruct (fetched by
//! tools/fetch-test-models.sh): prefill tokens/s on a 256-token prompt, and greedy decode
//! tokens/s at batch 1 and batch 8. The PyTorch side is tools/bench_torch_generate.py,
//! run in the same sitting; the README's table holds both.

use std::time::Duration;

// The integration tests' paths to the cached test models.
#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
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

fn bench_generation(c: &mut Criterion) {
    let model =
        Model::load(&common::real_model_dir("smollm2-135m-instruct")).expect("load SmolLM2");
    let mut group = c.benchmark_group("smollm2_135m");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));

    group.throughput(Throughput::Elements(PROMPT_TOKENS as u64));
    group.bench_function("prefill_256", |b| {
        let p = prompt(0, PROMPT_TOKENS);
        b.iter(|| {
            let mut cache = vec![KvCache::new(&model.config)];
            model.forward_step(&[&p], &mut cache).unwrap()
        })
    });

    for batch in [1usize, 8] {
        let prompts: Vec<Vec<u32>> = (0..batch).map(|s| prompt(s, 32)).collect();
        let cfg = SamplingConfig {
            max_new_tokens: NEW_TOKENS,
            batch_size: batch,
            ..SamplingConfig::default()
        };
        // Throughput counts generated tokens; the short prompts' prefill is included,
        // as it is in transformers' generate.
        group.throughput(Throughput::Elements((batch * NEW_TOKENS) as u64));
        group.bench_function(format!("greedy_decode_batch{batch}"), |b| {
            b.iter(|| generate(&model, &prompts, &[], &cfg, |_, _| {}).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_generation);
criterion_main!(benches);
