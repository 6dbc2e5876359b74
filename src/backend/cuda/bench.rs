//! Kernel benchmarks at Qwen2.5-0.5B shapes (16 x 1024 tokens, hidden 896, intermediate
//! 4864): each kernel's median time over many runs, its achieved bandwidth or FLOP rate,
//! and, given PyTorch's numbers from tools/bench_torch_gpu.py on the same card, the
//! fraction of the measured limit and the ratio to PyTorch. `scotd gpu-bench` runs them.

use serde::{Deserialize, Serialize};

use super::{Gpu, GpuBuffer, GpuFloat};
use crate::model::KV_BLOCK;
use crate::ops::add::cuda::add_forward;
use crate::ops::attention::cuda::{
    simple_attention_backward, simple_attention_forward, AttentionBackwardFn, AttentionForwardFn,
};
use crate::ops::attention::paged_cuda::paged_attention_forward;
use crate::ops::attention::{flash, AttentionDims, PagedDims, PagedRows};
use crate::ops::cross_entropy::cuda::{cross_entropy_fused, device_targets};
use crate::ops::embedding::cuda::{embedding_backward, embedding_forward, DeviceTokens};
use crate::ops::rmsnorm::cuda::{rmsnorm_backward, rmsnorm_forward};
use crate::ops::rope::cuda::{rope_rotate, DeviceRopeTable};
use crate::ops::rope::RopeTable;
use crate::ops::sampling::cuda::{choose_tokens_into, DeviceChoices};
use crate::ops::sampling::TokenChoice;
use crate::ops::swiglu::cuda::{swiglu_backward, swiglu_forward};
use crate::optim::cuda::{adamw_update, grad_norm, AdamwBuffers, AdamwPlan, FlatSegment};
use crate::optim::AdamWConfig;
use crate::rng::Rng;
use crate::Result;

/// One measured kernel, keyed like tools/bench_torch_gpu.py's rows (`name`, `pass_`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KernelTiming {
    pub kernel: String,
    /// The PyTorch row it replaces: its `name` and `pass_` in torch_gpu.json.
    pub peer: (String, String),
    pub dtype: String,
    pub shape: String,
    /// Bytes it must move (memory-bound kernels) or FLOPs it must do (GEMMs).
    pub bytes: Option<f64>,
    pub flops: Option<f64>,
    pub median_ms: f64,
    pub runs: usize,
}

/// Sizes: the real ones, or tiny ones that run in seconds on the emulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Qwen05B,
    Smoke,
}

struct Shapes {
    /// Sequence length of the attention rows.
    attention_seq: usize,
    /// Parameters of the whole model (the optimizer's work).
    params: usize,
    tokens: usize,
    hidden: usize,
    inter: usize,
    vocab: usize,
    runs: usize,
}

impl Scale {
    fn shapes(self) -> Shapes {
        match self {
            Scale::Qwen05B => Shapes {
                attention_seq: 1024,
                params: 494_032_768,
                tokens: 16 * 1024,
                hidden: 896,
                inter: 4864,
                vocab: 151_936,
                runs: 100,
            },
            Scale::Smoke => Shapes {
                attention_seq: 16,
                params: 10_000,
                tokens: 64,
                hidden: 96,
                inter: 160,
                vocab: 500,
                runs: 3,
            },
        }
    }
}

/// Every kernel benchmark, in bf16 (the training dtype).
pub fn bench_kernels(gpu: &Gpu, scale: Scale) -> Result<Vec<KernelTiming>> {
    let s = scale.shapes();
    let mut out = rmsnorm(gpu, &s)?;
    out.extend(embedding(gpu, &s)?);
    out.extend(rope(gpu, &s)?);
    out.push(cross_entropy(gpu, &s)?);
    out.extend(sampling(gpu, &s)?);
    out.extend(elementwise(gpu, &s)?);
    out.extend(optimizer(gpu, &s)?);
    out.extend(attention(gpu, &s)?);
    out.push(gemm(gpu, &s)?);
    Ok(out)
}

fn random_bf16(gpu: &Gpu, rng: &mut Rng, len: usize) -> Result<GpuBuffer<half::bf16>> {
    let data: Vec<half::bf16> = rng
        .normal_vec(len, 1.0)
        .into_iter()
        .map(half::bf16::from_f32)
        .collect();
    gpu.upload(&data)
}

/// The median of `times` (the upper one of an even count).
pub(crate) fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn timing(
    kernel: &str,
    peer: (&str, &str),
    shape: String,
    bytes: Option<f64>,
    flops: Option<f64>,
    times: Vec<f64>,
) -> KernelTiming {
    KernelTiming {
        kernel: kernel.to_string(),
        peer: (peer.0.to_string(), peer.1.to_string()),
        dtype: half::bf16::SUFFIX.to_string(),
        shape,
        bytes,
        flops,
        runs: times.len(),
        median_ms: median(times),
    }
}

fn rmsnorm(gpu: &Gpu, s: &Shapes) -> Result<Vec<KernelTiming>> {
    let mut rng = Rng::new(0);
    let (n, d) = (s.tokens, s.hidden);
    let x = random_bf16(gpu, &mut rng, n * d)?;
    let w = random_bf16(gpu, &mut rng, d)?;
    let dy = random_bf16(gpu, &mut rng, n * d)?;
    let (_, rstd) = rmsnorm_forward(gpu, &x, &w, d, 1e-6)?;
    let mut dw = gpu.zeros::<f32>(d)?;
    let shape = format!("{n}x{d}");
    let element = 2.0;
    let forward = gpu.time_ms(s.runs, || rmsnorm_forward(gpu, &x, &w, d, 1e-6).map(drop))?;
    let backward = gpu.time_ms(s.runs, || {
        rmsnorm_backward(gpu, &dy, &x, &w, &rstd, d, &mut dw, true).map(drop)
    })?;
    let nd = (n * d) as f64;
    Ok(vec![
        timing(
            "rmsnorm_forward",
            ("rmsnorm (HF)", "fwd"),
            shape.clone(),
            Some(2.0 * nd * element + 4.0 * n as f64),
            None,
            forward,
        ),
        timing(
            "rmsnorm_backward",
            ("rmsnorm (HF)", "bwd"),
            shape,
            Some(3.0 * nd * element + 4.0 * n as f64),
            None,
            backward,
        ),
    ])
}

/// Gathering the tokens' rows, and the gradient's sum into f32 rows (accumulating, as
/// in a training step whose gradients were zeroed once).
fn embedding(gpu: &Gpu, s: &Shapes) -> Result<Vec<KernelTiming>> {
    let mut rng = Rng::new(2);
    let (n, d, vocab) = (s.tokens, s.hidden, s.vocab);
    let ids: Vec<u32> = (0..n).map(|_| rng.below(vocab) as u32).collect();
    let weight = random_bf16(gpu, &mut rng, vocab * d)?;
    let dy = random_bf16(gpu, &mut rng, n * d)?;
    let mut dweight = gpu.zeros::<f32>(vocab * d)?;
    // The ids' upload and grouping happen once per batch, outside the kernels' time.
    let tokens = DeviceTokens::new(gpu, &ids, vocab)?;
    let forward = gpu.time_ms(s.runs, || {
        embedding_forward(gpu, &weight, d, &tokens).map(drop)
    })?;
    let backward = gpu.time_ms(s.runs, || {
        embedding_backward(gpu, &dy, &tokens, d, &mut dweight, true)
    })?;
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let (nd, ud) = ((n * d) as f64, (distinct.len() * d) as f64);
    let shape = format!("{n} of {vocab}x{d}");
    Ok(vec![
        timing(
            "embedding_forward",
            ("embedding", "fwd"),
            shape.clone(),
            Some(4.0 * nd + 4.0 * n as f64),
            None,
            forward,
        ),
        timing(
            "embedding_backward",
            ("embedding", "bwd"),
            shape,
            Some(2.0 * nd + 8.0 * ud),
            None,
            backward,
        ),
    ])
}

/// The fused loss and gradient on a chunk of half a step's rows, as PyTorch's row
/// (8192 rows; its forward and backward times added).
fn cross_entropy(gpu: &Gpu, s: &Shapes) -> Result<KernelTiming> {
    let mut rng = Rng::new(3);
    let (rows, vocab) = (s.tokens / 2, s.vocab);
    let targets: Vec<i64> = (0..rows).map(|_| rng.below(vocab) as i64).collect();
    let targets = device_targets(gpu, &targets, vocab)?;
    let mut logits = random_bf16(gpu, &mut rng, rows * vocab)?;
    let mut losses = gpu.zeros::<f32>(rows)?;
    let scale = 1.0 / rows as f32;
    // Each run overwrites the logits with gradients: the data changes, the work does not.
    let times = gpu.time_ms(s.runs, || {
        cross_entropy_fused(gpu, &mut logits, &targets, &mut losses, vocab, scale)
    })?;
    let bytes = 6.0 * (rows * vocab) as f64;
    let shape = format!("{rows}x{vocab}");
    Ok(timing(
        "cross_entropy_fused",
        ("cross_entropy", "fwd+bwd"),
        shape,
        Some(bytes),
        None,
        times,
    ))
}

/// The next token of a decode step's 64 sequences from their bf16 logits, greedy and by
/// top-p. The rate is of the logits read; a sampled row also rereads its probabilities
/// (f32, from L2) once per bit of its threshold, which the rate does not count.
fn sampling(gpu: &Gpu, s: &Shapes) -> Result<Vec<KernelTiming>> {
    const ROWS: usize = 64;
    let mut rng = Rng::new(9);
    let vocab = s.vocab;
    let logits = random_bf16(gpu, &mut rng, ROWS * vocab)?;
    let mut ids = gpu.alloc::<u32>(ROWS)?;
    let top_p = TokenChoice {
        temperature: 1.0,
        top_k: 0,
        top_p: 0.9,
        uniform: 0.0,
    };
    let mut out = Vec::new();
    for (name, rule) in [("greedy", TokenChoice::greedy()), ("top-p 0.9", top_p)] {
        let choices: Vec<TokenChoice> = (0..ROWS)
            .map(|_| TokenChoice {
                uniform: rng.uniform(),
                ..rule
            })
            .collect();
        let choices = DeviceChoices::new(gpu, &choices, vocab)?;
        let times = gpu.time_ms(s.runs, || {
            choose_tokens_into(gpu, &logits, vocab, &choices, &mut ids)
        })?;
        out.push(timing(
            &format!("choose_tokens ({name})"),
            ("", ""),
            format!("{ROWS}x{vocab}"),
            Some((ROWS * vocab * 2) as f64),
            None,
            times,
        ));
    }
    Ok(out)
}

/// SwiGLU over the MLP's activations and the residual add over the hidden states.
fn elementwise(gpu: &Gpu, s: &Shapes) -> Result<Vec<KernelTiming>> {
    let mut rng = Rng::new(4);
    let (n, d, inter) = (s.tokens, s.hidden, s.inter);
    let gate = random_bf16(gpu, &mut rng, n * inter)?;
    let up = random_bf16(gpu, &mut rng, n * inter)?;
    let dy = random_bf16(gpu, &mut rng, n * inter)?;
    let forward = gpu.time_ms(s.runs, || swiglu_forward(gpu, &gate, &up).map(drop))?;
    let backward = gpu.time_ms(s.runs, || swiglu_backward(gpu, &dy, &gate, &up).map(drop))?;
    let a = random_bf16(gpu, &mut rng, n * d)?;
    let b = random_bf16(gpu, &mut rng, n * d)?;
    let add = gpu.time_ms(s.runs, || add_forward(gpu, &a, &b).map(drop))?;
    let (ni, nd) = ((n * inter) as f64, (n * d) as f64);
    Ok(vec![
        timing(
            "swiglu_forward",
            ("swiglu silu(g)*u", "fwd"),
            format!("{n}x{inter}"),
            Some(6.0 * ni),
            None,
            forward,
        ),
        timing(
            "swiglu_backward",
            ("swiglu silu(g)*u", "bwd"),
            format!("{n}x{inter}"),
            Some(10.0 * ni),
            None,
            backward,
        ),
        timing(
            "add_forward",
            ("residual add", "fwd"),
            format!("{n}x{d}"),
            Some(6.0 * nd),
            None,
            add,
        ),
    ])
}

/// The global gradient norm and one AdamW step over every parameter (f32 master weights,
/// moments and gradients, the bf16 copy rewritten), as fused AdamW in PyTorch.
fn optimizer(gpu: &Gpu, s: &Shapes) -> Result<Vec<KernelTiming>> {
    let mut rng = Rng::new(5);
    let n = s.params;
    let mut params = gpu.upload(&rng.normal_vec(n, 0.02))?;
    let mut params_bf16 = gpu.zeros::<half::bf16>(n)?;
    let (mut m, mut v) = (gpu.zeros::<f32>(n)?, gpu.zeros::<f32>(n)?);
    let grads = gpu.upload(&rng.normal_vec(n, 1e-3))?;
    let plan = AdamwPlan::new(
        gpu,
        &[FlatSegment {
            offset: 0,
            len: n,
            decay: true,
        }],
        n,
    )?;
    let config = AdamWConfig::default();
    let norm = gpu.time_ms(s.runs, || grad_norm(gpu, &grads, 1.0).map(drop))?;
    let clip = grad_norm(gpu, &grads, 1.0)?;
    let mut step = 0;
    let adamw = gpu.time_ms(s.runs, || {
        step += 1;
        let buffers = AdamwBuffers {
            params: (&mut params).into(),
            params_bf16: Some((&mut params_bf16).into()),
            exp_avg: (&mut m).into(),
            exp_avg_sq: (&mut v).into(),
            grads: (&grads).into(),
        };
        adamw_update(gpu, &plan, buffers, &config, step, 1e-5, Some(&clip))
    })?;
    let shape = format!("{:.1}M params", n as f64 / 1e6);
    Ok(vec![
        timing(
            "grad_norm",
            ("", ""),
            shape.clone(),
            Some(4.0 * n as f64),
            None,
            norm,
        ),
        timing(
            "adamw_update",
            ("adamw fused=True", "step"),
            shape,
            Some(30.0 * n as f64),
            None,
            adamw,
        ),
    ])
}

/// Causal GQA attention on a step's 16 rows of 1024 tokens, the flash kernels and the
/// simple ones (fewer runs: the simple ones are slow by design), each under its own name,
/// beside PyTorch's SDPA; then a decode step over a cache of one row's length.
fn attention(gpu: &Gpu, s: &Shapes) -> Result<Vec<KernelTiming>> {
    type Bf16 = half::bf16;
    let kernels: [(&str, AttentionForwardFn<Bf16>, AttentionBackwardFn<Bf16>); 2] = [
        ("flash", flash::forward, flash::backward),
        (
            "simple",
            simple_attention_forward,
            simple_attention_backward,
        ),
    ];
    let mut out = Vec::new();
    for (name, forward, backward) in kernels {
        out.extend(attention_kernels(gpu, s, name, (forward, backward))?);
    }
    out.push(paged_attention(gpu, s)?);
    Ok(out)
}

fn attention_kernels(
    gpu: &Gpu,
    s: &Shapes,
    name: &str,
    (forward_fn, backward_fn): (
        AttentionForwardFn<half::bf16>,
        AttentionBackwardFn<half::bf16>,
    ),
) -> Result<Vec<KernelTiming>> {
    let mut rng = Rng::new(6);
    let seq = s.attention_seq;
    let dims = AttentionDims {
        batch: s.tokens / seq,
        seq,
        q_heads: 14,
        kv_heads: 2,
        head_dim: 64,
    };
    let (tokens, runs) = (dims.batch * seq, s.runs.min(10));
    let q = random_bf16(gpu, &mut rng, tokens * dims.q_heads * dims.head_dim)?;
    let k = random_bf16(gpu, &mut rng, tokens * dims.kv_heads * dims.head_dim)?;
    let v = random_bf16(gpu, &mut rng, tokens * dims.kv_heads * dims.head_dim)?;
    let dout = random_bf16(gpu, &mut rng, q.len())?;
    let qkv = ((&q).into(), (&k).into(), (&v).into());
    let (out, lse) = forward_fn(gpu, qkv, None, dims)?;
    let forward = gpu.time_ms(runs, || forward_fn(gpu, qkv, None, dims).map(drop))?;
    let saved = ((&out).into(), (&lse).into(), (&dout).into());
    let backward = gpu.time_ms(runs, || backward_fn(gpu, qkv, saved, None, dims).map(drop))?;
    // Causal: half the score matrix. Backward does 2.5 times the forward's FLOPs.
    let flops = 4.0 * (dims.batch * dims.q_heads * seq * seq * dims.head_dim) as f64 / 2.0;
    let shape = format!(
        "{}x{}/{}x{seq}x{}",
        dims.batch, dims.q_heads, dims.kv_heads, dims.head_dim
    );
    Ok(vec![
        timing(
            &format!("attention_forward ({name})"),
            ("sdpa default enable_gqa", "fwd"),
            shape.clone(),
            None,
            Some(flops),
            forward,
        ),
        timing(
            &format!("attention_backward ({name})"),
            ("sdpa default enable_gqa", "bwd"),
            shape,
            None,
            Some(2.5 * flops),
            backward,
        ),
    ])
}

/// One decode step of 64 sequences (a query per head at the last position) over a paged
/// KV cache as long as an attention row each; its bytes are the caches read once, the
/// least any kernel must move.
fn paged_attention(gpu: &Gpu, s: &Shapes) -> Result<KernelTiming> {
    const SEQUENCES: usize = 64;
    let mut rng = Rng::new(8);
    let dims = PagedDims {
        q_heads: 14,
        kv_heads: 2,
        head_dim: 64,
    };
    let len = s.attention_seq;
    let blocks = len.div_ceil(KV_BLOCK);
    let tables: Vec<Vec<u32>> = (0..SEQUENCES)
        .map(|q| (0..blocks).map(|b| (q * blocks + b) as u32).collect())
        .collect();
    let tables: Vec<&[u32]> = tables.iter().map(Vec::as_slice).collect();
    let rows: Vec<(usize, usize)> = (0..SEQUENCES).map(|q| (q, len - 1)).collect();
    let rows = PagedRows::new(KV_BLOCK, &tables, &rows)?;
    let q = random_bf16(gpu, &mut rng, SEQUENCES * dims.q_heads * dims.head_dim)?;
    let pool = SEQUENCES * blocks * KV_BLOCK * dims.kv_heads * dims.head_dim;
    let k = random_bf16(gpu, &mut rng, pool)?;
    let v = random_bf16(gpu, &mut rng, pool)?;
    let times = gpu.time_ms(s.runs, || {
        paged_attention_forward(gpu, (&q).into(), ((&k).into(), (&v).into()), &rows, dims).map(drop)
    })?;
    // The cached K and V rows read, q read and out written, 2 bytes an element.
    let cached = SEQUENCES * len * dims.kv_heads * dims.head_dim;
    let bytes = (2 * (2 * cached + q.len()) * 2) as f64;
    let shape = format!(
        "{SEQUENCES}x{}/{}x{len}x{}",
        dims.q_heads, dims.kv_heads, dims.head_dim
    );
    Ok(timing(
        "paged_attention_decode (decode)",
        ("", ""),
        shape,
        Some(bytes),
        None,
        times,
    ))
}

/// q and k of every token rotated, one launch each (positions 0..seq repeated per row, as
/// in a step of 16 rows of 1024); the backward is the same kernel with sin negated.
fn rope(gpu: &Gpu, s: &Shapes) -> Result<Vec<KernelTiming>> {
    let mut rng = Rng::new(7);
    let (n, q_heads, kv_heads, head_dim) = (s.tokens, 14, 2, 64);
    let positions: Vec<u32> = (0..n).map(|t| (t % s.attention_seq) as u32).collect();
    let table = DeviceRopeTable::new(gpu, &RopeTable::new(&positions, head_dim, 1e6))?;
    let q = random_bf16(gpu, &mut rng, n * q_heads * head_dim)?;
    let k = random_bf16(gpu, &mut rng, n * kv_heads * head_dim)?;
    let time = |inverse| {
        gpu.time_ms(s.runs, || {
            rope_rotate(gpu, &q, q_heads, &table, inverse)?;
            rope_rotate(gpu, &k, kv_heads, &table, inverse).map(drop)
        })
    };
    let (forward, backward) = (time(false)?, time(true)?);
    let bytes = 4.0 * (n * (q_heads + kv_heads) * head_dim) as f64;
    let shape = format!("q{n}x{q_heads}x{head_dim} k{kv_heads}");
    Ok(vec![
        timing(
            "rope_forward",
            ("rope (HF)", "fwd"),
            shape.clone(),
            Some(bytes),
            None,
            forward,
        ),
        timing(
            "rope_backward",
            ("rope (HF)", "bwd"),
            shape,
            Some(bytes),
            None,
            backward,
        ),
    ])
}

/// The MLP's gate projection: [tokens, hidden] x [inter, hidden]^T through cuBLAS.
fn gemm(gpu: &Gpu, s: &Shapes) -> Result<KernelTiming> {
    let mut rng = Rng::new(1);
    let (m, n, k) = (s.tokens, s.inter, s.hidden);
    let a = random_bf16(gpu, &mut rng, m * k)?;
    let b = random_bf16(gpu, &mut rng, n * k)?;
    let mut c = gpu.zeros::<half::bf16>(m * n)?;
    let times = gpu.time_ms(s.runs, || {
        gpu.gemm(&mut c, &a, false, &b, true, (m, n, k), false)
    })?;
    let flops = 2.0 * (m * n * k) as f64;
    Ok(timing(
        "gemm (cuBLAS)",
        ("", ""),
        format!("{m}x{n}x{k}"),
        None,
        Some(flops),
        times,
    ))
}

/// PyTorch's numbers for the same card (torch_gpu.json of tools/bench_torch_gpu.py).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct TorchBaselines {
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub ops: Vec<TorchOp>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Limits {
    pub copy_gbps: Option<f64>,
    pub gemm_tflops: Option<f64>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct TorchOp {
    pub name: String,
    pub pass_: String,
    pub dtype: String,
    pub shape: String,
    pub median_ms: f64,
}

/// The table: kernel, shape, time, rate, fraction of the limit, PyTorch's time, ratio.
pub fn markdown(timings: &[KernelTiming], torch: &TorchBaselines) -> String {
    let mut md = String::from(
        "| kernel | shape | ms | rate | % of limit | PyTorch ms | PyTorch / ours |\n|---|---|--:|--:|--:|--:|--:|\n",
    );
    for t in timings {
        let seconds = t.median_ms / 1e3;
        let (rate, fraction) = match (t.bytes, t.flops) {
            (Some(bytes), _) => {
                let gbps = bytes / seconds / 1e9;
                (
                    format!("{gbps:.0} GB/s"),
                    torch.limits.copy_gbps.map(|l| gbps / l),
                )
            }
            (None, Some(flops)) => {
                let tflops = flops / seconds / 1e12;
                (
                    format!("{tflops:.0} TFLOP/s"),
                    torch.limits.gemm_tflops.map(|l| tflops / l),
                )
            }
            (None, None) => (String::new(), None),
        };
        let peer = peer_ms(torch, t);
        md.push_str(&format!(
            "| {} | {} | {:.4} | {rate} | {} | {} | {} |\n",
            t.kernel,
            t.shape,
            t.median_ms,
            fraction.map_or(String::new(), |f| format!("{:.0}", 100.0 * f)),
            peer.map_or(String::new(), |p| format!("{p:.4}")),
            peer.map_or(String::new(), |p| format!("{:.2}", p / t.median_ms)),
        ));
    }
    md
}

/// PyTorch's time for the op a kernel replaces; a fused "fwd+bwd" kernel against the
/// sum of PyTorch's forward and backward.
fn peer_ms(torch: &TorchBaselines, t: &KernelTiming) -> Option<f64> {
    let row = |pass: &str| {
        torch
            .ops
            .iter()
            .find(|o| {
                o.name == t.peer.0 && o.pass_ == pass && o.dtype == t.dtype && o.shape == t.shape
            })
            .map(|o| o.median_ms)
    };
    match t.peer.1.as_str() {
        "fwd+bwd" => Some(row("fwd")? + row("bwd")?),
        pass => row(pass),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke_benchmarks_run_and_join_pytorch_rows() {
        let gpu = Gpu::emulated().unwrap();
        let timings = bench_kernels(&gpu, Scale::Smoke).unwrap();
        assert!(timings.iter().all(|t| t.median_ms > 0.0 && t.runs == 3));
        let torch: TorchBaselines = serde_json::from_str(
            r#"{"limits": {"copy_gbps": 3000.0, "gemm_tflops": 700.0},
                "ops": [{"name": "rmsnorm (HF)", "pass_": "fwd", "dtype": "bf16",
                         "shape": "64x96", "median_ms": 1e9}]}"#,
        )
        .unwrap();
        let md = markdown(&timings, &torch);
        let row = md
            .lines()
            .find(|l| l.starts_with("| rmsnorm_forward |"))
            .unwrap();
        assert!(row.contains("1000000000.0000"), "{row}");
    }
}
