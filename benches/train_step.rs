//! One full SFT step on the real SmolLM2-135M-Instruct (fetched by
//! tools/fetch-test-models.sh) on the CPU: forward, loss, backward, gradient clipping and
//! AdamW, on 4 × 256 tokens. tools/bench_torch_train_cpu.py runs the same step in
//! PyTorch + transformers; run both in one sitting and compare tokens/s.

use std::time::Duration;

// The integration tests' paths to the cached test models.
#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use scotd::model::{Batch, Model, ParamStore};
use scotd::optim::{AdamW, AdamWConfig};
use scotd::train::train_step;
use scotd::{DType, Device};

const ROWS: usize = 4;
const SEQ: usize = 256;

fn bench_train_step(c: &mut Criterion) {
    let model =
        Model::load(&common::real_model_dir("smollm2-135m-instruct")).expect("load SmolLM2");
    let store = ParamStore::new(&model, Device::Cpu, DType::F32).expect("parameter store");
    let mut optimizer = AdamW::new(&store.flat, AdamWConfig::default()).expect("AdamW");
    let ids: Vec<u32> = (0..ROWS * SEQ)
        .map(|i| (1000 + (i * 7919) % 30_000) as u32)
        .collect();
    let targets: Vec<i64> = (0..ROWS * SEQ)
        .map(|i| {
            if (i + 1) % SEQ == 0 {
                -100
            } else {
                ids[i + 1] as i64
            }
        })
        .collect();
    let micro_batches = [(Batch::new(ids, ROWS, SEQ).unwrap(), targets)];

    let mut group = c.benchmark_group("smollm2_135m");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(40));
    group.throughput(Throughput::Elements((ROWS * SEQ) as u64));
    group.bench_function("train_step_adamw_4x256", |b| {
        b.iter(|| {
            train_step((&store, &mut optimizer), &micro_batches, 1e-5, 1.0, false).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, bench_train_step);
criterion_main!(benches);
