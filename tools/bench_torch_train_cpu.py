#!/usr/bin/env python3
"""PyTorch + transformers side of benches/train_step.rs: one SFT step of the converted
SmolLM2-135M-Instruct on the CPU (forward, loss, backward, clip_grad_norm_, AdamW), on
the same 4 x 256 tokens, f32, torch threads = the machine's cores.

    python tools/bench_torch_train_cpu.py [--model DIR] [--steps 6]

Prints median step time and tokens/s. Needs torch + transformers (tools/requirements-goldens.txt).
"""
import argparse
import os
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

ROWS, SEQ = 4, 256


def main():
    cache = os.environ.get("SCOTD_CACHE", os.path.expanduser("~/.cache/scotd"))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.path.join(cache, "models/smollm2-135m-instruct"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    args = parser.parse_args()

    torch.set_num_threads(os.cpu_count())
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation=args.attn)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)
    # The same tokens as benches/train_step.rs.
    ids = torch.tensor([1000 + (i * 7919) % 30000 for i in range(ROWS * SEQ)]).view(ROWS, SEQ)
    labels = torch.full_like(ids, -100)
    labels[:, :-1] = ids[:, 1:]

    times = []
    for step in range(args.steps + 1):
        t = time.perf_counter()
        logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step > 0:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, attn {args.attn}")
    print(f"train step {ROWS}x{SEQ}: median {med * 1e3:.0f} ms over {len(times)} steps, {ROWS * SEQ / med:.1f} tokens/s")


if __name__ == "__main__":
    main()
