//! KV-cache decoding against the full forward, and the batched sampler's guarantees, on
//! small random models (the real-model goldens live in tests/real_models.rs).

use std::path::Path;

use scotd::autograd::no_grad;
use scotd::model::{Batch, KvCache, Model, ModelConfig};
use scotd::sample::{argmax, generate, SamplingConfig, StopReason};

fn model(max_positions: usize) -> Model {
    let json = format!(
        r#"{{"model_type": "qwen2", "hidden_size": 36, "num_hidden_layers": 3,
            "num_attention_heads": 6, "num_key_value_heads": 2, "intermediate_size": 50,
            "vocab_size": 41, "tie_word_embeddings": true, "max_position_embeddings": {max_positions}}}"#
    );
    let mut model = Model::random(
        ModelConfig::from_json(&json, Path::new("inline")).unwrap(),
        11,
    );
    // A larger init than the default 0.02 so that logits are far from uniform and the
    // comparisons below are sensitive.
    for (_, p) in model.parameters() {
        p.write_f32().unwrap().iter_mut().for_each(|w| *w *= 8.0);
    }
    model.config.max_position_embeddings = Some(max_positions);
    model
}

fn full_logits(model: &Model, ids: &[u32]) -> Vec<f32> {
    let _g = no_grad();
    model
        .forward(&Batch::new(ids.to_vec(), 1, ids.len()).unwrap())
        .unwrap()
        .to_vec_f32()
        .unwrap()
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let err = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
        / scale;
    assert!(err < 1e-5, "{what}: relative error {err:e}");
}

#[test]
fn cached_prefill_and_decode_match_the_full_forward() {
    let model = model(64);
    let v = model.config.vocab_size;
    let seq_a: Vec<u32> = vec![3, 17, 5, 40, 0, 9, 22, 31, 8];
    let seq_b: Vec<u32> = vec![12, 1, 30, 7, 7, 19];
    let (full_a, full_b) = (full_logits(&model, &seq_a), full_logits(&model, &seq_b));
    // The second sequence reserves nothing: its first step takes a block from the pool.
    let mut cache = KvCache::for_model(&model, 32).unwrap();
    let (a, b) = (
        cache.add_sequence(9).unwrap(),
        cache.add_sequence(0).unwrap(),
    );
    // Prefill of different lengths in one step, then mixed chunk sizes.
    let steps: [(&[u32], &[u32]); 3] = [
        (&seq_a[..4], &seq_b[..2]),
        (&seq_a[4..5], &seq_b[2..5]),
        (&seq_a[5..9], &seq_b[5..6]),
    ];
    let (mut end_a, mut end_b) = (0, 0);
    for (chunk_a, chunk_b) in steps {
        let logits = model
            .forward_step(&[(a, chunk_a), (b, chunk_b)], &mut cache)
            .unwrap()
            .to_vec_f32()
            .unwrap();
        end_a += chunk_a.len();
        end_b += chunk_b.len();
        assert_close(
            &logits[..v],
            &full_a[(end_a - 1) * v..end_a * v],
            "sequence a",
        );
        assert_close(
            &logits[v..],
            &full_b[(end_b - 1) * v..end_b * v],
            "sequence b",
        );
    }
    assert_eq!((cache.len(a).unwrap(), cache.len(b).unwrap()), (9, 6));
}

/// Greedy decoding the slow way: the whole sequence through the full forward each step.
fn greedy_without_cache(model: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut ids = prompt.to_vec();
    let v = model.config.vocab_size;
    for _ in 0..n {
        let logits = full_logits(model, &ids);
        ids.push(argmax(&logits[logits.len() - v..]));
    }
    ids[prompt.len()..].to_vec()
}

#[test]
fn greedy_batched_equals_one_by_one_and_the_uncached_loop() {
    let model = model(64);
    let prompts: Vec<Vec<u32>> = vec![
        vec![1, 2, 3],
        vec![9],
        vec![4, 30, 21, 8, 8, 15, 2],
        vec![33, 6],
    ];
    let cfg = SamplingConfig {
        max_new_tokens: 12,
        batch_size: 2, // fewer slots than prompts: finished sequences must free theirs
        ..SamplingConfig::default()
    };
    let batched = generate(&model, &prompts, &[], &cfg, |_, _| {}).unwrap();
    for (p, got) in prompts.iter().zip(&batched) {
        let alone = generate(&model, std::slice::from_ref(p), &[], &cfg, |_, _| {}).unwrap();
        assert_eq!(got, &alone[0]);
        assert_eq!(got.ids, greedy_without_cache(&model, p, 12));
        assert_eq!(got.stop, StopReason::MaxNewTokens);
    }
}

#[test]
fn eos_stops_each_sequence_on_its_own() {
    let model = model(64);
    let prompts: Vec<Vec<u32>> = vec![vec![1, 2, 3], vec![4, 30, 21]];
    let cfg = SamplingConfig {
        max_new_tokens: 10,
        ..SamplingConfig::default()
    };
    let free = generate(&model, &prompts, &[], &cfg, |_, _| {}).unwrap();
    // Make the third token of the first continuation an end-of-sequence id.
    let eos = free[0].ids[2];
    let stopped = generate(&model, &prompts, &[eos], &cfg, |_, _| {}).unwrap();
    let first_eos = free[0].ids.iter().position(|&t| t == eos).unwrap();
    assert_eq!(stopped[0].ids, free[0].ids[..=first_eos]);
    assert_eq!(stopped[0].stop, StopReason::Eos);
    let cut = free[1]
        .ids
        .iter()
        .position(|&t| t == eos)
        .map_or(10, |i| i + 1);
    assert_eq!(stopped[1].ids, free[1].ids[..cut]);
}

#[test]
fn context_limit_stops_generation_and_rejects_long_prompts() {
    let model = model(8);
    let cfg = SamplingConfig {
        max_new_tokens: 20,
        ..SamplingConfig::default()
    };
    let out = generate(&model, &[vec![1, 2, 3]], &[], &cfg, |_, _| {}).unwrap();
    assert_eq!(out[0].stop, StopReason::ContextFull);
    assert_eq!(
        out[0].ids.len(),
        5,
        "3 prompt tokens + 5 generated fill the 8 positions"
    );

    let err = generate(&model, &[vec![1; 8]], &[], &cfg, |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("prompt 0 has 8 tokens") && err.contains("context is 8"),
        "{err}"
    );
    let err = generate(&model, &[vec![1], vec![]], &[], &cfg, |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("prompt 1 is empty"), "{err}");
    let err = generate(&model, &[vec![41]], &[], &cfg, |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("token id 41"), "{err}");
}

#[test]
fn sampling_is_seeded_and_top_p_narrows_to_greedy() {
    let model = model(64);
    let prompts = vec![vec![5, 6, 7]; 4];
    let sampled = |seed, temperature, top_p| {
        let cfg = SamplingConfig {
            max_new_tokens: 16,
            temperature,
            top_p,
            seed,
            batch_size: 3,
            ..SamplingConfig::default()
        };
        generate(&model, &prompts, &[], &cfg, |_, _| {}).unwrap()
    };
    let a = sampled(1, 1.0, 1.0);
    assert_eq!(a, sampled(1, 1.0, 1.0), "same seed, same traces");
    assert_ne!(a, sampled(2, 1.0, 1.0), "another seed, other traces");
    assert_ne!(
        a[0].ids, a[1].ids,
        "copies of one prompt get their own streams"
    );
    let greedy = sampled(1, 0.0, 1.0);
    assert_eq!(
        sampled(1, 1.0, 1e-6),
        greedy,
        "top_p -> 0 keeps only the argmax"
    );
}

#[test]
fn streaming_callback_sees_every_token_in_order() {
    let model = model(64);
    let prompts: Vec<Vec<u32>> = vec![vec![1, 2], vec![3]];
    let mut seen = vec![Vec::new(); 2];
    let cfg = SamplingConfig {
        max_new_tokens: 6,
        ..SamplingConfig::default()
    };
    let out = generate(&model, &prompts, &[], &cfg, |p, t| seen[p].push(t)).unwrap();
    assert_eq!(seen[0], out[0].ids);
    assert_eq!(seen[1], out[1].ids);
}

#[test]
fn a_kv_budget_too_small_for_the_longest_request_is_refused() {
    let model = model(64);
    let cfg = SamplingConfig {
        max_new_tokens: 20,
        kv_budget: Some(100),
        ..SamplingConfig::default()
    };
    let err = generate(&model, &[vec![1, 2, 3]], &[], &cfg, |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("KV budget of 100 bytes") && err.contains("needs 23"),
        "{err}"
    );
}

#[test]
fn a_batch_of_no_sequences_is_refused() {
    let cfg = SamplingConfig {
        batch_size: 0,
        ..SamplingConfig::default()
    };
    let err = generate(&model(64), &[vec![1, 2, 3]], &[], &cfg, |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("batch_size must be at least 1"), "{err}");
}

/// A config vocabulary padded past the tokenizer's: the padding rows' logits are made the
/// largest (the final hidden states times 50 × their embedding rows), so greedy and
/// sampled decoding pick them when allowed and never under `vocab_limit`.
#[test]
fn padding_rows_of_the_vocabulary_are_never_chosen() {
    const TOKENIZER_VOCAB: usize = 30;
    let model = model(64);
    let h = model.config.hidden_size;
    model.embed_tokens.write_f32().unwrap()[TOKENIZER_VOCAB * h..]
        .iter_mut()
        .for_each(|w| *w *= 50.0);
    let prompts: Vec<Vec<u32>> = vec![vec![1, 2, 3], vec![7, 20], vec![12, 5, 9, 28]];
    for temperature in [0.0, 1.0] {
        let free = SamplingConfig {
            max_new_tokens: 12,
            temperature,
            ..SamplingConfig::default()
        };
        let limited = SamplingConfig {
            vocab_limit: Some(TOKENIZER_VOCAB),
            ..free.clone()
        };
        let ids = |cfg: &SamplingConfig| -> Vec<u32> {
            let out = generate(&model, &prompts, &[], cfg, |_, _| {}).unwrap();
            out.into_iter().flat_map(|g| g.ids).collect()
        };
        let padded = ids(&free)
            .iter()
            .filter(|&&id| id as usize >= TOKENIZER_VOCAB)
            .count();
        assert!(
            padded > 0,
            "temperature {temperature}: the padding rows never won"
        );
        assert!(
            ids(&limited)
                .iter()
                .all(|&id| (id as usize) < TOKENIZER_VOCAB),
            "temperature {temperature}: a padding id was chosen"
        );
    }
}

/// The server's use of the decoder: requests join while others are mid-decode, each with
/// its own settings; a greedy one gets exactly what it gets alone, a sampled one what its
/// seed gives alone, and a cancelled one frees its room for the next.
#[test]
fn requests_joining_mid_decode_keep_their_own_settings() {
    use scotd::sample::{Decoder, Event, RequestSettings};
    let model = model(64);
    let greedy = |max_new_tokens| RequestSettings {
        max_new_tokens,
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        seed: 0,
    };
    let sampled = RequestSettings {
        temperature: 1.3,
        top_k: 5,
        seed: 99,
        ..greedy(9)
    };
    let alone = |prompt: &[u32], settings: RequestSettings| {
        let mut decoder = Decoder::new(&model, &[], 64, 1, None).unwrap();
        decoder.submit(0, prompt.to_vec(), settings).unwrap();
        let mut ids = Vec::new();
        while !decoder.is_idle() {
            decoder
                .step(|e| {
                    if let Event::Token { id, .. } = e {
                        ids.push(id);
                    }
                    Ok(())
                })
                .unwrap();
        }
        ids
    };
    let requests: Vec<(Vec<u32>, RequestSettings)> = vec![
        (vec![1, 2, 3], greedy(10)),
        (vec![9], sampled),
        (vec![4, 30, 21], greedy(4)),
        (vec![33, 6], greedy(7)),
    ];
    // Room for two sequences at a time; one more request to be cancelled mid-decode.
    let mut decoder = Decoder::new(&model, &[], 32, 3, None).unwrap();
    decoder.submit(100, vec![5, 5], greedy(12)).unwrap();
    let mut got: Vec<Vec<u32>> = vec![Vec::new(); requests.len()];
    let mut finished = 0;
    for step in 0.. {
        if step < requests.len() {
            let (prompt, settings) = &requests[step];
            decoder.submit(step, prompt.clone(), *settings).unwrap();
        }
        if step == 2 {
            assert!(decoder.cancel(100));
        }
        if decoder.is_idle() {
            break;
        }
        decoder
            .step(|e| {
                match e {
                    Event::Token { request: 100, .. } => {}
                    Event::Token { request, id } => got[request].push(id),
                    Event::Finished { request, result } => {
                        assert_eq!(result.ids, got[request]);
                        finished += 1;
                    }
                }
                Ok(())
            })
            .unwrap();
    }
    assert_eq!(finished, requests.len());
    for (i, (prompt, settings)) in requests.iter().enumerate() {
        assert_eq!(got[i].len(), settings.max_new_tokens, "request {i}");
        assert_eq!(got[i], alone(prompt, *settings), "request {i}");
    }
    assert!(
        decoder.submit(7, vec![1; 40], greedy(20)).is_err(),
        "60 positions never fit 32"
    );
}
