#!/usr/bin/env python3
"""The PyTorch peer of `scotd bench train`: the same training step in PyTorch +
transformers on the same card.

    python tools/bench_torch.py --model benches/configs/qwen2.5-0.5b.json --batch 8 --seq 1024 \
        [--steps 10] [--warmup 3] [--peak-gemm 8192] [--json OUT.json] [--compile]

Same model shape (Qwen2ForCausalLM from the config, random weights, f32 master weights),
same data (token i of the batch is (i * 2654435761 + 12345) mod 2^32 mod vocab, as
scotd's `bench_token`; labels = input_ids, which transformers shifts, as scotd's targets),
the recipe a PyTorch user would run: bf16 autocast, SDPA attention (flash / cuDNN),
fused AdamW (lr 1e-5, weight decay 0.01), gradient clipping to 1.0 as scotd's step.
Reports the median step time, tokens/s, MFU (FLOPs as scotd counts them:
6·params·tokens + 6·L·Hq·Dh·T²·B, over the rate of a square bf16 matmul measured in the
same run) and peak allocated memory, with the keys of scotd's JSON report.
Runs on the CPU too (tiny configs only), to check the script without a GPU.
"""

import argparse
import json
import statistics
import time

import torch


def bench_tokens(n, vocab):
    i = torch.arange(n, dtype=torch.int64)
    return ((i * 2654435761 + 12345) % (1 << 32)) % vocab


def gemm_tflops(n, device):
    a = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    b = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    times = []
    for _ in range(13):
        sync(device)
        t0 = time.perf_counter()
        torch.matmul(a, b.t())
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times[3:]) / 1e12


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_config(path):
    from transformers import Qwen2Config
    with open(path) as f:
        raw = json.load(f)
    config = Qwen2Config(**{k: v for k, v in raw.items() if k not in ("architectures", "torch_dtype")})
    config.use_cache = False
    config._attn_implementation = "sdpa"
    theta = raw.get("rope_theta", 1e6)
    if hasattr(config, "rope_parameters"):  # transformers 5 reads RoPE's base from here
        config.rope_parameters = {"rope_type": "default", "rope_theta": theta}
    return raw, config


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="config.json of the shape")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--peak-gemm", type=int, default=8192)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--json")
    args = ap.parse_args()

    from transformers import Qwen2ForCausalLM
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    raw, config = load_config(args.model)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    model.train()
    step_model = torch.compile(model) if args.compile else model
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01,
                            fused=device.type == "cuda")
    ids = bench_tokens(args.batch * args.seq, raw["vocab_size"]).view(args.batch, args.seq).to(device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = step_model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())  # reads the loss back, as scotd's step does

    for _ in range(args.warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, losses = [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        losses.append(step())
        times.append((time.perf_counter() - t0) * 1e3)
    peak_mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    del model, opt, step_model
    peak = gemm_tflops(args.peak_gemm, device)

    L, Hq = raw["num_hidden_layers"], raw["num_attention_heads"]
    D = raw.get("head_dim", raw["hidden_size"] // Hq)
    B, T = args.batch, args.seq
    flops = 6 * params * B * T + 6 * L * Hq * D * T * T * B
    ms = statistics.median(times)
    tflops = flops / (ms / 1e3) / 1e12
    report = dict(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        peer="pytorch " + torch.__version__ + (" compiled" if args.compile else ""),
        batch=B, seq=T, params=params, step_ms_median=ms, step_ms_all=times,
        tokens_per_s=B * T / (ms / 1e3), step_flops=flops, tflops=tflops,
        peak_gemm_tflops=peak, peak_gemm_size=args.peak_gemm, mfu=tflops / peak,
        peak_memory_gib=peak_mem, losses=losses)
    print(f"{report['device']}: {params / 1e6:.1f}M parameters, batch {B} x {T}, bf16 autocast\n"
          f"step {ms:.1f} ms (median of {len(times)}), {report['tokens_per_s']:.0f} tokens/s, "
          f"{tflops:.1f} TFLOP/s, MFU {100 * report['mfu']:.1f}% of {peak:.1f} TFLOP/s, "
          f"peak memory {peak_mem and f'{peak_mem:.2f} GiB'}\nlosses: {losses[0]:.4f} ... {losses[-1]:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
