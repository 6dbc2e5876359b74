#!/usr/bin/env python3
"""Convert a llama-architecture GGUF file into a Hugging Face checkpoint folder.

    python tools/convert_gguf.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf --out DIR

writes DIR/ with

    config.json             LlamaForCausalLM config from the GGUF metadata (llama.*)
    model.safetensors       every tensor dequantised (gguf.quants.dequantize) and stored
                            float32 under Hugging Face names; q/k rows un-permuted (below)
    tokenizer.json          a fast-tokenizer file built from tokenizer.ggml.* (byte-level
                            BPE: vocab, merges, added tokens, and the pre-tokenizer that
                            tokenizer.ggml.pre names)
    tokenizer_config.json   chat_template, bos/eos/pad/unk tokens, model_max_length
    generation_config.json  bos/eos/pad token ids
    scotd-conversion.json   the marker: sha256 of the GGUF, converter version and sha256;
                            a rerun whose marker matches does nothing

Needs only numpy, gguf and safetensors (no torch). The folder is written to a temporary
sibling and renamed into place, so a reader never sees half a conversion.

The q/k permutation
-------------------
llama.cpp applies RoPE to adjacent pairs (x[2i], x[2i+1]) of each head ("interleaved"),
Hugging Face's Llama to the two halves (x[i], x[i + d/2]) ("rotate_half"). So llama.cpp's
converter reorders the rows of q_proj/k_proj per head: HF row (half s, index i) of a head
of width 2*d becomes GGUF row (index i, half s), i.e. per head the [2, d] row block is
transposed to [d, 2]. We read GGUF rows per head as [d, 2] and transpose back to [2, d].
For k the head count is the KV head count. Rows are whole quantisation rows (blocks run
along the input dimension), so dequantise-then-unpermute is exact. After un-permuting,
the converter re-applies the forward permutation and checks it reproduces the GGUF rows.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

CONVERTER_VERSION = "1"
MARKER = "scotd-conversion.json"
OUTPUT_FILES = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
]

# GGUF token types (llama.cpp's llama_token_type)
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6


def sha256_file(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def log(msg):
    print(f"[convert_gguf] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# q/k row permutation
# --------------------------------------------------------------------------------------


def hf_to_gguf_rows(w, n_head):
    """The permutation llama.cpp's converter applies (for checking only): per head,
    rows [2 halves, d] -> [d, 2 halves]."""
    d = w.shape[0] // n_head // 2
    return w.reshape(n_head, 2, d, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_to_hf_rows(w, n_head):
    """Undo it: per head, rows [d, 2] (interleaved pairs) -> [2, d] (halves)."""
    if w.shape[0] % (2 * n_head) != 0:
        raise ValueError(f"cannot un-permute {w.shape[0]} rows into {n_head} heads of even width")
    d = w.shape[0] // n_head // 2
    return np.ascontiguousarray(w.reshape(n_head, d, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


# --------------------------------------------------------------------------------------
# GGUF reading
# --------------------------------------------------------------------------------------


def read_metadata(reader):
    meta = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        meta[name] = field.contents()
    return meta


def f32_to_json(x):
    """The shortest decimal that round-trips the float32 (1e-05, not 9.999999747378752e-06)."""
    return float(str(np.float32(x)))


LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def hf_name(gguf_name):
    if gguf_name in GLOBAL_NAMES:
        return GLOBAL_NAMES[gguf_name]
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in LAYER_NAMES:
        return f"model.layers.{int(parts[1])}.{LAYER_NAMES[parts[2]]}"
    raise ValueError(f"unknown GGUF tensor {gguf_name!r} (this converter knows the llama architecture only)")


def convert_tensors(reader, n_head, n_head_kv):
    from gguf.quants import dequantize

    out = {}
    for t in reader.tensors:
        name = hf_name(t.name)
        w = dequantize(t.data, t.tensor_type)
        w = np.asarray(w, dtype=np.float32)
        # GGUF lists dims innermost first; numpy's shape is the reverse (rows, cols) = HF (out, in)
        expect = tuple(int(n) for n in reversed(t.shape.tolist()))
        if w.shape != expect:
            w = w.reshape(expect)
        heads = {"attn_q": n_head, "attn_k": n_head_kv}.get(t.name.split(".")[-2]) if t.name.startswith("blk.") else None
        if heads is not None:
            hf = gguf_to_hf_rows(w, heads)
            if not np.array_equal(hf_to_gguf_rows(hf, heads), w):
                raise AssertionError(f"{t.name}: un-permutation does not invert llama.cpp's permutation")
            w = hf
        if name in out:
            raise ValueError(f"two GGUF tensors map to {name}")
        out[name] = np.ascontiguousarray(w)
    return out


# --------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------

# Pre-tokenizers by tokenizer.ggml.pre, matching the Hugging Face tokenizer.json of the
# models llama.cpp assigns that name to (llama-vocab.cpp's regex_exprs say the same thing):
#   smollm (also starcoder, refact, codeshell): "\p{N}" isolated first, then GPT-2's regex
#     = HF Sequence[Digits(individual_digits=true), ByteLevel(use_regex=true)]
#   gpt2 / default: ByteLevel(use_regex=true) alone (GPT-2's regex)
#   qwen2: Split(Qwen2 regex, isolated) then ByteLevel(use_regex=false)
_BYTELEVEL_REGEX = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZERS = {
    "smollm": {
        "type": "Sequence",
        "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTELEVEL_REGEX],
    },
    "starcoder": {
        "type": "Sequence",
        "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTELEVEL_REGEX],
    },
    "gpt-2": _BYTELEVEL_REGEX,
    "gpt2": _BYTELEVEL_REGEX,
    "default": _BYTELEVEL_REGEX,
    "qwen2": {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": _QWEN2_SPLIT}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        ],
    },
}


def bytes_to_unicode():
    """GPT-2's byte -> printable character table (the byte-level alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def build_tokenizer(meta):
    model = meta.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"tokenizer.ggml.model is {model!r}; only byte-level BPE ('gpt2') is supported")
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise ValueError(f"tokenizer.ggml.pre {pre!r} is not known to this converter (known: {sorted(PRE_TOKENIZERS)})")
    tokens = list(meta["tokenizer.ggml.tokens"])
    types = list(meta.get("tokenizer.ggml.token_type") or [TOKEN_NORMAL] * len(tokens))
    merges = list(meta["tokenizer.ggml.merges"])
    if len(set(tokens)) != len(tokens):
        raise ValueError("duplicate tokens in tokenizer.ggml.tokens")

    alphabet = set(bytes_to_unicode().values())
    vocab = {}
    added = []
    for i, (tok, ty) in enumerate(zip(tokens, types)):
        vocab[tok] = i
        if ty == TOKEN_CONTROL or ty == TOKEN_USER_DEFINED:
            added.append(
                {
                    "id": i,
                    "content": tok,
                    "single_word": False,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": False,
                    "special": ty == TOKEN_CONTROL,
                }
            )
        elif ty == TOKEN_NORMAL and not set(tok) <= alphabet:
            raise ValueError(f"token {i} {tok!r} is not spelled in the byte-level alphabet")
    pairs = []
    for m in merges:
        a, sep, b = m.partition(" ")
        if not sep or not a or not b or " " in b:
            raise ValueError(f"malformed merge {m!r}")
        pairs.append([a, b])

    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": PRE_TOKENIZERS[pre],
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": pairs,
        },
    }
    return tokenizer, tokens, added


def special_token_names(meta, tokens):
    out = {}
    for name, key in [("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unk", "unknown_token_id"), ("pad", "padding_token_id")]:
        tid = meta.get(f"tokenizer.ggml.{key}")
        if tid is not None:
            tid = int(tid)
            out[name] = (tid, tokens[tid])
    return out


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def build_config(meta, has_output):
    arch = meta["general.architecture"]
    if arch != "llama":
        raise ValueError(f"general.architecture is {arch!r}; this converter handles 'llama' only")
    g = lambda k, d=None: meta.get(f"{arch}.{k}", d)  # noqa: E731
    hidden = int(g("embedding_length"))
    n_head = int(g("attention.head_count"))
    n_head_kv = int(g("attention.head_count_kv", n_head))
    head_dim = int(g("attention.key_length", hidden // n_head))
    rope_dim = int(g("rope.dimension_count", head_dim))
    if rope_dim != head_dim:
        raise ValueError(f"partial RoPE (rope.dimension_count {rope_dim} != head_dim {head_dim}) is not supported")
    if g("rope.scaling.type") not in (None, "none"):
        raise ValueError(f"RoPE scaling {g('rope.scaling.type')!r} is not supported")
    vocab = int(g("vocab_size", len(meta["tokenizer.ggml.tokens"])))
    toks = meta["tokenizer.ggml.tokens"]
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": int(meta["tokenizer.ggml.bos_token_id"]) if "tokenizer.ggml.bos_token_id" in meta else None,
        "eos_token_id": int(meta["tokenizer.ggml.eos_token_id"]) if "tokenizer.ggml.eos_token_id" in meta else None,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": int(g("feed_forward_length")),
        "max_position_embeddings": int(g("context_length")),
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": n_head,
        "num_hidden_layers": int(g("block_count")),
        "num_key_value_heads": n_head_kv,
        "pad_token_id": int(meta["tokenizer.ggml.padding_token_id"]) if "tokenizer.ggml.padding_token_id" in meta else None,
        "pretraining_tp": 1,
        "rms_norm_eps": f32_to_json(g("attention.layer_norm_rms_epsilon")),
        "rope_theta": f32_to_json(g("rope.freq_base", 10000.0)),
        "tie_word_embeddings": not has_output,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": vocab,
    }
    if len(toks) != vocab:
        raise ValueError(f"{len(toks)} tokens but vocab_size {vocab}")
    return cfg


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def convert(gguf_path, out_dir, gguf_sha):
    import gguf
    from safetensors.numpy import save_file

    t0 = time.time()
    reader = gguf.GGUFReader(gguf_path)
    meta = read_metadata(reader)
    names = {t.name for t in reader.tensors}
    cfg = build_config(meta, has_output="output.weight" in names)
    log(
        f"{meta.get('general.name')}: {cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}, "
        f"heads {cfg['num_attention_heads']}/{cfg['num_key_value_heads']}, vocab {cfg['vocab_size']}, "
        f"tied={cfg['tie_word_embeddings']}"
    )

    tensors = convert_tensors(reader, cfg["num_attention_heads"], cfg["num_key_value_heads"])
    expected = 1 + 1 + 9 * cfg["num_hidden_layers"] + (0 if cfg["tie_word_embeddings"] else 1)
    if len(tensors) != expected:
        raise ValueError(f"expected {expected} tensors for a bias-free llama, got {len(tensors)}")
    if tensors["model.embed_tokens.weight"].shape != (cfg["vocab_size"], cfg["hidden_size"]):
        raise ValueError(f"embedding shape {tensors['model.embed_tokens.weight'].shape}")
    log(f"dequantised {len(tensors)} tensors in {time.time() - t0:.1f}s")

    tokenizer, tokens, added = build_tokenizer(meta)
    specials = special_token_names(meta, tokens)
    named = {tok for _, tok in specials.values()}
    extra_special = [a["content"] for a in added if a["special"] and a["content"] not in named]
    max_len = cfg["max_position_embeddings"]
    tok_cfg = {
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "add_prefix_space": bool(meta.get("tokenizer.ggml.add_space_prefix", False)),
        "added_tokens_decoder": {
            str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
            for a in added
        },
        "additional_special_tokens": extra_special,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_len,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    for name in ("bos", "eos", "unk", "pad"):
        if name in specials:
            tok_cfg[f"{name}_token"] = specials[name][1]
    if "tokenizer.chat_template" in meta:
        tok_cfg["chat_template"] = meta["tokenizer.chat_template"]
    gen_cfg = {"_from_model_config": True}
    for name in ("bos", "eos", "pad"):
        if name in specials:
            gen_cfg[f"{name}_token_id"] = specials[name][0]

    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    try:
        write_json(os.path.join(tmp, "config.json"), cfg)
        save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        write_json(os.path.join(tmp, "tokenizer.json"), tokenizer)
        write_json(os.path.join(tmp, "tokenizer_config.json"), tok_cfg)
        write_json(os.path.join(tmp, "generation_config.json"), gen_cfg)
        marker = {
            "gguf": os.path.basename(gguf_path),
            "gguf_sha256": gguf_sha,
            "converter_version": CONVERTER_VERSION,
            "converter_sha256": sha256_file(os.path.abspath(__file__)),
            "gguf_package": getattr(gguf, "__version__", None) or _dist_version("gguf"),
            "files": {f: sha256_file(os.path.join(tmp, f)) for f in OUTPUT_FILES},
        }
        write_json(os.path.join(tmp, MARKER), marker)
        for f in OUTPUT_FILES + [MARKER]:
            os.chmod(os.path.join(tmp, f), 0o644)
        os.chmod(tmp, 0o755)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {out_dir} in {time.time() - t0:.1f}s")


def _dist_version(name):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def replace_dir(tmp, out_dir):
    """Move the finished folder into place; an older one is moved aside first, then removed."""
    old = None
    if os.path.lexists(out_dir):
        old = f"{out_dir}.old-{os.getpid()}"
        os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def up_to_date(out_dir, gguf_sha):
    try:
        with open(os.path.join(out_dir, MARKER), encoding="utf-8") as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return False
    return (
        marker.get("gguf_sha256") == gguf_sha
        and marker.get("converter_version") == CONVERTER_VERSION
        and marker.get("converter_sha256") == sha256_file(os.path.abspath(__file__))
        and all(os.path.isfile(os.path.join(out_dir, f)) for f in OUTPUT_FILES)
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--force", action="store_true", help="convert even if the marker matches")
    args = ap.parse_args()
    gguf_sha = sha256_file(args.gguf)
    if not args.force and up_to_date(args.out, gguf_sha):
        log(f"{args.out} is up to date (gguf sha256 {gguf_sha[:16]}…, converter v{CONVERTER_VERSION})")
        return
    convert(args.gguf, args.out, gguf_sha)


if __name__ == "__main__":
    main()
