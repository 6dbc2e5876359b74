#!/usr/bin/env python3
"""Loads a checkpoint folder saved by scotd in transformers and compares logits.

    python tools/check_checkpoint_with_transformers.py DIR [--scotd target/release/scotd]

It checks that transformers takes the folder as its own, and computes what we compute:
  1. AutoModelForCausalLM.from_pretrained(DIR) and AutoTokenizer.from_pretrained(DIR)
     load it (float32 compute; a bf16 checkpoint is upcast, as scotd upcasts it);
  2. for each prompt, the tokenizer's chat template gives the token ids scotd used;
  3. the last-position logits agree: at scotd's top-20 ids and in the log-sum-exp over
     the vocabulary, max |ours - theirs| / max |theirs| < 1e-4, and the top-20 ids match.

Our side comes from `scotd logits --model DIR --prompt ... --out FILE.json` (run here,
or given with --ours FILE.json). A checkpoint of the real SmolLM2 to try it on:

    SCOTD_KEEP_CHECKPOINTS=/tmp/ckpts cargo test --release --test checkpoint real_smollm2
    python tools/check_checkpoint_with_transformers.py /tmp/ckpts/smollm2-bf16

Needs torch and transformers (tools/requirements-goldens.txt); CI does not run it.
Exit status 0 when every check passes.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "What is 7 times 8?",
    "Write a haiku about the sea.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
    "clips in May. How many clips did Natalia sell altogether in April and May?",
]
TOLERANCE = 1e-4


def scotd_logits(scotd, model_dir, prompts, top_k):
    """Runs `scotd logits` and returns its JSON report."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "logits.json")
        cmd = [scotd, "logits", "--model", model_dir, "--top-k", str(top_k), "--out", out, "--prompt", *prompts]
        subprocess.run(cmd, check=True)
        with open(out) as f:
            return json.load(f)


def hf_chat_ids(tokenizer, prompt):
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
    )
    # transformers 5 returns a BatchEncoding here, 4.x a plain list.
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


@torch.no_grad()
def hf_last_logits(model, ids):
    logits = model(torch.tensor([ids])).logits[0, -1].to(torch.float64)
    return logits


def compare(entry, logits):
    """Relative differences at our top ids and in the log-sum-exp, and whether the
    top ids agree (ties aside, which sort differently)."""
    top_ids = entry["top_ids"]
    ours = torch.tensor(entry["top_logits"], dtype=torch.float64)
    theirs = logits[top_ids]
    scale = logits.abs().max().item()
    top_rel = (ours - theirs).abs().max().item() / scale
    lse = torch.logsumexp(logits, 0).item()
    lse_rel = abs(entry["logsumexp"] - lse) / max(abs(lse), 1e-12)
    their_top = torch.topk(logits, len(top_ids)).indices.tolist()
    # Ids whose logits tie within the tolerance may come in another order.
    same_top = set(their_top) == set(top_ids) or all(
        abs(logits[a] - logits[b]) <= TOLERANCE * scale for a, b in zip(their_top, top_ids)
    )
    return top_rel, lse_rel, same_top


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dir", help="a checkpoint folder written by scotd's save_checkpoint")
    parser.add_argument("--scotd", default="target/release/scotd", help="the scotd binary")
    parser.add_argument("--ours", help="a `scotd logits` JSON report to use instead of running scotd")
    parser.add_argument("--prompt", action="append", help="prompt text (repeatable); default: three built-in prompts")
    parser.add_argument("--top-k", type=int, default=20)
    args = parser.parse_args()
    prompts = args.prompt or PROMPTS

    if args.ours:
        with open(args.ours) as f:
            ours = json.load(f)
    else:
        ours = scotd_logits(args.scotd, args.dir, prompts, args.top_k)
    with open(os.path.join(args.dir, "config.json")) as f:
        stored = json.load(f).get("dtype")
    tokenizer = AutoTokenizer.from_pretrained(args.dir)
    model = AutoModelForCausalLM.from_pretrained(args.dir, dtype=torch.float32)
    model.eval()
    print(f"{args.dir}: {type(model).__name__}, weights stored as {stored}, computed in float32")

    failures = 0
    worst = 0.0
    for entry in ours["prompts"]:
        hf_ids = hf_chat_ids(tokenizer, entry["prompt"])
        ids_match = hf_ids == entry["ids"]
        logits = hf_last_logits(model, entry["ids"])
        top_rel, lse_rel, same_top = compare(entry, logits)
        worst = max(worst, top_rel, lse_rel)
        ok = ids_match and same_top and top_rel < TOLERANCE and lse_rel < TOLERANCE
        failures += not ok
        print(
            f"  {'ok  ' if ok else 'FAIL'} {len(entry['ids']):3d} tokens "
            f"(chat ids {'match' if ids_match else 'DIFFER'}), top-{len(entry['top_ids'])} "
            f"{'same' if same_top else 'DIFFER'}, max rel diff top logits {top_rel:.2e}, "
            f"logsumexp {lse_rel:.2e}: {entry['prompt'][:40]!r}"
        )
    verdict = "PASS" if failures == 0 else f"FAIL ({failures} of {len(ours['prompts'])} prompts)"
    print(f"verdict: {verdict}; worst relative difference {worst:.2e} (tolerance {TOLERANCE:.0e})")
    sys.exit(0 if failures == 0 else 1)


if __name__ == "__main__":
    main()
