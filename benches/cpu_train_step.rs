//! CPU training-step benchmarks: the GEMMs a step is made of, one Qwen2 decoder layer
//! forward + backward, and whole-model loss + backward. The PyTorch side of the same
//! shapes is `tools/bench_torch_cpu.py`; `benches/RESULTS.md` holds the comparison.
//!
//!     cargo bench --bench cpu_train_step                 # everything (~3 min on 2 cores)
//!     cargo bench --bench cpu_train_step -- layer        # one group (criterion filter)
//!
//! Throughput is FLOP/s for the GEMMs (criterion's "elem/s" = FLOP/s) and tokens/s for
//! the train steps. After criterion's own report, a summary table (median time,
//! GFLOP/s, tokens/s) is printed and written to `target/criterion/scotd_summary.json`,
//! which `tools/bench_torch_cpu.py --compare` reads to print the scotd/PyTorch table.
//!
//! The decoder-layer benchmark composes the public ops exactly as `Model::layer_forward`
//! does (that function is private), over the parameters of a one-layer `Model::random`;
//! the layer's input is a parameter too, so backward computes dx as well, like PyTorch
//! with `hidden_states.requires_grad_()`. Its backward is seeded with a fixed random
//! output gradient.

use std::cell::OnceCell;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use criterion::{Criterion, SamplingMode, Throughput};
use scotd::backend::cpu::{matmul, Transpose};
use scotd::model::{Batch, Layer, Model, ModelConfig};
use scotd::ops::{self, Reduction};
use scotd::rng::Rng;
use scotd::Tensor;

/// One benchmark as the summary lists it.
struct Case {
    group: &'static str,
    id: String,
    shape: String,
    /// FLOPs per iteration (GEMMs) or tokens per iteration (train steps).
    work: Work,
}

#[derive(Clone, Copy)]
enum Work {
    Flops(u64),
    Tokens(u64),
}

/// A GEMM as a training step issues it: `c[m×n] = op(a) · op(b)`.
struct GemmShape {
    name: &'static str,
    what: &'static str,
    ta: Transpose,
    tb: Transpose,
    m: usize,
    n: usize,
    k: usize,
}

fn gemm_shapes() -> Vec<GemmShape> {
    use Transpose::{No, Yes};
    let g = |name, what, ta, tb, m, n, k| GemmShape {
        name,
        what,
        ta,
        tb,
        m,
        n,
        k,
    };
    vec![
        // SmolLM2-135M MLP up/gate projection over 512 tokens: forward, then the two
        // backward products of the same linear.
        g("smol_up_fwd", "x·Wᵀ (linear fwd)", No, Yes, 512, 1536, 576),
        g("smol_up_dx", "dy·W (linear dx)", No, No, 512, 576, 1536),
        g("smol_up_dw", "dyᵀ·x (linear dW)", Yes, No, 1536, 576, 512),
        // Qwen2.5-0.5B MLP up projection over 256 tokens.
        g(
            "qwen05_up_fwd",
            "x·Wᵀ (linear fwd)",
            No,
            Yes,
            256,
            4864,
            896,
        ),
        // SmolLM2-135M tied LM head over 256 tokens: the biggest single GEMM of a step.
        g(
            "smol_lmhead_fwd",
            "x·Eᵀ (LM head fwd)",
            No,
            Yes,
            256,
            49152,
            576,
        ),
        // A square reference point.
        g("square_1024", "a·b", No, No, 1024, 1024, 1024),
    ]
}

fn config(json: &str) -> ModelConfig {
    ModelConfig::from_json(json, Path::new("inline")).expect("benchmark configs are valid")
}

/// SmolLM2-135M's decoder layer shape, with Qwen2's q/k/v biases (one layer, tiny vocab).
const SMOL_LAYER: &str = r#"{"model_type": "qwen2", "hidden_size": 576, "num_hidden_layers": 1,
    "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "intermediate_size": 1536,
    "vocab_size": 64, "rope_theta": 100000.0, "rms_norm_eps": 1e-5}"#;

/// Qwen2.5-0.5B's decoder layer shape (one layer, tiny vocab).
const QWEN05_LAYER: &str = r#"{"model_type": "qwen2", "hidden_size": 896, "num_hidden_layers": 1,
    "num_attention_heads": 14, "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 4864,
    "vocab_size": 64, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6}"#;

/// A small Qwen2 for quick experiments.
const TINY_QWEN2: &str = r#"{"model_type": "qwen2", "hidden_size": 256, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 688,
    "vocab_size": 8192, "tie_word_embeddings": true, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6}"#;

/// SmolLM2-135M in full (Llama architecture: no biases; tied embeddings).
const SMOLLM2_135M: &str = r#"{"model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30,
    "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "intermediate_size": 1536,
    "vocab_size": 49152, "tie_word_embeddings": true, "rope_theta": 100000.0, "rms_norm_eps": 1e-5}"#;

fn random_tensor(rng: &mut Rng, shape: &[usize], std: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(rng.normal_vec(n, std), shape.to_vec()).expect("length matches shape")
}

fn bench_gemm(c: &mut Criterion, cases: &mut Vec<Case>) {
    let mut group = c.benchmark_group("gemm");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for s in gemm_shapes() {
        let flops = 2 * (s.m * s.n * s.k) as u64;
        let id = format!("{}_{}x{}x{}", s.name, s.m, s.n, s.k);
        // Operands are made on first use: criterion calls the closure once per
        // sample, and not at all when the command line's filter skips this benchmark.
        let operands = OnceCell::new();
        group.throughput(Throughput::Elements(flops));
        group.bench_function(&id, |bench| {
            let (a, b) = operands.get_or_init(|| {
                let mut rng = Rng::new(1);
                (
                    rng.normal_vec(s.m * s.k, 1.0),
                    rng.normal_vec(s.k * s.n, 1.0),
                )
            });
            let mut out = vec![0.0f32; s.m * s.n];
            bench.iter(|| {
                matmul(&mut out, a, s.ta, b, s.tb, (s.m, s.n, s.k), false);
                black_box(&out);
            })
        });
        cases.push(Case {
            group: "gemm",
            id,
            shape: format!(
                "{} m={} n={} k={} ({:?},{:?})",
                s.what, s.m, s.n, s.k, s.ta, s.tb
            ),
            work: Work::Flops(flops),
        });
    }
    group.finish();
}

/// `Model::layer_forward`, op for op, on a single row of `seq` tokens.
fn layer_forward(c: &ModelConfig, layer: &Layer, x: &Tensor, positions: &[u32]) -> Tensor {
    let (t, dh) = (positions.len(), c.head_dim);
    let h = ops::rmsnorm(x, &layer.input_layernorm, c.rms_norm_eps).unwrap();
    let heads = |lin: &scotd::model::Linear, n_heads: usize, rotate: bool| -> Tensor {
        let y = lin.forward(&h).unwrap().reshape([t, n_heads, dh]).unwrap();
        let y = if rotate {
            ops::rope(&y, positions, c.rope_theta).unwrap()
        } else {
            y
        };
        y.reshape([1, t, n_heads, dh]).unwrap()
    };
    let q = heads(&layer.q_proj, c.num_attention_heads, true);
    let k = heads(&layer.k_proj, c.num_key_value_heads, true);
    let v = heads(&layer.v_proj, c.num_key_value_heads, false);
    let attn = ops::attention(&q, &k, &v, None).unwrap();
    let attn = attn.reshape([t, c.num_attention_heads * dh]).unwrap();
    let x = ops::add(x, &layer.o_proj.forward(&attn).unwrap()).unwrap();
    let h = ops::rmsnorm(&x, &layer.post_attention_layernorm, c.rms_norm_eps).unwrap();
    let act = ops::swiglu(
        &layer.gate_proj.forward(&h).unwrap(),
        &layer.up_proj.forward(&h).unwrap(),
    )
    .unwrap();
    ops::add(&x, &layer.down_proj.forward(&act).unwrap()).unwrap()
}

fn bench_layer(c: &mut Criterion, cases: &mut Vec<Case>) {
    let mut group = c.benchmark_group("layer");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6));
    let seq = 256;
    for (name, json) in [("smollm2_135m", SMOL_LAYER), ("qwen25_05b", QWEN05_LAYER)] {
        let cfg = config(json);
        let state = OnceCell::new();
        let id = format!("{name}_fwd_bwd_1x{seq}");
        group.throughput(Throughput::Elements(seq as u64));
        group.bench_function(&id, |bench| {
            let (model, x, grad_out) = state.get_or_init(|| {
                let model = Model::random(cfg.clone(), 7);
                let mut rng = Rng::new(3);
                let x = random_tensor(&mut rng, &[seq, cfg.hidden_size], 1.0).into_param();
                let grad_out = random_tensor(&mut rng, &[seq, cfg.hidden_size], 1.0);
                (model, x, grad_out)
            });
            let positions: Vec<u32> = (0..seq as u32).collect();
            bench.iter(|| {
                let y = layer_forward(&model.config, &model.layers[0], x, &positions);
                black_box(y.backward_with(grad_out.clone()).unwrap());
            })
        });
        cases.push(Case {
            group: "layer",
            id,
            shape: format!(
                "1 layer, hidden {} heads {}/{} (q/kv) dh {} inter {}, 1x{seq} tokens",
                cfg.hidden_size,
                cfg.num_attention_heads,
                cfg.num_key_value_heads,
                cfg.head_dim,
                cfg.intermediate_size
            ),
            work: Work::Tokens(seq as u64),
        });
    }
    group.finish();
}

/// The ops of one SmolLM2-135M-shaped decoder layer (1 x 256 tokens), each forward +
/// backward on its own, as many times as the layer runs it: where a layer's time goes.
/// The inputs are parameters, so every input gradient is computed, as inside the layer.
/// Then the two model-level ops of the full SmolLM2-135M step (loss and embedding).
fn bench_ops(c: &mut Criterion, cases: &mut Vec<Case>) {
    let mut group = c.benchmark_group("ops");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let cfg = config(SMOL_LAYER);
    let (t, d, dh, inter) = (256, cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
    let (hq, hkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
    let positions: Vec<u32> = (0..t as u32).collect();
    let param = |rng: &mut Rng, shape: &[usize]| random_tensor(rng, shape, 1.0).into_param();
    let grad = |rng: &mut Rng, shape: &[usize]| random_tensor(rng, shape, 1.0);
    // (id, what, tensors made once, one forward + backward over them)
    type Run = Box<dyn Fn(&[Tensor])>;
    type Setup = Box<dyn Fn(&mut Rng) -> Vec<Tensor>>;
    let mut ops_cases: Vec<(&str, String, Setup, Run)> = Vec::new();

    // The seven projections, weights [out, in] as in the layer; x, weight (, bias), dy.
    let projections: Vec<(usize, usize, bool)> = vec![
        (d, hq * dh, true),  // q
        (d, hkv * dh, true), // k
        (d, hkv * dh, true), // v
        (hq * dh, d, false), // o
        (d, inter, false),   // gate
        (d, inter, false),   // up
        (inter, d, false),   // down
    ];
    let proj = projections.clone();
    ops_cases.push((
        "linear_x7",
        format!("q,k,v (+bias), o, gate, up, down over {t} tokens"),
        Box::new(move |rng| {
            proj.iter()
                .flat_map(|&(k, m, bias)| {
                    let mut v = vec![param(rng, &[t, k]), param(rng, &[m, k])];
                    v.push(if bias {
                        param(rng, &[m])
                    } else {
                        Tensor::scalar(0.0)
                    });
                    v.push(grad(rng, &[t, m]));
                    v
                })
                .collect()
        }),
        Box::new(move |ts| {
            for (chunk, &(_, _, bias)) in ts.chunks(4).zip(&projections) {
                let b = bias.then_some(&chunk[2]);
                let y = ops::linear(&chunk[0], &chunk[1], b).unwrap();
                black_box(y.backward_with(chunk[3].clone()).unwrap());
            }
        }),
    ));
    ops_cases.push((
        "attention",
        format!("causal GQA, q [1,{t},{hq},{dh}], k/v [1,{t},{hkv},{dh}]"),
        Box::new(move |rng| {
            vec![
                param(rng, &[1, t, hq, dh]),
                param(rng, &[1, t, hkv, dh]),
                param(rng, &[1, t, hkv, dh]),
                grad(rng, &[1, t, hq, dh]),
            ]
        }),
        Box::new(|ts| {
            let y = ops::attention(&ts[0], &ts[1], &ts[2], None).unwrap();
            black_box(y.backward_with(ts[3].clone()).unwrap());
        }),
    ));
    let eps = cfg.rms_norm_eps;
    ops_cases.push((
        "rmsnorm_x2",
        format!("[{t},{d}], twice"),
        Box::new(move |rng| vec![param(rng, &[t, d]), param(rng, &[d]), grad(rng, &[t, d])]),
        Box::new(move |ts| {
            for _ in 0..2 {
                let y = ops::rmsnorm(&ts[0], &ts[1], eps).unwrap();
                black_box(y.backward_with(ts[2].clone()).unwrap());
            }
        }),
    ));
    let theta = cfg.rope_theta;
    ops_cases.push((
        "rope_q_k",
        format!("q [{t},{hq},{dh}] and k [{t},{hkv},{dh}]"),
        Box::new(move |rng| {
            vec![
                param(rng, &[t, hq, dh]),
                grad(rng, &[t, hq, dh]),
                param(rng, &[t, hkv, dh]),
                grad(rng, &[t, hkv, dh]),
            ]
        }),
        Box::new(move |ts| {
            for pair in ts.chunks(2) {
                let y = ops::rope(&pair[0], &positions, theta).unwrap();
                black_box(y.backward_with(pair[1].clone()).unwrap());
            }
        }),
    ));
    ops_cases.push((
        "swiglu",
        format!("[{t},{inter}]"),
        Box::new(move |rng| {
            vec![
                param(rng, &[t, inter]),
                param(rng, &[t, inter]),
                grad(rng, &[t, inter]),
            ]
        }),
        Box::new(|ts| {
            let y = ops::swiglu(&ts[0], &ts[1]).unwrap();
            black_box(y.backward_with(ts[2].clone()).unwrap());
        }),
    ));
    ops_cases.push((
        "add_x2",
        format!("[{t},{d}], twice"),
        Box::new(move |rng| vec![param(rng, &[t, d]), param(rng, &[t, d]), grad(rng, &[t, d])]),
        Box::new(|ts| {
            for _ in 0..2 {
                let y = ops::add(&ts[0], &ts[1]).unwrap();
                black_box(y.backward_with(ts[2].clone()).unwrap());
            }
        }),
    ));

    // The model-level ops of SmolLM2-135M's step (once per step, not per layer), at its
    // vocabulary of 49152: the loss over the logits, and the embedding lookup.
    let vocab = 49152;
    let mut rng = Rng::new(10);
    let ids: Vec<u32> = (0..t).map(|_| rng.below(vocab) as u32).collect();
    let targets: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    ops_cases.push((
        "model_cross_entropy",
        format!("logits [{t},{vocab}], mean"),
        Box::new(move |rng| vec![random_tensor(rng, &[t, vocab], 2.0).into_param()]),
        Box::new(move |ts| {
            let loss = ops::cross_entropy(&ts[0], &targets, Reduction::Mean).unwrap();
            black_box(loss.backward().unwrap());
        }),
    ));
    ops_cases.push((
        "model_embedding",
        format!("weight [{vocab},{d}], {t} ids"),
        Box::new(move |rng| {
            vec![
                random_tensor(rng, &[vocab, d], 0.02).into_param(),
                grad(rng, &[t, d]),
            ]
        }),
        Box::new(move |ts| {
            let y = ops::embedding(&ts[0], &ids).unwrap();
            black_box(y.backward_with(ts[1].clone()).unwrap());
        }),
    ));

    for (name, what, setup, run) in ops_cases {
        let tensors = OnceCell::new();
        let id = match name.strip_prefix("model_") {
            Some(model_op) => format!("smollm2_{model_op}"),
            None => format!("smollm2_layer_{name}"),
        };
        group.throughput(Throughput::Elements(t as u64));
        group.bench_function(&id, |bench| {
            let ts = tensors.get_or_init(|| setup(&mut Rng::new(9)));
            bench.iter(|| run(ts))
        });
        cases.push(Case {
            group: "ops",
            id,
            shape: format!("fwd+bwd: {what}"),
            work: Work::Tokens(t as u64),
        });
    }
    group.finish();
}

fn bench_model(c: &mut Criterion, cases: &mut Vec<Case>) {
    let mut group = c.benchmark_group("model");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    for (name, json, batch, seq, measure) in [
        ("tiny_qwen2", TINY_QWEN2, 4, 128, 6),
        ("smollm2_135m", SMOLLM2_135M, 1, 256, 25),
    ] {
        group
            .warm_up_time(Duration::from_secs(2))
            .measurement_time(Duration::from_secs(measure));
        let cfg = &config(json);
        let n = batch * seq;
        let mut rng = Rng::new(5);
        let ids: Vec<u32> = (0..n).map(|_| rng.below(cfg.vocab_size) as u32).collect();
        // Next-token targets within each row, the last position of a row ignored.
        let targets: Vec<i64> = (0..n)
            .map(|i| {
                if (i + 1) % seq == 0 {
                    ops::IGNORE_INDEX
                } else {
                    ids[i + 1] as i64
                }
            })
            .collect();
        let data = Batch::new(ids, batch, seq).unwrap();
        let model = OnceCell::new();
        let id = format!("{name}_loss_bwd_{batch}x{seq}");
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(&id, |bench| {
            let model = model.get_or_init(|| Model::random(cfg.clone(), 11));
            bench.iter(|| {
                let loss = model.loss(&data, &targets, Reduction::Mean).unwrap();
                black_box(loss.backward().unwrap());
            })
        });
        cases.push(Case {
            group: "model",
            id,
            shape: format!(
                "{:?} {} layers, hidden {} heads {}/{} inter {} vocab {}{}, {batch}x{seq} tokens, {:.1}M params",
                cfg.architecture,
                cfg.num_hidden_layers,
                cfg.hidden_size,
                cfg.num_attention_heads,
                cfg.num_key_value_heads,
                cfg.intermediate_size,
                cfg.vocab_size,
                if cfg.tie_word_embeddings { " tied" } else { "" },
                cfg.num_parameters() as f64 / 1e6,
            ),
            work: Work::Tokens(n as u64),
        });
    }
    group.finish();
}

fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("criterion")
}

/// Criterion's median estimate and fastest sample (ns per iteration) for one benchmark,
/// when it was measured by this invocation (a filter on the command line may have
/// skipped it). The fastest sample is the better estimate on a machine shared with
/// other work.
fn timings_ns(dir: &Path, case: &Case, started: SystemTime) -> Option<(f64, f64)> {
    let new = dir.join(case.group).join(&case.id).join("new");
    let estimates = new.join("estimates.json");
    let modified = std::fs::metadata(&estimates)
        .and_then(|m| m.modified())
        .ok()?;
    if modified < started {
        return None;
    }
    let read = |path: PathBuf| -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    };
    let median = read(estimates)?["median"]["point_estimate"].as_f64()?;
    let sample = read(new.join("sample.json"))?;
    let (iters, times) = (sample["iters"].as_array()?, sample["times"].as_array()?);
    let min = iters
        .iter()
        .zip(times)
        .filter_map(|(n, t)| Some(t.as_f64()? / n.as_f64()?))
        .fold(f64::INFINITY, f64::min);
    Some((median, min))
}

/// Prints the median time and rate of every benchmark this run measured, and writes
/// them to `scotd_summary.json` beside criterion's own files.
fn summarise(cases: &[Case], started: SystemTime) {
    let dir = criterion_dir();
    let mut rows = Vec::new();
    println!(
        "\nscotd CPU benchmark summary (criterion's median, and its fastest sample; rayon threads = {})",
        rayon::current_num_threads()
    );
    println!(
        "{:<6} {:<34} {:>13} {:>19} {:>13} {:>10}",
        "group", "benchmark", "median", "rate", "fastest", "rate"
    );
    for case in cases {
        let Some((median_ns, min_ns)) = timings_ns(&dir, case, started) else {
            continue;
        };
        let (median, min) = (median_ns * 1e-9, min_ns * 1e-9);
        let (amount, per_second, unit) = match case.work {
            Work::Flops(f) => (f, f as f64 / 1e9, "GFLOP/s"),
            Work::Tokens(t) => (t, t as f64, "tokens/s"),
        };
        println!(
            "{:<6} {:<34} {:>10.3} ms {:>10.1} {unit:<8} {:>10.3} ms {:>10.1}",
            case.group,
            case.id,
            median * 1e3,
            per_second / median,
            min * 1e3,
            per_second / min,
        );
        rows.push(serde_json::json!({
            "group": case.group,
            "id": case.id,
            "shape": case.shape,
            "median_s": median,
            "min_s": min,
            "unit": unit,
            "rate": per_second / median,
            "work": amount,
        }));
    }
    let summary = serde_json::json!({
        "threads": rayon::current_num_threads(),
        "results": rows,
    });
    let path = dir.join("scotd_summary.json");
    if std::fs::create_dir_all(&dir).is_ok()
        && std::fs::write(&path, serde_json::to_vec_pretty(&summary).unwrap()).is_ok()
    {
        println!("(written to {})", path.display());
    }
}

fn main() {
    let started = std::time::SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    let mut cases = Vec::new();
    bench_gemm(&mut c, &mut cases);
    bench_layer(&mut c, &mut cases);
    bench_ops(&mut c, &mut cases);
    bench_model(&mut c, &mut cases);
    c.final_summary();
    summarise(&cases, started);
}
