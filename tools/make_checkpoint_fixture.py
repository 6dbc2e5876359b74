#!/usr/bin/env python3
"""The checkpoint layout transformers writes, as a JSON fixture for tests/checkpoint.rs.

scotd's save_checkpoint must write folders that transformers loads as if it had saved
them itself. This script asks transformers: it builds tiny random models with the same
shapes as the test configs in tests/checkpoint.rs, saves them with save_pretrained, and
records what landed on disk:

    qwen2_tied_{float32,bfloat16}    Qwen2ForCausalLM, tied embeddings, q/k/v biases
    llama_untied_{float32,bfloat16}  LlamaForCausalLM, untied lm_head, no biases
    qwen2_tokens_float32             the Qwen2 shape with the special token ids of the
                                     tokenizer fixture (tests/fixtures/tokenizer): eos
                                     in config.json, the eos list in generation_config
                                     .json, plus the tokenizer files transformers writes

For each case, tests/fixtures/checkpoint/hf_layout.json holds:
    tensors            {name: {"shape", "dtype"}} from model.safetensors' header
    config             the values of CONFIG_KEYS that config.json holds (null included)
    config_keys        every key of config.json (for reference; extra keys are allowed)
    generation_config  generation_config.json without transformers_version
    tokenizer_files    (qwen2_tokens only) the files tokenizer.save_pretrained wrote

Only JSON is committed; the Rust tests never run Python. Rerun from the repository root
(CPU, a few seconds) with torch and transformers (tools/requirements-goldens.txt):

    python tools/make_checkpoint_fixture.py --out tests/fixtures/checkpoint/hf_layout.json
"""

import argparse
import json
import os
import struct
import tempfile

import torch
import transformers
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

TOKENIZER_FIXTURE = "tests/fixtures/tokenizer"

# The config.json keys a loader depends on: shapes, numerics, the architecture, the
# dtype key (transformers 5 writes "dtype", 4.x wrote "torch_dtype") and special ids.
CONFIG_KEYS = [
    "architectures",
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_parameters",
    "hidden_act",
    "tie_word_embeddings",
    "attention_bias",
    "mlp_bias",
    "use_sliding_window",
    "dtype",
    "torch_dtype",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
]


def qwen2_config(vocab_size=101, bos=None, eos=None, pad=None):
    """tests/checkpoint.rs `qwen2_tied()` (and tests/fixtures/golden/qwen2_tied)."""
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=48,
        intermediate_size=88,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        hidden_act="silu",
        max_position_embeddings=64,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        tie_word_embeddings=True,
        use_sliding_window=False,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
    )


def llama_config():
    """tests/checkpoint.rs `llama_untied()` (and tests/fixtures/golden/llama_untied)."""
    return LlamaConfig(
        vocab_size=103,
        hidden_size=56,
        intermediate_size=90,
        num_hidden_layers=2,
        num_attention_heads=7,
        num_key_value_heads=1,
        head_dim=8,
        hidden_act="silu",
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )


def safetensors_header(path):
    """{name: {"shape", "dtype"}} from the file's JSON header, read directly."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    assert header.get("__metadata__", {}).get("format") == "pt", header.get("__metadata__")
    return {
        name: {"shape": info["shape"], "dtype": info["dtype"]}
        for name, info in sorted(header.items())
        if name != "__metadata__"
    }


def read_json(path):
    with open(path) as f:
        return json.load(f)


def record(model, dtype, tokenizer=None):
    """Saves the model (and tokenizer) as transformers does and describes the folder."""
    torch.manual_seed(0)
    model = model.to(dtype)
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        out = {
            "tensors": safetensors_header(os.path.join(d, "model.safetensors")),
        }
        config = read_json(os.path.join(d, "config.json"))
        out["config"] = {k: config[k] for k in CONFIG_KEYS if k in config}
        out["config_keys"] = sorted(config)
        generation = read_json(os.path.join(d, "generation_config.json"))
        generation.pop("transformers_version", None)
        out["generation_config"] = generation
        if tokenizer is not None:
            before = set(os.listdir(d))
            tokenizer.save_pretrained(d)
            out["tokenizer_files"] = sorted(set(os.listdir(d)) - before)
    return out


def tokens_case():
    """The Qwen2 shape carrying the tokenizer fixture's ids, as a hub Qwen2.5 folder
    does: one eos id in config.json, the whole eos list in generation_config.json."""
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_FIXTURE)
    eos_list = GenerationConfig.from_pretrained(TOKENIZER_FIXTURE).eos_token_id
    config = qwen2_config(
        vocab_size=len(tokenizer),
        bos=tokenizer.bos_token_id,
        eos=eos_list[0],
        pad=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_list,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model, tokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="tests/fixtures/checkpoint/hf_layout.json")
    args = parser.parse_args()

    cases = {}
    for dtype_name, dtype in [("float32", torch.float32), ("bfloat16", torch.bfloat16)]:
        cases[f"qwen2_tied_{dtype_name}"] = record(Qwen2ForCausalLM(qwen2_config()), dtype)
        cases[f"llama_untied_{dtype_name}"] = record(LlamaForCausalLM(llama_config()), dtype)
    model, tokenizer = tokens_case()
    cases["qwen2_tokens_float32"] = record(model, torch.float32, tokenizer)

    fixture = {
        "made_by": "tools/make_checkpoint_fixture.py",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "cases": cases,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(fixture, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {args.out}: {', '.join(cases)}")


if __name__ == "__main__":
    main()
