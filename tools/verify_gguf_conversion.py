#!/usr/bin/env python3
"""Check tools/convert_gguf.py against transformers' own GGUF loader (developer tool).

    python tools/verify_gguf_conversion.py [--dir DIR] [--gguf FILE] [--json OUT]

Needs torch, transformers (with its GGUF support: the gguf and accelerate packages).
Defaults to the folders tools/fetch-test-models.sh makes under $SCOTD_CACHE.

1. Weights: transformers' AutoModelForCausalLM.from_pretrained(gguf_file=...) dequantises
   and un-permutes q/k itself; every tensor of its state_dict must equal ours bit for bit
   (lm_head.weight is tied to the embedding on both sides). Then both models' logits on a
   chat prompt must be equal too.
2. Tokenizer: transformers' GGUF-derived tokenizer against our tokenizer.json, over the
   fixture corpus, the GSM8K test questions and answers, and the Alpaca-style prompts.
   Expected to differ where a digit follows a whitespace run or newlines: transformers
   builds a plain GPT-2 ByteLevel pre-tokenizer for tokenizer.ggml.pre = "smollm", while
   SmolLM2's own tokenizer (and llama.cpp) isolate every digit first (Digits before
   ByteLevel). The differing cases are listed with both encodings.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors.numpy import load_file

sys.dont_write_bytecode = True  # no __pycache__ in tools/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from real_model_corpus import DEFAULT_GSM8K, corpus  # noqa: E402

CACHE = os.environ.get("SCOTD_CACHE", os.path.expanduser("~/.cache/scotd"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=os.path.join(CACHE, "models", "smollm2-135m-instruct"))
    ap.add_argument("--gguf", default=os.path.join(CACHE, "downloads", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--gsm8k", default=DEFAULT_GSM8K)
    ap.add_argument("--alpaca", default=os.path.join(os.path.dirname(DEFAULT_GSM8K), "..", "chat", "alpaca_style_805.json"))
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    gdir, gname = os.path.split(os.path.abspath(args.gguf))
    report = {}

    # ---------------------------------------------------------------- weights
    ref = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gname, dtype=torch.float32)
    ref_sd = {k: v.detach().cpu().numpy() for k, v in ref.state_dict().items()}
    ours = load_file(os.path.join(args.dir, "model.safetensors"))
    only_ref = sorted(set(ref_sd) - set(ours))
    only_ours = sorted(set(ours) - set(ref_sd))
    diffs = {}
    for k in sorted(set(ref_sd) & set(ours)):
        a, b = ref_sd[k], ours[k]
        if a.shape != b.shape or a.dtype != b.dtype:
            diffs[k] = f"shape/dtype {a.shape} {a.dtype} vs {b.shape} {b.dtype}"
        elif not np.array_equal(a, b):
            diffs[k] = f"max abs diff {float(np.max(np.abs(a - b)))}"
    tied_ok = "lm_head.weight" in only_ref and np.array_equal(ref_sd["lm_head.weight"], ours["model.embed_tokens.weight"])
    report["weights"] = {
        "compared": len(set(ref_sd) & set(ours)),
        "equal": len(set(ref_sd) & set(ours)) - len(diffs),
        "different": diffs,
        "only_in_transformers": only_ref,
        "only_in_ours": only_ours,
        "lm_head_equals_our_embedding": bool(tied_ok),
    }
    print(f"weights: {report['weights']['equal']}/{report['weights']['compared']} tensors bit-equal; "
          f"only in transformers: {only_ref}; only in ours: {only_ours}; tied lm_head ok: {tied_ok}")
    for k, v in list(diffs.items())[:10]:
        print(f"  DIFF {k}: {v}")

    model = AutoModelForCausalLM.from_pretrained(args.dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(args.dir)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, tokenize=True, return_dict=False)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    x = torch.tensor([ids])
    with torch.no_grad():
        la = ref(x).logits
        lb = model(x).logits
        gen = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=12,
                             pad_token_id=tok.pad_token_id)
    report["logits"] = {"max_abs_diff": float((la - lb).abs().max()), "tokens": len(ids)}
    report["greedy_sample"] = tok.decode(gen[0, len(ids):])
    print(f"logits on a {len(ids)}-token prompt: max |diff| = {report['logits']['max_abs_diff']}")
    print(f"greedy continuation (our folder): {report['greedy_sample']!r}")

    # ---------------------------------------------------------------- tokenizer
    gtok = AutoTokenizer.from_pretrained(gdir, gguf_file=gname)
    report["tokenizer_pre"] = {
        "transformers_gguf": str(gtok.backend_tokenizer.pre_tokenizer),
        "ours": str(tok.backend_tokenizer.pre_tokenizer),
    }
    texts = list(corpus(args.gsm8k))
    with open(args.gsm8k, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            texts += [r["question"], r["answer"]]
    if os.path.exists(args.alpaca):
        for r in json.load(open(args.alpaca, encoding="utf-8")):
            texts += [r["instruction"] + ("\n\n" + r["input"] if r.get("input") else ""), r["output"]]
    mismatches = []
    for t in texts:
        a = gtok(t, add_special_tokens=False)["input_ids"]
        b = tok(t, add_special_tokens=False)["input_ids"]
        if a != b:
            mismatches.append({"text": t, "transformers_gguf": a, "ours": b})
    dec_bad = sum(1 for t in texts if tok.decode(tok(t, add_special_tokens=False)["input_ids"]) != t)
    report["tokenizer"] = {"texts": len(texts), "mismatches": len(mismatches), "examples": mismatches[:8],
                           "our_roundtrip_failures": dec_bad}
    print(f"tokenizer: {len(mismatches)}/{len(texts)} texts encode differently "
          f"(transformers GGUF tokenizer vs ours); our decode(encode(t)) != t for {dec_bad}")
    print(f"  pre-tokenizer transformers-GGUF: {report['tokenizer_pre']['transformers_gguf']}")
    print(f"  pre-tokenizer ours:              {report['tokenizer_pre']['ours']}")
    for m in mismatches[:5]:
        t = m["text"]
        short = t if len(t) < 90 else t[:90] + "…"
        ga = gtok.convert_ids_to_tokens(m["transformers_gguf"])
        gb = tok.convert_ids_to_tokens(m["ours"])
        first = next((i for i, (p, q) in enumerate(zip(ga, gb)) if p != q), min(len(ga), len(gb)))
        print(f"  {short!r}\n    transformers-GGUF …{ga[max(0, first - 2):first + 4]}\n    ours              …{gb[max(0, first - 2):first + 4]}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2, ensure_ascii=False)
    ok = not diffs and not only_ours and tied_ok and report["logits"]["max_abs_diff"] == 0.0
    print("RESULT:", "weights identical" if ok else "WEIGHTS DIFFER")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
