#!/usr/bin/env python3
"""PyTorch/transformers CPU baseline for generation with the real SmolLM2-135M-Instruct.

    python tools/bench_torch_generate.py [--runs f32,bf16-as-f32,bf16] [--json OUT] [--threads N]
                                         [--attn sdpa|eager] [--dir DIR] [--bf16-dir DIR]

Runs, each a checkpoint loaded with a torch dtype:
  f32          the f32 checkpoint (models/smollm2-135m-instruct) in float32
  bf16-as-f32  the bf16 copy (models/smollm2-135m-instruct-bf16) upcast to float32: the
               same numbers scotd computes from its bf16 weights (the fair peer)
  bf16         the bf16 copy in bfloat16 (torch's bf16 CPU kernels; reported so that
               scotd is compared with transformers' fastest)
Each run measures, on this machine's CPU (torch.set_num_threads(nproc) unless --threads):
  prefill   one forward over a ~256-token prompt (GSM8K text), use_cache=True: tokens/s
  decode    greedy model.generate, 64 new tokens (min_new_tokens=64, so EOS cannot cut it
            short), at batch 1, 8 and 32 (left-padded chat prompts, cycled past the list). Decode time is
            t(64 new tokens) - t(1 new token), so prefill and setup cancel out:
            tokens/s = batch * 63 / that
  loop      the batch-1 decode again as a hand-written forward + argmax loop over the
            KV cache, to separate the model's time from generate()'s own overhead
and once:
  memcopy   numpy copy of a 512 MiB f32 array (np.copyto), GB/s counting bytes read +
            written: the machine's memory bandwidth, for the batch-1 decode limit
            = bandwidth / (weight bytes read per token, in the dtype the weights are held)
Every timing is the median of --repeats runs after one warm-up. Prints a Markdown table
and the JSON (also written to --json). Note the load average it prints: other processes
on a 2-core machine change these numbers a lot.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

sys.dont_write_bytecode = True  # no __pycache__ in tools/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from real_model_corpus import DEFAULT_GSM8K, gsm8k_questions  # noqa: E402

CACHE = os.environ.get("SCOTD_CACHE", os.path.expanduser("~/.cache/scotd"))
NEW = 64


def loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def timed(fn, repeats):
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts


def memcopy_gbs(repeats):
    n = 512 * 1024 * 1024 // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.empty_like(src)
    t, ts = timed(lambda: np.copyto(dst, src), repeats)
    return 2 * src.nbytes / min(ts) / 1e9, 2 * src.nbytes / t / 1e9


RUNS = {
    "f32": ("dir", torch.float32),
    "bf16-as-f32": ("bf16_dir", torch.float32),
    "bf16": ("bf16_dir", torch.bfloat16),
}

PROMPTS = [
    "What is 12 * 7?",
    "Hello!",
    "What is the capital of France?",
    "Tell me a joke.",
    "A baker makes 24 muffins and sells 15. How many are left?",
    "Write a haiku about the sea.",
    "If a train travels 60 miles per hour for 3 hours, how far does it go?",
    "Name three primary colors.",
]


def bench_run(folder, dtype, args, gsm8k_text, bandwidth):
    """Prefill, generate at batch 1, 8 and 32, and the hand-written batch-1 loop."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation=args.attn).eval()
    n_params = sum(p.numel() for p in model.parameters())  # tied lm_head counted once
    # batch-1 decode reads every weight once per token: all layers + the (tied) lm_head
    # matrix; the embedding lookup reads one row only, which is negligible.
    weight_bytes = n_params * torch.finfo(dtype).bits // 8
    res = {
        "model": os.path.basename(os.path.normpath(folder)),
        "dtype": str(dtype).removeprefix("torch."),
        "params": n_params,
        "weight_bytes_per_token": weight_bytes,
    }

    ids = tok(gsm8k_text, add_special_tokens=False)["input_ids"][: args.prefill_tokens]
    x = torch.tensor([ids])
    with torch.inference_mode():
        t, _ = timed(lambda: model(x, use_cache=True), args.repeats)
    res["prefill"] = {"tokens": len(ids), "seconds": round(t, 4), "tokens_per_s": round(len(ids) / t, 1)}

    tok.padding_side = "left"
    res["decode"] = {}
    for batch in (1, 8, 32):
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
        texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
                 for p in prompts]
        enc = tok(texts, add_special_tokens=False, padding=True, return_tensors="pt")

        def gen(n):
            return model.generate(**enc, do_sample=False, max_new_tokens=n, min_new_tokens=n,
                                  pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)

        with torch.inference_mode():
            out = gen(NEW)
            assert out.shape[1] - enc["input_ids"].shape[1] == NEW
            t1, _ = timed(lambda: gen(1), args.repeats)
            tn, _ = timed(lambda: gen(NEW), args.repeats)
        dt = tn - t1
        res["decode"][f"batch{batch}"] = {
            "batch": batch,
            "prompt_tokens": int(enc["input_ids"].shape[1]),
            "new_tokens": NEW,
            "seconds_64": round(tn, 4),
            "seconds_1": round(t1, 4),
            "tokens_per_s": round(batch * (NEW - 1) / dt, 1),
            "ms_per_step": round(1000 * dt / (NEW - 1), 2),
        }

    # ---- the same batch-1 greedy loop by hand: forward + argmax with the KV cache, no
    # generate() machinery (logits processors, stopping criteria, bookkeeping)
    text_b1 = tok.apply_chat_template([{"role": "user", "content": PROMPTS[0]}], tokenize=False,
                                      add_generation_prompt=True)
    enc = tok([text_b1], add_special_tokens=False, return_tensors="pt")

    def manual_loop():
        out = model(**enc, use_cache=True)
        cache, nxt = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
        t0 = time.perf_counter()
        for _ in range(NEW - 1):
            out = model(nxt, cache=cache, use_cache=True)
            cache, nxt = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
        return time.perf_counter() - t0

    with torch.inference_mode():
        manual_loop()
        dts = [manual_loop() for _ in range(args.repeats)]
    dt = statistics.median(dts)
    res["decode"]["batch1_manual_loop"] = {
        "batch": 1,
        "new_tokens": NEW - 1,
        "seconds": round(dt, 4),
        "tokens_per_s": round((NEW - 1) / dt, 1),
        "ms_per_step": round(1000 * dt / (NEW - 1), 2),
    }
    limit = bandwidth * 1e9 / weight_bytes
    res["batch1_decode_limit_tokens_per_s"] = round(limit, 1)
    res["batch1_decode_fraction_of_limit"] = round(res["decode"]["batch1"]["tokens_per_s"] / limit, 3)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=os.path.join(CACHE, "models", "smollm2-135m-instruct"))
    ap.add_argument("--bf16-dir", default=os.path.join(CACHE, "models", "smollm2-135m-instruct-bf16"))
    ap.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {', '.join(RUNS)}")
    ap.add_argument("--gsm8k", default=DEFAULT_GSM8K)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prefill-tokens", type=int, default=256)
    ap.add_argument("--json")
    args = ap.parse_args()
    runs = args.runs.split(",")
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        ap.error(f"unknown runs {unknown}; choose from {list(RUNS)}")

    import transformers

    torch.set_num_threads(args.threads)
    res = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "nproc": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "loadavg_start": loadavg(),
        },
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__},
        "attn_implementation": args.attn,
    }
    try:
        with open("/proc/cpuinfo") as f:
            res["machine"]["cpu"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass

    bw_best, bw_median = memcopy_gbs(max(args.repeats, 5))
    res["memcopy_GBps"] = {"best": round(bw_best, 2), "median": round(bw_median, 2)}
    text = "\n\n".join(gsm8k_questions(args.gsm8k, 20))
    res["runs"] = {}
    for name in runs:
        folder_arg, dtype = RUNS[name]
        res["runs"][name] = bench_run(getattr(args, folder_arg), dtype, args, text, bw_best)
    res["machine"]["loadavg_end"] = loadavg()

    print(f"\n## transformers generate baseline: SmolLM2-135M-Instruct, {args.attn}, "
          f"{res['machine']['threads']} threads on {res['machine']['cpu']}\n")
    print("| run (checkpoint, torch dtype) | prefill tok/s | decode b1 tok/s | decode b8 tok/s "
          "| b1 hand loop tok/s | weight MB/token | b1 limit tok/s | b1 / limit |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for name, r in res["runs"].items():
        d = r["decode"]
        print(f"| {name} ({r['model']}, {r['dtype']}) | {r['prefill']['tokens_per_s']} | {d['batch1']['tokens_per_s']} "
              f"| {d['batch8']['tokens_per_s']} | {d['batch1_manual_loop']['tokens_per_s']} "
              f"| {r['weight_bytes_per_token'] / 1e6:.1f} | {r['batch1_decode_limit_tokens_per_s']} "
              f"| {r['batch1_decode_fraction_of_limit']} |")
    print(f"\nmemory copy bandwidth (read+write, 512 MiB): {res['memcopy_GBps']['best']} GB/s best, "
          f"{res['memcopy_GBps']['median']} median; load average start / end: "
          f"{res['machine']['loadavg_start']} / {res['machine']['loadavg_end']}\n")
    print(json.dumps(res, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
