#!/usr/bin/env python3
"""The PyTorch peer of `scotd bench generate`: greedy generation through transformers'
`generate` on the same job, written with the keys of scotd's JSON report.

    python tools/bench_generate.py --model benches/configs/qwen2.5-0.5b.json \\
        --batch 1 --prompt-len 128 --new 256 [--warmup 4] [--compile] [--json OUT.json]
    python tools/bench_generate.py --smoke [--model CONFIG]   # tiny, on the CPU: tests the script

The model: AutoModelForCausalLM.from_config(config, bf16, SDPA attention), built on the
GPU with transformers' random init (normal, std 0.02), so a 7B shape takes seconds. The
prompts: token t of prompt b is ((b*P + t) * 2654435761 + 12345) mod 2^32 mod vocab, as
scotd's `bench_prompts`. The decode: `generate(do_sample=False, max_new_tokens=N,
min_new_tokens=N, cache_implementation="static")` with no end-of-sequence id, so every
sequence runs exactly N tokens. transformers compiles the forward by itself when it
decodes with a static cache on a GPU; that is turned off unless --compile (compiling
takes longer than the whole run at these sizes).

Timing (torch.cuda.synchronize around each call, after a short warm-up generate):
prefill = a generate of one new token (the median of 3), total = one generate of N;
decode = total - prefill over the N - 1 later steps. The roofline: the bytes a decode step
must read (the weights, of an untied embedding only the looked-up rows, and every
sequence's K/V at the mean context P + N/2) over a device-to-device copy's bandwidth
(bytes read + written, measured here); on the CPU none.
"""

import argparse
import json
import os
import statistics
import time

import torch

# --smoke's shape when --model is not given (the tiny Qwen2 of scotd's own tests).
SMOKE_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benches", "configs", "tiny-qwen2.json")
COPY_BYTES = 1 << 30


def bench_prompts(batch, prompt_len, vocab):
    i = torch.arange(batch * prompt_len, dtype=torch.int64)
    return (((i * 2654435761 + 12345) % (1 << 32)) % vocab).view(batch, prompt_len)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hf_config(raw):
    """A transformers config of the config.json's model type, RoPE's base where 4.x and
    5.x read it, SDPA attention."""
    from transformers import AutoConfig
    fields = {k: v for k, v in raw.items() if k not in ("architectures", "torch_dtype", "dtype", "model_type")}
    config = AutoConfig.for_model(raw["model_type"], **fields)
    if hasattr(config, "rope_parameters"):  # transformers 5
        config.rope_parameters = {"rope_type": "default", "rope_theta": raw.get("rope_theta", 10000.0)}
    return config


def build_model(raw, device, dtype):
    import transformers
    from transformers import AutoModelForCausalLM
    dtype_arg = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(
            hf_config(raw), attn_implementation="sdpa", **{dtype_arg: dtype})
    return model.eval()


def copy_gb_per_s(device):
    if device.type != "cuda":
        return None
    src = torch.zeros(COPY_BYTES, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    del src, dst
    return 2 * COPY_BYTES / (statistics.median(times) / 1e3) / 1e9


def step_bytes(raw, element, batch, prompt_len, new_tokens, params):
    """The bytes one decode step reads: as scotd's DecodeStepBytes."""
    weights = params
    if raw.get("tie_word_embeddings", False) is False:
        weights -= max(raw["vocab_size"] - batch, 0) * raw["hidden_size"]
    per_token = kv_bytes_per_token(raw, element)
    return weights * element, per_token // 2 * batch * (2 * prompt_len + new_tokens)


def kv_bytes_per_token(raw, element):
    heads = raw["num_attention_heads"]
    head_dim = raw.get("head_dim") or raw["hidden_size"] // heads
    return 2 * raw["num_hidden_layers"] * raw.get("num_key_value_heads", heads) * head_dim * element


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="config.json of the shape")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new", type=int, default=256, help="new tokens per sequence, exactly")
    ap.add_argument("--warmup", type=int, default=4, help="new tokens of the untimed warm-up generate")
    ap.add_argument("--precision", choices=("bf16", "f32"), default="bf16")
    ap.add_argument("--compile", action="store_true", help="let transformers torch.compile the decode")
    ap.add_argument("--smoke", action="store_true",
                    help="on the CPU, 2 prompts of 8 tokens, 4 new tokens; --model defaults to a tiny Qwen2")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.smoke:
        args.model = args.model or SMOKE_MODEL
        args.batch, args.prompt_len, args.new, args.warmup = 2, 8, 4, 2
        device = torch.device("cpu")
    else:
        if not args.model:
            ap.error("--model is required (or --smoke)")
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with open(args.model) as f:
        raw = json.load(f)
    if args.new < 2:
        ap.error("--new must be at least 2: one decode step after the prefill")
    report = bench(raw, device, args)
    print(summary(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


def bench(raw, device, args):
    import transformers
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    element = 2 if args.precision == "bf16" else 4
    B, P, N = args.batch, args.prompt_len, args.new
    model = build_model(raw, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    ids = bench_prompts(B, P, raw["vocab_size"]).to(device)
    mask = torch.ones_like(ids)
    # No end-of-sequence id: nothing stops a sequence before N tokens.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0

    def generate(new_tokens):
        sync(device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, cache_implementation="static",
                disable_compile=not args.compile)
        sync(device)
        ms = (time.perf_counter() - start) * 1e3
        if out.shape != (B, P + new_tokens):
            raise SystemExit(f"generate returned {tuple(out.shape)}, expected {(B, P + new_tokens)}")
        return ms

    if args.warmup > 0:
        generate(args.warmup)
    prefill_ms = statistics.median(generate(1) for _ in range(3))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    total_ms = generate(N)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    free, total = torch.cuda.mem_get_info(device) if device.type == "cuda" else (None, None)
    del model
    bandwidth = copy_gb_per_s(device)

    decode_ms = total_ms - prefill_ms
    per_step = decode_ms / (N - 1)
    weights_read, kv_read = step_bytes(raw, element, B, P, N, params)
    at_limit = (weights_read + kv_read) / bandwidth / 1e6 if bandwidth else None
    per_token = kv_bytes_per_token(raw, element)
    kv_needed = per_token * B * (P + N - 1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return dict(
        engine=f"pytorch {torch.__version__}, transformers {transformers.__version__}"
               + (", compiled" if args.compile else ""),
        device=name, params=params, precision=args.precision, batch=B, prompt_len=P, new_tokens=N,
        generated_tokens=B * N, prefill_ms=prefill_ms, prefill_tokens_per_s=B * P / (prefill_ms / 1e3),
        decode_tokens=(N - 1) * B, decode_ms=decode_ms, decode_ms_per_step=per_step,
        decode_step_ms_median=None, decode_tokens_per_s=(N - 1) * B / (decode_ms / 1e3),
        total_ms=total_ms,
        roofline=dict(
            mean_context=P + N / 2, weight_bytes_per_step=weights_read, kv_bytes_per_step=kv_read,
            bytes_per_step=weights_read + kv_read, copy_gb_per_s=bandwidth, step_ms_at_limit=at_limit,
            decode_tokens_per_s_at_limit=B / (at_limit / 1e3) if at_limit else None,
            fraction=at_limit / per_step if at_limit else None),
        memory=dict(
            weight_bytes=params * element, kv_bytes_per_token=per_token, kv_bytes_needed=kv_needed,
            # the static cache holds P + N positions of every sequence
            kv_bytes_reserved=per_token * B * (P + N), kv_budget=None,
            device_free_bytes=free, device_total_bytes=total, peak_bytes=peak))


def size(n):
    """Bytes in the largest decimal unit that leaves a number of at least 1."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{n} B"


def summary(r):
    roof, mem = r["roofline"], r["memory"]
    limit = (f"{roof['step_ms_at_limit']:.2f} ms a step at {roof['copy_gb_per_s']:.0f} GB/s (device copy): "
             f"{100 * roof['fraction']:.1f}% of the roofline") if roof["fraction"] else "no bandwidth limit on the CPU"
    peak = f", peak {size(mem['peak_bytes'])}" if mem["peak_bytes"] else ""
    if mem["device_total_bytes"]:
        peak += f", device {size(mem['device_free_bytes'])} free of {size(mem['device_total_bytes'])}"
    return (f"{r['device']} ({r['engine']}): {r['params'] / 1e6:.1f}M parameters, {r['precision']}, "
            f"batch {r['batch']}, prompt {r['prompt_len']}, {r['new_tokens']} new tokens each\n"
            f"prefill {r['prefill_ms']:.1f} ms ({r['prefill_tokens_per_s']:.0f} tokens/s); decode "
            f"{r['decode_ms_per_step']:.2f} ms a step, {r['decode_tokens_per_s']:.1f} tokens/s over "
            f"{r['decode_tokens']} tokens\n"
            f"roofline: {size(roof['bytes_per_step'])} a step (weights {size(roof['weight_bytes_per_step'])} + KV "
            f"{size(roof['kv_bytes_per_step'])} at mean context {roof['mean_context']}), {limit}\n"
            f"memory: weights {size(mem['weight_bytes'])}, static KV cache {size(mem['kv_bytes_reserved'])}{peak}")


if __name__ == "__main__":
    main()
