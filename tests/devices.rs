//! The one model on every device, at shapes the project holds no checkpoint of: Llama
//! without biases and untied, Llama with attention biases and GQA 4:1, multi-head
//! attention at head dim 8, and Qwen2 at head dim 128 (bf16 on the flash kernels). On a
//! GPU device each trains five steps following the CPU's losses, and decodes greedily
//! (KV cache, prefill then decode) the CPU's tokens from the CPU's logits.

use std::path::Path;

use scotd::autograd::no_grad;
use scotd::backend::cuda::profile::Recorder;
use scotd::model::{Batch, Model, ModelConfig, ParamStore};
use scotd::ops::IGNORE_INDEX;
use scotd::optim::{AdamW, AdamWConfig};
use scotd::rng::Rng;
use scotd::sample::{generate, SamplingConfig};
use scotd::testing::relative_error;
use scotd::train::{train_step, MicroBatch};
use scotd::{DType, Device};

const STEPS: usize = 5;

/// (what, config.json) of each shape.
fn shapes() -> Vec<(&'static str, ModelConfig)> {
    let configs = [
        (
            "llama, MHA, no biases, untied",
            r#"{"model_type": "llama", "hidden_size": 24, "num_hidden_layers": 2,
               "num_attention_heads": 3, "num_key_value_heads": 3, "intermediate_size": 40,
               "vocab_size": 53, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
               "tie_word_embeddings": false}"#,
        ),
        (
            "llama, GQA 4:1, attention biases, tied",
            r#"{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 1, "intermediate_size": 72,
               "vocab_size": 67, "attention_bias": true, "tie_word_embeddings": true}"#,
        ),
        (
            "qwen2, head dim 128, untied",
            r#"{"model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 1,
               "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 128,
               "intermediate_size": 48, "vocab_size": 59, "rope_theta": 1000000.0,
               "rms_norm_eps": 1e-6, "tie_word_embeddings": false}"#,
        ),
    ];
    configs
        .into_iter()
        .map(|(what, json)| (what, ModelConfig::from_json(json, Path::new(what)).unwrap()))
        .collect()
}

/// One plain micro-batch of 2 × 11 and one packed row of two sequences, every fourth
/// target ignored.
fn micro_batches(vocab: usize) -> Vec<MicroBatch> {
    let mut rng = Rng::new(3);
    let mut ids = |n: usize| -> Vec<u32> { (0..n).map(|_| rng.below(vocab) as u32).collect() };
    let plain = Batch::new(ids(22), 2, 11).unwrap();
    let positions = (0..7).chain(0..6).collect();
    let packed = Batch::packed(
        ids(13),
        1,
        13,
        positions,
        Some([0; 7].into_iter().chain([1; 6]).collect()),
    )
    .unwrap();
    [plain, packed]
        .into_iter()
        .map(|b| {
            let n = b.input_ids.len();
            let targets = (0..n)
                .map(|i| match i {
                    _ if i % 4 == 3 || i + 1 == n => IGNORE_INDEX,
                    _ => b.input_ids[i + 1] as i64,
                })
                .collect();
            (b, targets)
        })
        .collect()
}

fn losses(model: &Model, (device, dtype): (Device, DType)) -> Vec<f32> {
    let store = ParamStore::new(model, device, dtype).unwrap();
    let mut optimizer = AdamW::new(&store.flat, AdamWConfig::default()).unwrap();
    let batches = micro_batches(model.config.vocab_size);
    (0..STEPS)
        .map(|_| {
            train_step((&store, &mut optimizer), &batches, 3e-3, 1.0, false)
                .unwrap()
                .loss
        })
        .collect()
}

fn assert_follows(what: &str, got: &[f32], want: &[f32], tolerance: f32) {
    for (step, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tolerance * w.abs(),
            "{what}: step {step}: {g} vs the CPU's {w}"
        );
    }
}

/// A random model with weights large enough that its logits are far from uniform (so
/// that greedy decoding is decided by clear margins).
fn sharp_model(config: &ModelConfig) -> Model {
    let model = Model::random(config.clone(), 17);
    for (_, p) in model.parameters() {
        p.write_f32().unwrap().iter_mut().for_each(|w| *w *= 6.0);
    }
    model
}

fn last_logits(model: &Model, ids: &[u32]) -> Vec<f32> {
    let _g = no_grad();
    let logits = model
        .forward(&Batch::new(ids.to_vec(), 1, ids.len()).unwrap())
        .unwrap();
    let all = logits.to_vec_f32().unwrap();
    all[all.len() - model.config.vocab_size..].to_vec()
}

fn greedy(model: &Model, prompts: &[Vec<u32>]) -> Vec<Vec<u32>> {
    let cfg = SamplingConfig {
        max_new_tokens: 6,
        batch_size: 2,
        ..SamplingConfig::default()
    };
    let got = generate(model, prompts, &[], &cfg, |_, _| {}).unwrap();
    got.into_iter().map(|g| g.ids).collect()
}

scotd::gpu_tests! {
    /// f32 training within 1e-4 of the CPU at every step, at every shape.
    fn f32_training_follows_the_cpu_at_every_shape(device: Device) {
        for (what, config) in shapes() {
            let model = Model::random(config, 5);
            let cpu = losses(&model, (Device::Cpu, DType::F32));
            let run = losses(&model, (device, DType::F32));
            assert_follows(what, &run, &cpu, 1e-4);
        }
    }
}

scotd::gpu_tests! {
    /// bf16 at head dim 128 trains on the flash kernels (d128) in both directions,
    /// within bf16's 3 % of the f32 CPU run.
    fn bf16_training_at_head_dim_128_runs_flash_and_follows_the_cpu(device: Device) {
        let (what, config) = shapes().pop().unwrap();
        let model = Model::random(config, 5);
        let cpu = losses(&model, (Device::Cpu, DType::F32));
        let recorder = Recorder::start();
        let run = losses(&model, (device, DType::BF16));
        for kernel in [
            "flash_attention_forward_d128",
            "flash_attention_delta_d128",
            "flash_attention_dq_d128",
            "flash_attention_dkv_d128",
        ] {
            assert!(recorder.launches(kernel) >= STEPS, "{kernel}: {:?}", recorder.kernels());
        }
        assert_follows(what, &run, &cpu, 3e-2);
    }
}

scotd::gpu_tests! {
    /// The last position's logits within 1e-5 of the CPU's, and greedy continuations of
    /// two prompts of different lengths decoded together, token for token the CPU's.
    fn inference_matches_the_cpu_at_every_shape(device: Device) {
        let prompts = vec![vec![1, 7, 3, 12, 9, 4, 0, 2], vec![5, 11, 6]];
        for (what, config) in shapes() {
            let cpu_model = sharp_model(&config);
            let model = cpu_model.to_device(device, DType::F32).unwrap();
            for prompt in &prompts {
                let err = relative_error(&last_logits(&model, prompt), &last_logits(&cpu_model, prompt));
                assert!(err < 1e-5, "{what}: logits off by {err:e}");
            }
            assert_eq!(greedy(&model, &prompts), greedy(&cpu_model, &prompts), "{what}");
        }
    }
}

/// Five prompts of different lengths (one of a single token).
fn ragged_prompts(vocab: usize) -> Vec<Vec<u32>> {
    let mut rng = Rng::new(29);
    [9, 3, 1, 14, 6]
        .into_iter()
        .map(|n| (0..n).map(|_| rng.below(vocab) as u32).collect())
        .collect()
}

fn decode_all(model: &Model, prompts: &[Vec<u32>], cfg: &SamplingConfig) -> Vec<Vec<u32>> {
    let got = generate(model, prompts, &[], cfg, |_, _| {}).unwrap();
    got.into_iter().map(|g| g.ids).collect()
}

scotd::gpu_tests! {
    /// Greedy continuations of five ragged prompts, two slots at a time (the others join
    /// as sequences finish) and under a KV budget that holds two sequences only (the
    /// third waits for blocks), are the CPU's decoded alone, at every shape.
    fn greedy_decoding_with_joins_and_a_tight_kv_budget_matches_the_cpu(device: Device) {
        for (what, config) in shapes() {
            let cpu_model = sharp_model(&config);
            let model = cpu_model.to_device(device, DType::F32).unwrap();
            let prompts = ragged_prompts(config.vocab_size);
            let alone = SamplingConfig { max_new_tokens: 7, batch_size: 1, ..SamplingConfig::default() };
            let want = decode_all(&cpu_model, &prompts, &alone);
            let per_token = scotd::model::KvCache::bytes_per_token(&config, DType::F32) as u64;
            let block = scotd::model::KV_BLOCK as u64;
            let tight = SamplingConfig {
                batch_size: 4,
                kv_budget: Some(2 * 2 * block * per_token), // two sequences of 2 blocks
                ..alone.clone()
            };
            for cfg in [SamplingConfig { batch_size: 2, ..alone.clone() }, tight] {
                let recorder = Recorder::start();
                assert_eq!(decode_all(&model, &prompts, &cfg), want, "{what}: {cfg:?}");
                // Prompts through attention, the rest over the paged cache, tokens chosen
                // on the device.
                for kernel in ["attention_forward_f32", "kv_cache_write_f32", "paged_attention_decode_f32", "choose_tokens_f32"] {
                    assert!(recorder.launches(kernel) > 0, "{what}: {kernel}: {:?}", recorder.kernels());
                }
            }
        }
    }
}

scotd::device_tests! {
    /// Sampled continuations (temperature, top-k, top-p) seeded per prompt: the same on a
    /// second run, and the same whatever the batch size and whichever prompts share the
    /// batch.
    fn seeded_sampling_reproduces_and_ignores_the_batch(device: Device) {
        let (_, config) = shapes().remove(1);
        let model = Model::random(config.clone(), 5).to_device(device, DType::F32).unwrap();
        let prompts = ragged_prompts(config.vocab_size);
        let cfg = SamplingConfig {
            max_new_tokens: 8,
            temperature: 0.9,
            top_k: 20,
            top_p: 0.9,
            seed: 41,
            batch_size: 3,
            ..SamplingConfig::default()
        };
        let first = decode_all(&model, &prompts, &cfg);
        assert_eq!(decode_all(&model, &prompts, &cfg), first, "a second run");
        let one_by_one = SamplingConfig { batch_size: 1, ..cfg.clone() };
        assert_eq!(decode_all(&model, &prompts, &one_by_one), first, "batch size 1");
        let distinct = first.iter().collect::<std::collections::HashSet<_>>().len();
        assert!(distinct > 1, "five prompts sampled alike: {first:?}");
    }
}

scotd::gpu_tests! {
    /// bf16 at head dim 128: fresh prompts through the flash kernel (two of one length
    /// side by side in one call), decoding over the paged cache in bf16; the greedy tokens
    /// of a sharp model are the f32 CPU's.
    fn bf16_decoding_prefills_on_flash_and_follows_the_cpu(device: Device) {
        let (what, config) = shapes().pop().unwrap();
        let cpu_model = sharp_model(&config);
        let model = cpu_model.to_device(device, DType::BF16).unwrap();
        let prompts = vec![vec![3, 9, 27, 1, 40], vec![8, 2, 33, 15, 4], vec![12, 6]];
        let cfg = SamplingConfig { max_new_tokens: 5, batch_size: 3, ..SamplingConfig::default() };
        let want = decode_all(&cpu_model, &prompts, &cfg);
        let recorder = Recorder::start();
        assert_eq!(decode_all(&model, &prompts, &cfg), want, "{what}");
        // One flash call for the two 5-token prompts and one for the 2-token one.
        assert_eq!(recorder.launches("flash_attention_forward_d128"), 2 * config.num_hidden_layers);
        assert!(recorder.launches("paged_attention_decode_bf16") > 0, "{:?}", recorder.kernels());
    }
}
