#!/usr/bin/env python3
"""PyTorch reference numbers for scotd's CUDA kernels, at Qwen2.5-0.5B shapes.

    python tools/bench_torch_gpu.py --out DIR [--smoke] [--compile] [--only SECTIONS]

Measures, on the current GPU:
  limits  the card's ceilings: device-to-device copy bandwidth (bytes read + written)
          and the bf16 GEMM rate of a large square torch.matmul;
  gemm    the GEMM shapes of a Qwen2 training step (forward, one weight gradient);
  ops     PyTorch's forward and backward time for each op our kernels will replace
          (HF RMSNorm, HF RoPE, SwiGLU, residual add, embedding, cross-entropy),
          with the minimum bytes each must move and the fraction of the copy limit;
  adamw   torch.optim.AdamW (fused and foreach) over a Qwen2.5-0.5B-sized parameter set;
  sdpa    causal GQA attention forward/backward through F.scaled_dot_product_attention,
          with the default dispatch and each backend forced;
  train   a full Hugging Face Qwen2 training step (random weights, bf16 autocast,
          f32 master weights, fused AdamW): tokens/s, peak memory, MFU.

Writes DIR/torch_gpu.json (every number, rewritten after each section so a timeout
keeps what was measured) and DIR/torch_gpu.md (the tables, also printed at the end).
--smoke shrinks every shape so the script runs in seconds, on the CPU if there is no
CUDA; its numbers mean nothing, it only proves the script works.
Exit status: 0 when every section ran, 1 when one raised an unexpected error.
"""

import argparse
import contextlib
import gc
import json
import os
import platform
import signal
import statistics
import sys
import time
import traceback

import torch
import torch.nn.functional as F

SECTIONS = ("limits", "gemm", "ops", "adamw", "sdpa", "train")


# --------------------------------------------------------------------------- shapes

def full_shapes():
    """Qwen2.5-0.5B, and the step of 16 sequences x 1024 tokens our trainer targets."""
    return dict(
        hidden=896, heads=14, kv_heads=2, head_dim=64, inter=4864, vocab=151936,
        layers=24, batch=16, seq=1024,
        ce_rows=8192,            # cross-entropy / lm_head chunk: 8192 x 151936 logits
        copy_bytes=1 << 30,      # 1 GiB source for the bandwidth limit
        square=8192,             # 8192^3 GEMM for the compute limit
        train_batches=[(4, 1024), (8, 1024), (16, 1024)],
        train_warmup=2, train_steps=8,
    )


def smoke_shapes():
    return dict(
        hidden=64, heads=4, kv_heads=2, head_dim=16, inter=128, vocab=512,
        layers=2, batch=2, seq=32,
        ce_rows=64, copy_bytes=1 << 22, square=128,
        train_batches=[(2, 32), (4, 32)],
        train_warmup=1, train_steps=2,
    )


def qwen_param_shapes(s):
    """Every parameter tensor of a tied-embedding Qwen2 model, in model order."""
    h, d, i = s["hidden"], s["head_dim"], s["inter"]
    q, kv = s["heads"] * d, s["kv_heads"] * d
    shapes = [(s["vocab"], h)]
    for _ in range(s["layers"]):
        shapes += [(q, h), (q,), (kv, h), (kv,), (kv, h), (kv,), (h, q),
                   (i, h), (i, h), (h, i), (h,), (h,)]
    shapes.append((h,))
    return shapes


# --------------------------------------------------------------------------- timing

class Timer:
    """Median-of-many timing. On CUDA: device events around each run, and the L2 cache
    flushed (a memset of a buffer several times its size) before each run, so that
    inputs smaller than the L2 are not timed from cache. The flush sits outside the
    events and also lets the host enqueue ahead of the GPU, so launch gaps mostly stay
    out; an op of many tiny kernels that launch slower than they run is timed with its
    gaps, as eager PyTorch runs it."""

    def __init__(self, device, warmup=3, min_iters=5, max_iters=100, budget_s=0.3):
        self.device = device
        self.cuda = device.type == "cuda"
        self.warmup, self.min_iters, self.max_iters, self.budget_s = warmup, min_iters, max_iters, budget_s
        self.flush = None
        if self.cuda:
            l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 << 20)
            self.flush = torch.empty(max(256 << 20, 4 * l2), dtype=torch.uint8, device=device)

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def __call__(self, fn):
        for _ in range(self.warmup):
            fn()
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        est = max(time.perf_counter() - t0, 1e-6)
        iters = max(self.min_iters, min(self.max_iters, int(self.budget_s / est)))
        times = []
        if self.cuda:
            ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(iters)]
            for start, end in ev:
                self.flush.zero_()
                start.record()
                fn()
                end.record()
            self.sync()
            times = [s.elapsed_time(e) for s, e in ev]
        else:
            for _ in range(iters):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        times.sort()
        q = lambda f: times[min(len(times) - 1, int(f * len(times)))]
        return dict(median_ms=statistics.median(times), p10_ms=q(0.1), p90_ms=q(0.9),
                    min_ms=times[0], iters=iters)


# --------------------------------------------------------------------------- results

class Bench:
    def __init__(self, args, device, shapes):
        self.args, self.device, self.s = args, device, shapes
        self.timer = Timer(device)
        self.limits = {"copy_gbps": None, "gemm_tflops": None}
        self.res = {"meta": meta(args, device, shapes), "limits": self.limits,
                    "gemm": [], "ops": [], "train": [], "notes": [], "errors": []}
        self.t_start = time.perf_counter()

    # One measured row. `bytes_` is the minimum traffic (each input read once, each
    # output written once); `flops` the arithmetic. Both rates are given when known,
    # and `frac` is against the limit that binds the op (copy bandwidth or GEMM peak).
    def row(self, table, name, pas, dtype, shape, t, bytes_=None, flops=None, bound="bw", note=""):
        sec = t["median_ms"] / 1e3
        r = dict(name=name, pass_=pas, dtype=dtype, shape=shape, **t, bytes=bytes_, flops=flops,
                 gbps=bytes_ / sec / 1e9 if bytes_ else None,
                 tflops=flops / sec / 1e12 if flops else None, bound=bound, note=note)
        lim = self.limits["copy_gbps"] if bound == "bw" else self.limits["gemm_tflops"]
        val = r["gbps"] if bound == "bw" else r["tflops"]
        r["frac"] = val / lim if (val and lim) else None
        self.res[table].append(r)
        rate = (f"{r['gbps']:8.1f} GB/s" if r["gbps"] else "") + (f"{r['tflops']:8.1f} TFLOP/s" if r["tflops"] else "")
        print(f"  {name:<28} {pas:<4} {dtype:<5} {shape:<22} {t['median_ms']:9.4f} ms {rate}"
              + (f"  {100 * r['frac']:5.1f}%" if r["frac"] else ""), flush=True)
        return r

    def error(self, where, exc):
        msg = f"{where}: {type(exc).__name__}: {exc}".strip()
        print("ERROR " + msg, flush=True)
        traceback.print_exc()
        self.res["errors"].append(msg)

    def save(self):
        self.res["meta"]["elapsed_s"] = round(time.perf_counter() - self.t_start, 1)
        os.makedirs(self.args.out, exist_ok=True)
        with open(os.path.join(self.args.out, "torch_gpu.json"), "w") as f:
            json.dump(self.res, f, indent=1)
        md = markdown(self.res)
        with open(os.path.join(self.args.out, "torch_gpu.md"), "w") as f:
            f.write(md)
        return md


def meta(args, device, s):
    m = dict(smoke=args.smoke, device=str(device), torch=torch.__version__,
             torch_cuda=torch.version.cuda, python=platform.python_version(),
             started=time.strftime("%Y-%m-%d %H:%M:%S %z"), shapes=s)
    try:
        import transformers
        m["transformers"] = transformers.__version__
    except Exception as e:  # the train section reports the failure itself
        m["transformers"] = f"unavailable: {e}"
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        m.update(gpu=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                 gpu_mem_gib=round(p.total_memory / 2**30, 1),
                 l2_mib=round(getattr(p, "L2_cache_size", 0) / 2**20, 1),
                 cudnn=torch.backends.cudnn.version(),
                 matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
                 matmul_bf16_reduced_precision=torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction)
    else:
        m.update(gpu=None, cpu_threads=torch.get_num_threads())
    return m


def spin_up(device, seconds=1.0):
    """Keeps the GPU busy for a second so that its clocks have ramped up before the first
    measurement (an idle card starts at a low clock)."""
    if device.type != "cuda":
        return
    a = torch.randn(4096, 4096, dtype=torch.bfloat16, device=device)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            a @ a
        torch.cuda.synchronize(device)


def free_memory():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- sections

def sec_limits(b):
    s, dev = b.s, b.device
    src = torch.empty(s["copy_bytes"] // 2, dtype=torch.bfloat16, device=dev).uniform_(-1, 1)
    dst = torch.empty_like(src)
    t = b.timer(lambda: dst.copy_(src))
    r = b.row("gemm", "copy (d2d .copy_)", "", "bf16", f"{s['copy_bytes'] >> 20} MiB", t,
              bytes_=2 * s["copy_bytes"], note="read + write bytes")
    b.limits["copy_gbps"] = r["gbps"]
    del src, dst

    n = s["square"]
    a = torch.randn(n, n, dtype=torch.bfloat16, device=dev)
    c = torch.randn(n, n, dtype=torch.bfloat16, device=dev)
    t = b.timer(lambda: torch.matmul(a, c))
    r = b.row("gemm", f"matmul {n}^3", "", "bf16", f"{n}x{n}x{n}", t, flops=2 * n**3, bound="flops")
    b.limits["gemm_tflops"] = r["tflops"]
    r["frac"] = 1.0
    del a, c


def sec_gemm(b):
    """The projections of one Qwen2 layer and the lm_head, as F.linear calls them
    (x [M,K] times W [Nout,K] transposed), plus one weight gradient (K = tokens)."""
    s, dev = b.s, b.device
    N, H, I = s["batch"] * s["seq"], s["hidden"], s["inter"]
    qkv = (s["heads"] + 2 * s["kv_heads"]) * s["head_dim"]
    cases = [("qkv_proj fwd", N, H, qkv), ("o_proj fwd", N, H, H),
             ("gate/up_proj fwd", N, H, I), ("gate+up fused fwd", N, H, 2 * I),
             ("down_proj fwd", N, I, H), ("lm_head fwd (chunk)", s["ce_rows"], H, s["vocab"])]
    for name, m, k, n in cases:
        x = torch.randn(m, k, dtype=torch.bfloat16, device=dev)
        w = torch.randn(n, k, dtype=torch.bfloat16, device=dev)
        t = b.timer(lambda: F.linear(x, w))
        b.row("gemm", name, "", "bf16", f"{m}x{k}x{n}", t, bytes_=2 * (m * k + n * k + m * n),
              flops=2 * m * n * k, bound="flops")
        del x, w
    # dW = dY^T X for gate_proj: [I, N] @ [N, H]
    dy = torch.randn(N, I, dtype=torch.bfloat16, device=dev)
    x = torch.randn(N, H, dtype=torch.bfloat16, device=dev)
    t = b.timer(lambda: torch.matmul(dy.t(), x))
    b.row("gemm", "gate_proj wgrad", "", "bf16", f"{I}x{N}x{H}", t, bytes_=2 * (N * I + N * H + I * H),
          flops=2 * N * I * H, bound="flops")


def fwd_bwd(b, name, dtype, shape, fn, args, wrt, bytes_fwd, bytes_bwd, flops_fwd=None, flops_bwd=None,
            bound="bw", note=""):
    """Times fn(*args) without autograd, then its backward alone: one forward graph kept
    (retain_graph) and torch.autograd.grad replayed on it with a fixed random grad_out."""
    dt = {torch.bfloat16: "bf16", torch.float32: "f32"}[dtype]
    with torch.no_grad():
        t = b.timer(lambda: fn(*args))
    b.row("ops", name, "fwd", dt, shape, t, bytes_fwd, flops_fwd, bound, note)
    if bytes_bwd is None:
        return
    with torch.enable_grad():
        outs = fn(*args)
    outs = outs if isinstance(outs, tuple) else (outs,)
    gouts = [torch.randn_like(o) if o.dim() else None for o in outs]
    t = b.timer(lambda: torch.autograd.grad(outs, wrt, gouts, retain_graph=True))
    b.row("ops", name, "bwd", dt, shape, t, bytes_bwd, flops_bwd, bound, note)


def hf_ops():
    """HF's own Qwen2RMSNorm and apply_rotary_pos_emb; a verbatim copy if the import fails."""
    try:
        from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm, apply_rotary_pos_emb
        return Qwen2RMSNorm, apply_rotary_pos_emb, "transformers"
    except Exception:
        class Qwen2RMSNorm(torch.nn.Module):
            def __init__(self, hidden_size, eps=1e-6):
                super().__init__()
                self.weight = torch.nn.Parameter(torch.ones(hidden_size))
                self.variance_epsilon = eps

            def forward(self, x):
                dt = x.dtype
                x = x.to(torch.float32)
                x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
                return self.weight * x.to(dt)

        def rotate_half(x):
            return torch.cat((-x[..., x.shape[-1] // 2:], x[..., : x.shape[-1] // 2]), dim=-1)

        def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
            cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
            return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin

        return Qwen2RMSNorm, apply_rotary_pos_emb, "local copy"


def sec_ops(b):
    s, dev = b.s, b.device
    B, T, H, D, I, V = s["batch"], s["seq"], s["hidden"], s["head_dim"], s["inter"], s["vocab"]
    Hq, Hkv, N = s["heads"], s["kv_heads"], B * T
    RMSNorm, rope, src = hf_ops()
    b.res["notes"].append(f"RMSNorm and RoPE: Qwen2RMSNorm / apply_rotary_pos_emb from {src}.")

    # bf16 is what our kernels run; f32 is what HF's autocast step actually feeds these
    # ops (its residual stream, norms and RoPE run in f32 around bf16 GEMMs).
    for dtype in (torch.bfloat16, torch.float32):
        e = torch.finfo(dtype).bits // 8

        try:
            x = torch.randn(N, H, dtype=dtype, device=dev, requires_grad=True)
            norm = RMSNorm(H, eps=1e-6).to(device=dev, dtype=dtype)
            with torch.no_grad():
                norm.weight.uniform_(0.5, 1.5)
            fwd_bwd(b, "rmsnorm (HF)", dtype, f"{N}x{H}", norm, (x,), (x, norm.weight),
                    (2 * N * H + H) * e, (3 * N * H + 2 * H) * e)
            del x, norm
        except Exception as exc:
            b.error("ops rmsnorm", exc)

        try:
            # HF layout: q/k are [B, heads, T, D] views of the projections' [B, T, heads, D].
            qs = torch.randn(B, T, Hq, D, dtype=dtype, device=dev, requires_grad=True)
            ks = torch.randn(B, T, Hkv, D, dtype=dtype, device=dev, requires_grad=True)
            ang = torch.arange(T, device=dev, dtype=torch.float32)[:, None] * torch.rand(D // 2, device=dev)
            ang = torch.cat((ang, ang), dim=-1)[None]  # [1, T, D], as HF's rotary embedding gives
            cos, sin = ang.cos().to(dtype), ang.sin().to(dtype)
            f = lambda q, k: rope(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
            qk = N * (Hq + Hkv) * D * e
            fwd_bwd(b, "rope (HF)", dtype, f"q{N}x{Hq}x{D} k{Hkv}", f, (qs, ks), (qs, ks),
                    2 * qk + 2 * T * D * e, 2 * qk, note="cos/sin counted once per position")
            del qs, ks, cos, sin
        except Exception as exc:
            b.error("ops rope", exc)

        try:
            g = torch.randn(N, I, dtype=dtype, device=dev, requires_grad=True)
            u = torch.randn(N, I, dtype=dtype, device=dev, requires_grad=True)
            fwd_bwd(b, "swiglu silu(g)*u", dtype, f"{N}x{I}", lambda g, u: F.silu(g) * u, (g, u), (g, u),
                    3 * N * I * e, 5 * N * I * e)
            del g, u
        except Exception as exc:
            b.error("ops swiglu", exc)

        try:
            a = torch.randn(N, H, dtype=dtype, device=dev)
            c = torch.randn(N, H, dtype=dtype, device=dev)
            fwd_bwd(b, "residual add", dtype, f"{N}x{H}", torch.add, (a, c), (), 3 * N * H * e, None,
                    note="backward is the identity")
            del a, c
        except Exception as exc:
            b.error("ops add", exc)

        try:
            w = torch.randn(V, H, dtype=dtype, device=dev, requires_grad=True)
            ids = torch.randint(0, V, (N,), device=dev)
            fwd_bwd(b, "embedding", dtype, f"{N} of {V}x{H}", F.embedding, (ids, w), (w,),
                    8 * N + 2 * N * H * e, 8 * N + N * H * e + V * H * e,
                    note="bwd writes the dense V x H gradient")
            del w, ids
        except Exception as exc:
            b.error("ops embedding", exc)

    # Cross-entropy on a chunk of rows (a full step's logits are 5 GB in bf16, 10 GB in
    # f32). Minimum bytes: fwd reads the bf16 logits once; bwd reads them again and
    # writes a bf16 gradient. HF's loss upcasts to f32 first: same minimum, more traffic.
    R = s["ce_rows"]
    b.res["notes"].append(f"cross-entropy measured on {R} rows x {V} (a full step has {N} rows: "
                          f"scale times by {N / R:g}).")
    for name, up in (("cross_entropy", False), ("cross_entropy HF (.float())", True)):
        try:
            logits = torch.randn(R, V, dtype=torch.bfloat16, device=dev, requires_grad=True)
            tgt = torch.randint(0, V, (R,), device=dev)
            f = (lambda z, t: F.cross_entropy(z.float(), t)) if up else F.cross_entropy
            fwd_bwd(b, name, torch.bfloat16, f"{R}x{V}", f, (logits, tgt), (logits,),
                    2 * R * V + 8 * R, 4 * R * V + 8 * R)
            del logits, tgt
            free_memory()
        except Exception as exc:
            b.error(f"ops {name}", exc)


def sec_adamw(b):
    s, dev = b.s, b.device
    shapes = qwen_param_shapes(s)
    gen = torch.Generator(device=dev).manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(sh, device=dev, generator=gen) * 0.02) for sh in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, device=dev, generator=gen) * 1e-3
    P = sum(p.numel() for p in params)
    b.res["notes"].append(f"AdamW over {len(params)} f32 tensors, {P / 1e6:.1f}M params "
                          "(the parameter shapes of the tied-embedding Qwen2 above).")
    for variant in ("fused", "foreach"):
        try:
            opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01, **{variant: True})
            t = b.timer(opt.step)
            # reads p, g, m, v and writes p, m, v: 7 f32 streams
            b.row("ops", f"adamw {variant}=True", "step", "f32", f"{P / 1e6:.1f}M params", t, bytes_=28 * P)
            del opt
            free_memory()
        except Exception as exc:
            b.error(f"adamw {variant}", exc)
    del params
    free_memory()


def sec_sdpa(b):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    s, dev = b.s, b.device
    B, T, Hq, Hkv, D = s["batch"], s["seq"], s["heads"], s["kv_heads"], s["head_dim"]
    q = torch.randn(B, Hq, T, D, dtype=torch.bfloat16, device=dev, requires_grad=True)
    k = torch.randn(B, Hkv, T, D, dtype=torch.bfloat16, device=dev, requires_grad=True)
    v = torch.randn(B, Hkv, T, D, dtype=torch.bfloat16, device=dev, requires_grad=True)
    # kv repeated to Hq heads up front (as HF's repeat_kv does), so the timing is the kernel's
    kr = k.detach().repeat_interleave(Hq // Hkv, dim=1).requires_grad_()
    vr = v.detach().repeat_interleave(Hq // Hkv, dim=1).requires_grad_()
    # FLOPs: QK^T and PV, 2*T*T*D each per head, halved by the causal mask; backward
    # counted as 2.5x forward (FlashAttention's convention: includes recomputing QK^T).
    fl = 4 * B * Hq * T * T * D // 2
    io_q, io_kv = B * Hq * T * D * 2, B * Hkv * T * D * 2
    lse = B * Hq * T * 4
    b.res["notes"].append("SDPA FLOPs: fwd 4*B*H*T^2*D/2 (causal), bwd 2.5 x fwd.")
    variants = [("sdpa default enable_gqa", None, True), ("sdpa default repeat_kv", None, False),
                ("sdpa FLASH repeat_kv", SDPBackend.FLASH_ATTENTION, False),
                ("sdpa CUDNN repeat_kv", SDPBackend.CUDNN_ATTENTION, False),
                ("sdpa EFFICIENT repeat_kv", SDPBackend.EFFICIENT_ATTENTION, False),
                ("sdpa FLASH enable_gqa", SDPBackend.FLASH_ATTENTION, True)]
    for name, backend, gqa in variants:
        kk, vv = (k, v) if gqa else (kr, vr)
        kw = dict(is_causal=True, enable_gqa=True) if gqa else dict(is_causal=True)
        f = lambda q, k_, v_: F.scaled_dot_product_attention(q, k_, v_, **kw)
        # bytes: the GQA kernel may read the 2 kv heads; the repeated one reads 14
        kvb = io_kv if gqa else io_q
        try:
            with sdpa_kernel(backend) if backend else contextlib.nullcontext():
                fwd_bwd(b, name, torch.bfloat16, f"{B}x{Hq}/{Hkv}x{T}x{D}", f, (q, kk, vv), (q, kk, vv),
                        2 * io_q + 2 * kvb + lse, 4 * io_q + 4 * kvb + lse, fl, 2.5 * fl, bound="flops")
        except RuntimeError as exc:
            # a backend refusing these inputs is a result, not a failure
            msg = str(exc).strip().splitlines()[0][:160]
            print(f"  {name:<28} unavailable: {msg}", flush=True)
            b.res["notes"].append(f"{name}: unavailable ({msg})")
        free_memory()


class CompileTimeout(Exception):
    pass


_alarm = {"fired": False}


def _raise_timeout(*_):
    # dynamo may wrap this exception in its own (BackendCompilerFailed): the flag says it was ours
    _alarm["fired"] = True
    raise CompileTimeout("torch.compile took too long")


def rope_theta(config):
    return (getattr(config, "rope_parameters", None) or {}).get("rope_theta", getattr(config, "rope_theta", None))


def sec_train(b):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    s, dev = b.s, b.device
    b.timer.flush = None  # keep the L2-flush buffer out of the peak-memory numbers
    free_memory()
    config = Qwen2Config(
        hidden_size=s["hidden"], intermediate_size=s["inter"], num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"], vocab_size=s["vocab"],
        tie_word_embeddings=True, rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=32768,
        use_cache=False, attn_implementation="sdpa")
    # transformers 5 moved rope_theta into rope_parameters; make sure it arrived either way
    if rope_theta(config) != 1e6 and hasattr(config, "rope_parameters"):
        config.rope_parameters = {"rope_type": "default", "rope_theta": 1e6}
    assert rope_theta(config) == 1e6, f"rope_theta did not reach the config: {rope_theta(config)}"
    torch.manual_seed(0)
    with torch.device(dev):
        model = Qwen2ForCausalLM(config)  # f32 master weights, random init
    model.train()
    attn = getattr(model.config, "_attn_implementation", "?")
    P = sum(p.numel() for p in model.parameters())  # the tied embedding counted once
    L, Hq, D = s["layers"], s["heads"], s["head_dim"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01, fused=True)
    peak = b.limits["gemm_tflops"]
    b.res["notes"].append(
        f"train: HF Qwen2ForCausalLM, {P / 1e6:.1f}M params, attn={attn}, bf16 autocast over f32 weights, "
        f"loss through labels= (HF upcasts logits to f32), AdamW fused. MFU FLOPs per step = "
        f"6*P*B*T + 6*L*H*D*T^2*B (the second term is 12*L*H*D*T^2*B/2: causal attention, fwd+bwd), "
        f"over the measured {s['square']}^3 bf16 matmul rate.")
    cuda = dev.type == "cuda"

    def run(model_fn, batches, label, timeout_s=None):
        oom = False
        for B, T in batches:
            if oom:
                b.res["train"].append(dict(mode=label, batch=B, seq=T, status="skipped (smaller batch OOM)"))
                continue
            ids = torch.randint(0, s["vocab"], (B, T), device=dev)
            marks = []

            def step(record=False):
                # with record, CUDA events split the step into forward / backward / optimizer
                ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)] if cuda and record else None
                mark = (lambda i: ev[i].record()) if ev else (lambda i: None)
                t0 = time.perf_counter()
                mark(0)
                with torch.autocast(dev.type, dtype=torch.bfloat16):
                    loss = model_fn(input_ids=ids, labels=ids).loss
                mark(1)
                loss.backward()
                mark(2)
                opt.step()
                opt.zero_grad(set_to_none=True)
                mark(3)
                if record:
                    marks.append(ev or (time.perf_counter() - t0) * 1e3)
                return loss.detach()

            status, row = "ok", dict(mode=label, batch=B, seq=T, tokens=B * T)
            try:
                if cuda:
                    torch.cuda.reset_peak_memory_stats(dev)
                t0 = time.perf_counter()
                if timeout_s:  # torch.compile: give up if the first (compiling) step runs long
                    _alarm["fired"] = False
                    signal.signal(signal.SIGALRM, _raise_timeout)
                    signal.alarm(timeout_s)
                try:
                    # compiled: one more warm-up step, since dynamo may recompile on the second call
                    for _ in range(s["train_warmup"] + (1 if timeout_s else 0)):
                        step()
                    b.timer.sync()
                finally:
                    if timeout_s:
                        signal.alarm(0)
                row["warmup_s"] = round(time.perf_counter() - t0, 2)
                for _ in range(s["train_steps"]):
                    loss = step(record=True)
                b.timer.sync()
                if cuda:
                    per = [[m[0].elapsed_time(m[1]), m[1].elapsed_time(m[2]), m[2].elapsed_time(m[3]),
                            m[0].elapsed_time(m[3])] for m in marks]
                    ms = {k: statistics.median(p[i] for p in per) for i, k in
                          enumerate(("fwd_ms", "bwd_ms", "opt_ms", "step_ms"))}
                    row["peak_mem_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
                    row["peak_reserved_gib"] = torch.cuda.max_memory_reserved(dev) / 2**30
                else:
                    ms = dict(step_ms=statistics.median(marks))
                row.update(ms)
                sec = ms["step_ms"] / 1e3
                flops = 6 * P * B * T + 6 * L * Hq * D * T * T * B
                row.update(tokens_per_s=B * T / sec, step_flops=flops, tflops=flops / sec / 1e12,
                           mfu=flops / sec / 1e12 / peak if peak else None, loss=float(loss))
            except torch.cuda.OutOfMemoryError:
                status, oom = "OOM", True
            except Exception:
                if not _alarm["fired"]:
                    raise
                status = f"gave up: first steps over {timeout_s} s"
            opt.zero_grad(set_to_none=True)
            row["status"] = status
            b.res["train"].append(row)
            del ids
            marks.clear()
            free_memory()
            if status == "ok":
                print(f"  {label} {B}x{T}: {row['step_ms']:.1f} ms/step, {row['tokens_per_s']:.0f} tok/s, "
                      f"peak {fmt(row.get('peak_mem_gib'), '.1f')} GiB, "
                      f"MFU {fmt(row['mfu'] and 100 * row['mfu'], '.1f')}%", flush=True)
            else:
                print(f"  {label} {B}x{T}: {status}", flush=True)
            b.save()
            if status.startswith("gave up"):
                return
        return

    run(model, s["train_batches"], "eager")
    if b.args.compile:
        ok = [r for r in b.res["train"] if r.get("status") == "ok" and r["mode"] == "eager"]
        if ok:
            biggest = max(ok, key=lambda r: r["tokens"])
            run(torch.compile(model), [(biggest["batch"], biggest["seq"])], "compile",
                timeout_s=b.args.compile_timeout)
    del model, opt
    free_memory()


# --------------------------------------------------------------------------- report

def fmt(v, spec):
    return "" if v is None else format(v, spec)


def markdown(res):
    m, lim = res["meta"], res["limits"]
    s = m["shapes"]
    out = [f"# PyTorch baselines for scotd's kernels ({'SMOKE, meaningless numbers' if m['smoke'] else 'Qwen2.5-0.5B shapes'})",
           "",
           f"{m.get('gpu') or 'CPU'}, torch {m['torch']} (CUDA {m['torch_cuda']}), transformers {m['transformers']}, "
           f"{m['started']}, {m.get('elapsed_s', '?')} s.",
           f"Limits: copy {fmt(lim['copy_gbps'], '.0f')} GB/s (read+write), "
           f"bf16 GEMM {fmt(lim['gemm_tflops'], '.0f')} TFLOP/s ({s['square']}^3 matmul). "
           f"Ops at N = {s['batch'] * s['seq']} tokens ({s['batch']} x {s['seq']}); median of timed runs"
           f"{', L2 flushed before each' if m.get('gpu') else ''}; '% lim' is against the copy limit (GB/s rows) "
           f"or the GEMM limit (TFLOP/s rows).", ""]
    for title, key in (("Limits and GEMMs", "gemm"), ("Ops", "ops")):
        rows = res[key]
        if not rows:
            continue
        out += [f"## {title}", "", "| op | pass | dtype | shape | ms | MB | GB/s | TFLOP/s | % lim |",
                "|---|---|---|---|--:|--:|--:|--:|--:|"]
        for r in rows:
            out.append(f"| {r['name']} | {r['pass_']} | {r['dtype']} | {r['shape']} | {r['median_ms']:.4f} | "
                       f"{fmt(r['bytes'] and r['bytes'] / 1e6, '.1f')} | {fmt(r['gbps'], '.0f')} | "
                       f"{fmt(r['tflops'], '.1f')} | {fmt(r['frac'] and 100 * r['frac'], '.1f')} |")
        out.append("")
    if res["train"]:
        out += ["## Training step (HF Qwen2ForCausalLM)", "",
                "| mode | batch | tokens/s | step ms | fwd / bwd / opt ms | peak GiB | TFLOP/s | MFU % | loss | status |",
                "|---|---|--:|--:|--:|--:|--:|--:|--:|---|"]
        for r in res["train"]:
            split = " / ".join(fmt(r.get(k), ".0f") for k in ("fwd_ms", "bwd_ms", "opt_ms")) if r.get("fwd_ms") else ""
            out.append(f"| {r['mode']} | {r['batch']}x{r['seq']} | {fmt(r.get('tokens_per_s'), '.0f')} | "
                       f"{fmt(r.get('step_ms'), '.1f')} | {split} | {fmt(r.get('peak_mem_gib'), '.1f')} | "
                       f"{fmt(r.get('tflops'), '.1f')} | {fmt(r.get('mfu') and 100 * r['mfu'], '.1f')} | "
                       f"{fmt(r.get('loss'), '.3f')} | {r['status']} |")
        out.append("")
    if res["notes"]:
        out += ["Notes:", ""] + [f"- {n}" for n in res["notes"]] + [""]
    if res["errors"]:
        out += ["ERRORS:", ""] + [f"- {e}" for e in res["errors"]] + [""]
    return "\n".join(out)


# --------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for torch_gpu.json and torch_gpu.md")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes; runs on the CPU without CUDA")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--compile", action="store_true", help="also time a torch.compile'd training step")
    ap.add_argument("--compile-timeout", type=int, default=180, help="seconds allowed for compiling (default 180)")
    args = ap.parse_args()

    only = [x for x in args.only.split(",") if x]
    bad = [x for x in only if x not in SECTIONS]
    if bad:
        ap.error(f"unknown sections {bad}; choose from {SECTIONS}")
    if torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    elif args.smoke:
        device = torch.device("cpu")
    else:
        print("no CUDA device: the full benchmark needs a GPU (use --smoke to test on the CPU)", file=sys.stderr)
        return 2

    b = Bench(args, device, smoke_shapes() if args.smoke else full_shapes())
    print(f"bench_torch_gpu: {b.res['meta'].get('gpu') or 'CPU'}, torch {torch.__version__}, "
          f"sections {','.join(only)}{' (smoke)' if args.smoke else ''}", flush=True)
    spin_up(device)
    funcs = dict(limits=sec_limits, gemm=sec_gemm, ops=sec_ops, adamw=sec_adamw, sdpa=sec_sdpa, train=sec_train)
    try:
        for name in SECTIONS:
            if name not in only:
                continue
            t0 = time.perf_counter()
            print(f"[{name}]", flush=True)
            try:
                funcs[name](b)
            except Exception as exc:
                b.error(f"section {name}", exc)
            free_memory()
            print(f"[{name}] {time.perf_counter() - t0:.1f} s", flush=True)
            b.save()
    except KeyboardInterrupt:  # gpu-check.sh's timeout sends SIGINT: keep what was measured
        b.res["errors"].append("interrupted (timeout?)")
    md = b.save()
    print()
    print(md)
    return 1 if b.res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
