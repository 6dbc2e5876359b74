//! The engine on a real pretrained model, SmolLM2-135M-Instruct (Llama architecture,
//! GQA 9:3, 30 layers), against transformers: last-position logits, greedy
//! continuations one by one and batched, and the KV cache against the full forward.
//! The model is fetched by tools/fetch-test-models.sh (run by the README's test
//! command); the goldens were made by tools/make_real_model_goldens.py.

mod common;

use scotd::autograd::no_grad;
use scotd::model::{Batch, Model};
use scotd::sample::{generate, SamplingConfig, StopReason};
use serde_json::Value;

fn goldens() -> Value {
    fixture("real_models/smollm2_generation.json")
}

fn fixture(relative: &str) -> Value {
    serde_json::from_slice(&std::fs::read(common::fixture(relative)).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn full_forward_last_logits(model: &Model, prompt: &[u32]) -> Vec<f32> {
    let _g = no_grad();
    let logits = model
        .forward(&Batch::new(prompt.to_vec(), 1, prompt.len()).unwrap())
        .unwrap()
        .to_vec_f32()
        .unwrap();
    logits[logits.len() - model.config.vocab_size..].to_vec()
}

/// Our logits at the recorded indices, and the log-sum-exp, within 1e-4 relative.
fn check_logits(what: &str, ours: &[f32], want: &Value) {
    let indices = ids(&want["indices"]);
    let values: Vec<f64> = want["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let scale = values.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for (&i, &v) in indices.iter().zip(&values) {
        let err = (ours[i as usize] as f64 - v).abs() / scale;
        assert!(
            err < 1e-4,
            "{what}: logit {i} is {} vs transformers {v} ({err:e})",
            ours[i as usize]
        );
    }
    let max = ours.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max
        + ours
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln();
    let want_lse = want["logsumexp"].as_f64().unwrap();
    assert!(
        ((lse - want_lse) / want_lse).abs() < 1e-4,
        "{what}: logsumexp {lse} vs {want_lse}"
    );
    assert_eq!(
        scotd::sample::argmax(ours),
        want["argmax"].as_u64().unwrap() as u32,
        "{what}: argmax"
    );
}

fn stop_name(stop: StopReason) -> &'static str {
    match stop {
        StopReason::Eos => "eos",
        StopReason::MaxNewTokens => "max_new_tokens",
        StopReason::ContextFull => "context_full",
    }
}

#[test]
fn smollm2_matches_transformers() {
    let model = Model::load(&common::real_model_dir("smollm2-135m-instruct")).unwrap();
    check_against_transformers(&model, &goldens());
}

/// The checkpoint stored in bf16, kept in bf16 by the inference loader, against
/// transformers running the same checkpoint upcast to f32.
#[test]
fn smollm2_bf16_weights_match_transformers_upcast_to_f32() {
    let dir = common::real_model_dir("smollm2-135m-instruct-bf16");
    let model = Model::load_for_inference(&dir).unwrap();
    assert_eq!(model.embed_tokens.dtype(), scotd::DType::BF16);
    assert_eq!(model.layers[0].q_proj.weight.dtype(), scotd::DType::BF16);
    let g = fixture("real_models/smollm2_bf16_generation.json");
    assert_eq!(g["checkpoint_dtype"], "bfloat16");
    check_against_transformers(&model, &g);
}

/// Last-position logits of every prompt, greedy continuations batched (with and
/// without EOS) and alone, all as the goldens `g` record them.
fn check_against_transformers(model: &Model, g: &Value) {
    let prompts: Vec<&Value> = g["prompts"].as_array().unwrap().iter().collect();
    let prompt_ids: Vec<Vec<u32>> = prompts.iter().map(|p| ids(&p["prompt_ids"])).collect();
    let eos = ids(&g["eos_token_ids"]);
    let cfg = SamplingConfig {
        max_new_tokens: g["max_new_tokens"].as_u64().unwrap() as usize,
        batch_size: prompts.len(),
        ..SamplingConfig::default()
    };

    for (n, (p, ids_n)) in prompts.iter().zip(&prompt_ids).enumerate() {
        check_logits(
            &format!("prompt {n}"),
            &full_forward_last_logits(model, ids_n),
            &p["last_logits"],
        );
    }
    let batched = generate(model, &prompt_ids, &eos, &cfg, |_, _| {}).unwrap();
    for (n, (p, got)) in prompts.iter().zip(&batched).enumerate() {
        assert_eq!(
            got.ids,
            ids(&p["greedy_ids"]),
            "prompt {n}: batched greedy continuation"
        );
        assert_eq!(
            stop_name(got.stop),
            p["stop_reason"].as_str().unwrap(),
            "prompt {n}: stop reason"
        );
    }
    // Past EOS too, so that every prompt, chat ones included, is compared over all
    // max_new_tokens greedy tokens.
    let no_eos = generate(model, &prompt_ids, &[], &cfg, |_, _| {}).unwrap();
    for (n, (p, got)) in prompts.iter().zip(&no_eos).enumerate() {
        let want = ids(&p["greedy_ids_no_eos"]);
        assert_eq!(want.len(), cfg.max_new_tokens);
        assert_eq!(
            got.ids, want,
            "prompt {n}: greedy continuation run past EOS"
        );
    }
    // One by one, for the two longest continuations (the rest are covered by the batch).
    for n in [1, 2] {
        let alone = generate(model, &prompt_ids[n..=n], &eos, &cfg, |_, _| {}).unwrap();
        assert_eq!(alone[0], batched[n], "prompt {n}: alone vs batched");
    }
}

#[test]
fn smollm2_kv_cache_decoding_equals_the_full_forward() {
    let model = Model::load(&common::real_model_dir("smollm2-135m-instruct")).unwrap();
    let check = &goldens()["full_forward_logits_check"];
    let input = ids(&check["input_ids"]);
    let full = full_forward_last_logits(&model, &input);
    check_logits("full forward", &full, &check["last_logits"]);

    // Prefill half, then one token at a time through the cache.
    let mut cache = scotd::model::KvCache::for_model(&model, input.len()).unwrap();
    let seq = cache.add_sequence(input.len()).unwrap();
    let half = input.len() / 2;
    let mut last = model
        .forward_step(&[(seq, &input[..half])], &mut cache)
        .unwrap();
    for t in half..input.len() {
        last = model
            .forward_step(&[(seq, &input[t..=t])], &mut cache)
            .unwrap();
    }
    let cached = last.to_vec_f32().unwrap();
    let scale = full.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let err = cached
        .iter()
        .zip(&full)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
        / scale;
    assert!(
        err < 1e-5,
        "KV-cache logits differ from the full forward by {err:e} (relative)"
    );
    assert_eq!(
        scotd::sample::argmax(&cached),
        check["expected_next_id"].as_u64().unwrap() as u32
    );
}

scotd::gpu_tests! {
    /// The same model on a GPU device (the CPU emulator of CUDA in CI), in f32 through the
    /// CUDA kernels, shortened: the last-position logits of two prompts within 1e-4 of
    /// transformers, and a batch of two greedy continuations (KV cache, prefill then
    /// decode) token-identical to transformers' over their first 8 tokens.
    fn smollm2_on_a_gpu_device_matches_transformers(device: Device) {
        let model = Model::load(&common::real_model_dir("smollm2-135m-instruct"))
            .unwrap()
            .to_device(device, scotd::DType::F32)
            .unwrap();
        assert_eq!(model.device(), device);
        let g = goldens();
        let prompts: Vec<&Value> = g["prompts"].as_array().unwrap().iter().take(2).collect();
        let prompt_ids: Vec<Vec<u32>> = prompts.iter().map(|p| ids(&p["prompt_ids"])).collect();
        for (n, (p, ids_n)) in prompts.iter().zip(&prompt_ids).enumerate() {
            let ours = full_forward_last_logits(&model, ids_n);
            check_logits(&format!("{device} prompt {n}"), &ours, &p["last_logits"]);
        }
        let cfg = SamplingConfig {
            max_new_tokens: 8,
            batch_size: 2,
            ..SamplingConfig::default()
        };
        let got = generate(&model, &prompt_ids, &[], &cfg, |_, _| {}).unwrap();
        for (n, (p, got)) in prompts.iter().zip(&got).enumerate() {
            let want = ids(&p["greedy_ids_no_eos"]);
            assert_eq!(got.ids, want[..8], "{device} prompt {n}: greedy tokens");
        }
    }
}

scotd::gpu_tests! {
    /// The same model in bf16 on a GPU device (weights and activations bf16, f32
    /// arithmetic): greedy continuations of two prompts compared with transformers' f32
    /// tokens, the agreement printed (tokens before the first divergence, share of equal
    /// tokens). bf16 moves logits by about 1 %, so near-ties may flip and the paths part;
    /// the first token of each prompt, decided by a clear margin, must agree.
    fn smollm2_in_bf16_on_a_gpu_device_agrees_with_f32(device: Device) {
        const NEW: usize = 12;
        let model = Model::load(&common::real_model_dir("smollm2-135m-instruct"))
            .unwrap()
            .to_device(device, scotd::DType::BF16)
            .unwrap();
        let g = goldens();
        let prompts: Vec<&Value> = g["prompts"].as_array().unwrap().iter().take(2).collect();
        let prompt_ids: Vec<Vec<u32>> = prompts.iter().map(|p| ids(&p["prompt_ids"])).collect();
        let cfg = SamplingConfig { max_new_tokens: NEW, batch_size: 2, ..SamplingConfig::default() };
        let got = generate(&model, &prompt_ids, &[], &cfg, |_, _| {}).unwrap();
        let (mut equal, mut total) = (0, 0);
        for (n, (p, got)) in prompts.iter().zip(&got).enumerate() {
            let want = &ids(&p["greedy_ids_no_eos"])[..NEW];
            let common = got.ids.iter().zip(want).take_while(|(a, b)| a == b).count();
            equal += got.ids.iter().zip(want).filter(|(a, b)| a == b).count();
            total += NEW;
            eprintln!("{device} bf16 prompt {n}: first {common} of {NEW} tokens as transformers' f32");
            assert_eq!(got.ids[0], want[0], "{device} bf16 prompt {n}: the first token");
        }
        eprintln!("{device} bf16: {equal} of {total} tokens equal to f32's");
    }
}
