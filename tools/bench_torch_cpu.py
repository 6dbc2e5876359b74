#!/usr/bin/env python3
"""PyTorch + transformers side of the CPU training-step benchmark.

The same shapes as `benches/cpu_train_step.rs`, timed the same way (median over
repeats after warm-up), in f32 on the CPU:

  gemm   torch.matmul at the shapes a training step issues (transposes as views,
         as nn.Linear's forward and backward use them), in GFLOP/s
  layer  one Qwen2DecoderLayer forward + backward (seeded with a fixed random output
         gradient; the input requires grad), 1 x 256 tokens, tokens/s
  ops    the ops of one SmolLM2-shaped layer, each forward + backward on its own, and
         SmolLM2's model-level loss and embedding
  model  loss + backward of a whole Qwen2ForCausalLM / LlamaForCausalLM (random init),
         tokens/s

Attention is "sdpa" by default (torch's fused CPU flash-attention kernel, causal via
is_causal); `--attn eager` times transformers' eager matmul + softmax path instead.
Threads: torch.set_num_threads(--threads), default the number of CPUs this process may
run on (`nproc`), which is also the number of rayon threads scotd uses.

  python tools/bench_torch_cpu.py                          # everything
  python tools/bench_torch_cpu.py --only layer model       # some groups
  python tools/bench_torch_cpu.py --filter '^gemm/square'   # some benchmarks (regex on group/id)
  python tools/bench_torch_cpu.py --compare target/criterion/scotd_summary.json
        # also print the scotd / PyTorch table (run `cargo bench --bench cpu_train_step` first)
  python tools/bench_torch_cpu.py --profile layer          # torch.profiler op table of the layers

Needs torch and transformers (the golden-fixture environment, tools/requirements-goldens.txt).
"""

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer, Qwen2RotaryEmbedding

SEQ_LAYER = 256

# (id, description, transpose a, transpose b, m, n, k): c[m x n] = op(a) . op(b),
# the same list as gemm_shapes() in benches/cpu_train_step.rs.
GEMMS = [
    ("smol_up_fwd", "x·Wᵀ (linear fwd)", False, True, 512, 1536, 576),
    ("smol_up_dx", "dy·W (linear dx)", False, False, 512, 576, 1536),
    ("smol_up_dw", "dyᵀ·x (linear dW)", True, False, 1536, 576, 512),
    ("qwen05_up_fwd", "x·Wᵀ (linear fwd)", False, True, 256, 4864, 896),
    ("smol_lmhead_fwd", "x·Eᵀ (LM head fwd)", False, True, 256, 49152, 576),
    ("square_1024", "a·b", False, False, 1024, 1024, 1024),
]


def common(**kw):
    return dict(
        hidden_act="silu",
        max_position_embeddings=4096,
        attention_dropout=0.0,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        use_cache=False,
        **kw,
    )


# The same shapes as the Rust benchmark's configs.
LAYERS = {
    "smollm2_135m": dict(hidden_size=576, num_attention_heads=9, num_key_value_heads=3,
                         head_dim=64, intermediate_size=1536, rope_theta=100000.0, rms_norm_eps=1e-5),
    "qwen25_05b": dict(hidden_size=896, num_attention_heads=14, num_key_value_heads=2,
                       head_dim=64, intermediate_size=4864, rope_theta=1e6, rms_norm_eps=1e-6),
}
MODELS = {
    # name: (config class, model class, config, batch, seq)
    "tiny_qwen2": (Qwen2Config, Qwen2ForCausalLM,
                   dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=2, intermediate_size=688, vocab_size=8192,
                        tie_word_embeddings=True, rope_theta=1e6, rms_norm_eps=1e-6), 4, 128),
    "smollm2_135m": (LlamaConfig, LlamaForCausalLM,
                     dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                          num_key_value_heads=3, head_dim=64, intermediate_size=1536,
                          vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0,
                          rms_norm_eps=1e-5, attention_bias=False, mlp_bias=False), 1, 256),
}


def make_config(cls, shape, attn, num_layers=1, vocab=64):
    shape = dict(shape)
    theta = shape.pop("rope_theta")
    shape.setdefault("num_hidden_layers", num_layers)
    shape.setdefault("vocab_size", vocab)
    if cls is Qwen2Config:
        shape.setdefault("use_sliding_window", False)
    config = cls(rope_parameters={"rope_type": "default", "rope_theta": theta}, **common(**shape))
    config._attn_implementation = attn
    return config


def selected(args, group, bench_id):
    """Whether "group/id" matches --filter (a regex, searched as criterion does)."""
    return args.filter is None or re.search(args.filter, f"{group}/{bench_id}") is not None


def timeit(fn, repeats, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def bench_gemm(args, results):
    g = torch.Generator().manual_seed(1)
    for name, what, ta, tb, m, n, k in GEMMS:
        if not selected(args, "gemm", f"{name}_{m}x{n}x{k}"):
            continue
        # Stored as the row-major buffers scotd gets; transposes are views (strides).
        a = torch.randn(*((k, m) if ta else (m, k)), generator=g)
        b = torch.randn(*((n, k) if tb else (k, n)), generator=g)
        a_op = a.t() if ta else a
        b_op = b.t() if tb else b
        out = torch.empty(m, n)
        flops = 2 * m * n * k

        def run():
            torch.matmul(a_op, b_op, out=out)

        # About as many iterations as criterion's 3 s window, at least 10.
        med, _ = timeit(run, 1, 2)
        repeats = max(10, min(200, int(3.0 / max(med, 1e-6))))
        med, times = timeit(run, repeats, 2)
        results.append(dict(group="gemm", id=f"{name}_{m}x{n}x{k}",
                            shape=f"{what} m={m} n={n} k={k}", median_s=med, min_s=min(times),
                            unit="GFLOP/s", rate=flops / med / 1e9, work=flops))
        report(results[-1])


def bench_layer(args, results):
    for name, shape in LAYERS.items():
        if not selected(args, "layer", f"{name}_fwd_bwd_1x{SEQ_LAYER}"):
            continue
        config = make_config(Qwen2Config, shape, args.attn)
        torch.manual_seed(7)
        layer = Qwen2DecoderLayer(config, layer_idx=0)
        with torch.no_grad():  # the model's init: normal(0.02), zero biases, unit norms
            for pname, p in layer.named_parameters():
                if pname.endswith("norm.weight"):
                    p.fill_(1.0)
                elif pname.endswith(".bias"):
                    p.zero_()
                else:
                    p.normal_(0.0, 0.02)
        layer.train()
        rotary = Qwen2RotaryEmbedding(config)
        g = torch.Generator().manual_seed(3)
        x = torch.randn(1, SEQ_LAYER, config.hidden_size, generator=g).requires_grad_()
        grad_out = torch.randn(1, SEQ_LAYER, config.hidden_size, generator=g)
        position_ids = torch.arange(SEQ_LAYER).unsqueeze(0)
        # sdpa is causal through is_causal when no mask is given; eager needs the mask.
        mask = None
        if args.attn == "eager":
            mask = torch.full((SEQ_LAYER, SEQ_LAYER), torch.finfo(torch.float32).min).triu(1)[None, None]

        def run():
            layer.zero_grad(set_to_none=True)
            x.grad = None
            # RoPE's cos/sin inside the timed region: scotd's rope op builds its table per call.
            cos_sin = rotary(x, position_ids)
            out = layer(x, attention_mask=mask, position_ids=position_ids,
                        position_embeddings=cos_sin)
            if isinstance(out, tuple):
                out = out[0]
            out.backward(grad_out)

        med, times = timeit(run, args.repeats, 3)
        results.append(dict(group="layer", id=f"{name}_fwd_bwd_1x{SEQ_LAYER}", min_s=min(times),
                            shape=f"Qwen2DecoderLayer hidden {config.hidden_size} heads "
                                  f"{config.num_attention_heads}/{config.num_key_value_heads} "
                                  f"inter {config.intermediate_size}, 1x{SEQ_LAYER} tokens, {args.attn}",
                            median_s=med, unit="tokens/s", rate=SEQ_LAYER / med, work=SEQ_LAYER))
        report(results[-1])
        if "layer" in args.profile:
            profile(run, f"layer {name}")


def bench_ops(args, results):
    """The ops of one SmolLM2-135M-shaped Qwen2 decoder layer (1 x 256 tokens), each
    forward + backward on its own, as many times as the layer runs it, written as
    transformers' Qwen2 modules write them. Same list as bench_ops in the Rust bench."""
    import types

    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm, apply_rotary_pos_emb

    shape = LAYERS["smollm2_135m"]
    t, d, dh, inter = SEQ_LAYER, shape["hidden_size"], shape["head_dim"], shape["intermediate_size"]
    hq, hkv = shape["num_attention_heads"], shape["num_key_value_heads"]
    g = torch.Generator().manual_seed(9)

    def param(*s):
        return torch.randn(*s, generator=g).requires_grad_()

    def grad(*s):
        return torch.randn(*s, generator=g)

    leaves = []

    def track(*ts):
        leaves.extend(x for x in ts if x is not None and x.requires_grad)
        return ts

    projections = [(d, hq * dh, True), (d, hkv * dh, True), (d, hkv * dh, True),
                   (hq * dh, d, False), (d, inter, False), (d, inter, False), (inter, d, False)]
    lin = [track(param(t, k), param(m, k), param(m) if b else None, grad(t, m)) for k, m, b in projections]

    def linear_x7():
        for x, w, b, dy in lin:
            F.linear(x, w, b).backward(dy)

    # transformers' sdpa path: q/k/v transposed to [B, H, T, Dh] (views), GQA in the
    # kernel (enable_gqa, as sdpa_attention_forward picks with no mask), causal.
    attn_module = types.SimpleNamespace(num_key_value_groups=hq // hkv, is_causal=True, training=True)
    q, k, v = track(param(1, t, hq, dh), param(1, t, hkv, dh), param(1, t, hkv, dh))
    d_attn = grad(1, t, hq, dh)

    def attention():
        out, _ = sdpa_attention_forward(attn_module, q.transpose(1, 2), k.transpose(1, 2),
                                        v.transpose(1, 2), None, scaling=dh ** -0.5)
        out.backward(d_attn)

    norm = Qwen2RMSNorm(d, eps=shape["rms_norm_eps"])
    leaves.append(norm.weight)
    (x_norm,) = track(param(t, d))
    d_norm = grad(t, d)

    def rmsnorm_x2():
        for _ in range(2):
            norm(x_norm).backward(d_norm)

    config = make_config(Qwen2Config, shape, args.attn)
    rotary = Qwen2RotaryEmbedding(config)
    qr, kr = track(param(1, t, hq, dh), param(1, t, hkv, dh))
    dqr, dkr = grad(1, hq, t, dh), grad(1, hkv, t, dh)
    position_ids = torch.arange(t).unsqueeze(0)

    def rope_q_k():
        cos, sin = rotary(qr, position_ids)
        qe, ke = apply_rotary_pos_emb(qr.transpose(1, 2), kr.transpose(1, 2), cos, sin)
        torch.autograd.backward([qe, ke], [dqr, dkr])

    act = torch.nn.SiLU()
    gate, up = track(param(t, inter), param(t, inter))
    d_act = grad(t, inter)

    def swiglu():
        (act(gate) * up).backward(d_act)

    a, b = track(param(t, d), param(t, d))
    d_add = grad(t, d)

    def add_x2():
        for _ in range(2):
            (a + b).backward(d_add)

    # The model-level ops of SmolLM2-135M's step: the loss over [256, 49152] logits as
    # transformers' ForCausalLMLoss computes it (f32 logits, mean cross-entropy), and
    # the embedding lookup with its dense weight gradient.
    vocab = 49152
    ids = torch.randint(0, vocab, (t,), generator=g)
    logits = param(t, vocab) * 2.0
    logits = logits.detach().requires_grad_()
    track(logits)

    def model_cross_entropy():
        F.cross_entropy(logits.float(), ids, reduction="mean").backward()

    emb = torch.nn.Embedding(vocab, d)
    leaves.append(emb.weight)
    d_emb = grad(t, d)

    def model_embedding():
        emb(ids).backward(d_emb)

    for name, what, fn in [
        ("linear_x7", f"q,k,v (+bias), o, gate, up, down over {t} tokens", linear_x7),
        ("attention", f"sdpa causal GQA (enable_gqa), q [1,{hq},{t},{dh}]", attention),
        ("rmsnorm_x2", f"Qwen2RMSNorm [{t},{d}], twice", rmsnorm_x2),
        ("rope_q_k", "rotary cos/sin + apply_rotary_pos_emb(q, k)", rope_q_k),
        ("swiglu", f"silu(gate) * up [{t},{inter}]", swiglu),
        ("add_x2", f"[{t},{d}], twice", add_x2),
        ("model_cross_entropy", f"F.cross_entropy, logits [{t},{vocab}], mean", model_cross_entropy),
        ("model_embedding", f"nn.Embedding [{vocab},{d}], {t} ids", model_embedding),
    ]:
        bench_id = f"smollm2_{name[len('model_'):]}" if name.startswith("model_") else f"smollm2_layer_{name}"
        if not selected(args, "ops", bench_id):
            continue

        def run():
            for leaf in leaves:
                leaf.grad = None
            fn()

        med, _ = timeit(run, 1, 2)
        repeats = max(10, min(200, int(3.0 / max(med, 1e-6))))
        med, times = timeit(run, repeats, 2)
        results.append(dict(group="ops", id=bench_id, shape=f"fwd+bwd: {what}", min_s=min(times),
                            median_s=med, unit="tokens/s", rate=t / med, work=t))
        report(results[-1])


def bench_model(args, results):
    for name, (config_cls, model_cls, shape, batch, seq) in MODELS.items():
        if not selected(args, "model", f"{name}_loss_bwd_{batch}x{seq}"):
            continue
        config = make_config(config_cls, shape, args.attn)
        torch.manual_seed(11)
        model = model_cls(config)
        model.train()
        g = torch.Generator().manual_seed(5)
        ids = torch.randint(0, config.vocab_size, (batch, seq), generator=g)
        # HF shifts labels inside the loss: position t predicts ids[t + 1], the last
        # position of each row is left out, as the Rust side's targets.
        n = batch * seq

        def run():
            model.zero_grad(set_to_none=True)
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()

        repeats = args.repeats if n * config.num_hidden_layers < 10_000 else max(3, args.repeats // 2)
        med, times = timeit(run, repeats, 2)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        results.append(dict(group="model", id=f"{name}_loss_bwd_{batch}x{seq}", min_s=min(times),
                            shape=f"{model_cls.__name__} {config.num_hidden_layers} layers, "
                                  f"hidden {config.hidden_size}, vocab {config.vocab_size}, "
                                  f"{batch}x{seq} tokens, {params:.1f}M params, {args.attn}",
                            median_s=med, unit="tokens/s", rate=n / med, work=n))
        report(results[-1])
        if "model" in args.profile:
            profile(run, f"model {name}")


def profile(run, title):
    from torch.profiler import ProfilerActivity, profile as tprofile
    run()
    with tprofile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            run()
    print(f"\n--- torch.profiler, {title} (3 iterations) ---")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def report(r):
    per_second = r["work"] / 1e9 if r["unit"] == "GFLOP/s" else r["work"]
    print(f"{r['group']:<6} {r['id']:<34} {r['median_s'] * 1e3:10.3f} ms {r['rate']:10.1f} {r['unit']:<8} "
          f"(fastest {r['min_s'] * 1e3:.3f} ms, {per_second / r['min_s']:.1f})", flush=True)


def compare(path, torch_results):
    """The scotd / PyTorch table, in Markdown: medians, and the ratio of the medians
    (> 1: scotd is faster) next to the ratio of the fastest runs."""
    with open(path) as f:
        ours = {(r["group"], r["id"]): r for r in json.load(f)["results"]}

    def cell(r):
        per_second = r["work"] / 1e9 if r["unit"] == "GFLOP/s" else r["work"]
        rate = per_second / r["median_s"]
        rate = f"{rate:.0f} GFLOP/s" if r["unit"] == "GFLOP/s" else f"{rate:,.0f} tok/s"
        return f"{r['median_s'] * 1e3:.1f} ms, {rate}"

    print("\n| benchmark | scotd (median) | PyTorch (median) | speed scotd/PyTorch, median (fastest) |")
    print("|---|---|---|---|")
    for t in torch_results:
        s = ours.get((t["group"], t["id"]))
        if s is None:
            continue
        print(f"| {t['group']}/{t['id']} | {cell(s)} | {cell(t)} | "
              f"{t['median_s'] / s['median_s']:.2f} ({t['min_s'] / s['min_s']:.2f}) |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=["gemm", "layer", "ops", "model"],
                        default=["gemm", "layer", "ops", "model"])
    parser.add_argument("--filter", metavar="REGEX",
                        help='only the benchmarks whose "group/id" matches, like criterion\'s filter')
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    parser.add_argument("--repeats", type=int, default=10, help="timed iterations of a train step")
    parser.add_argument("--compare", metavar="SCOTD_SUMMARY_JSON",
                        help="scotd's target/criterion/scotd_summary.json: print the ratio table")
    parser.add_argument("--json", metavar="PATH", help="write the results here")
    parser.add_argument("--compare-only", metavar="TORCH_JSON",
                        help="with --compare: read PyTorch results from this --json file instead of running")
    parser.add_argument("--profile", nargs="*", default=[], choices=["layer", "model"])
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, python "
          f"{platform.python_version()}, threads {torch.get_num_threads()}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, attention {args.attn}")
    print(f"BLAS: {'MKL' if torch.backends.mkl.is_available() else 'not MKL'}, oneDNN "
          f"{torch.backends.mkldnn.is_available()}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}")

    results = []
    if args.compare_only:
        with open(args.compare_only) as f:
            results = json.load(f)["results"]
        args.only = []
    for group, fn in [("gemm", bench_gemm), ("layer", bench_layer), ("ops", bench_ops),
                      ("model", bench_model)]:
        if group in args.only:
            fn(args, results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "transformers": transformers.__version__,
                       "threads": torch.get_num_threads(), "attn": args.attn, "results": results}, f, indent=2)
    if args.compare:
        compare(args.compare, results)


if __name__ == "__main__":
    sys.exit(main())
