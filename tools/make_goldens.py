#!/usr/bin/env python3
"""Golden fixtures for scotd's model parity tests, made by Hugging Face transformers.

What it makes
-------------
Tiny RANDOM Qwen2 / Llama models (float32, attn_implementation="eager", seeded),
built with transformers itself (the reference; nothing here reimplements the model),
and for each one a batch, the logits, the loss and the gradient of every parameter.
One folder per case under --out:

    qwen2_tied/     Qwen2ForCausalLM, tied embeddings, q/k/v biases, GQA 6:2,
                    plain causal batch B=2, T=11
    llama_untied/   LlamaForCausalLM, untied lm_head, no biases, GQA 7:1,
                    plain causal batch B=2, T=11
    qwen2_packed/   the qwen2_tied configuration (its own random weights) on a PACKED
                    batch B=2, T=13 with padding: block-diagonal causal 4D mask,
                    position ids restarting at 0 in each sequence

Each folder holds:
    config.json, model.safetensors (+ generation_config.json)
        exactly as model.save_pretrained(folder, safe_serialization=True) writes them
        (f32; tied models store no lm_head.weight)
    inputs.json
        {"input_ids", "position_ids", "segment_ids", "targets"}: B x T int lists;
        targets[b][t] is the label of the logits at position t (-100 = ignored)
    expected.safetensors
        "logits"        [B, T, V] f32
        "loss"          [] f32: cross_entropy(logits.view(-1, V), targets.view(-1),
                        ignore_index=-100), the mean over all supervised tokens
        "grad.<name>"   f32, for every (name, p) in model.named_parameters(), after
                        loss.backward() (tied: the embedding gradient includes the
                        lm_head contribution, listed once as model.embed_tokens.weight)

The attention mask given to the model is a 4D float additive mask [B, 1, T, T]:
0 where query i may see key j (j <= i and segment[i] == segment[j]), float32 min
elsewhere. transformers 5.x returns a 4D mask from create_causal_mask untouched
(masking_utils._preprocess_mask_arguments: "If the mask is already 4D, simply return
as-is") and eager attention adds it to the scores; the script asserts that every
attention layer receives that very tensor, and for the packed case that each
sequence's packed logits (and the gradients) equal those of running it alone.

Rerun (from the repository root; CPU only, takes a few seconds):

    python tools/make_goldens.py --out tests/fixtures/golden

with the versions pinned in tools/requirements-goldens.txt. The Rust tests never run
Python: they only read the committed fixtures.
"""

import argparse
import json
import os
import shutil

import numpy as np
import safetensors
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

IGNORE = -100
PAD_ID = 0
MASK_MIN = torch.finfo(torch.float32).min


# --------------------------------------------------------------------------- models

def qwen2_config():
    return Qwen2Config(
        vocab_size=101,
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
        attention_dropout=0.0,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )


def llama_config():
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
        attention_dropout=0.0,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )


def build_model(cls, config, seed):
    """Build the HF model and give it large random weights (seeded)."""
    torch.manual_seed(seed)
    config._attn_implementation = "eager"
    model = cls(config).to(torch.float32)
    model.config._attn_implementation = "eager"
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):  # RMSNorm gains: 1.0 +- 0.1
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):  # q/k/v biases: 0 +- 0.1
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:  # embeddings and projection weights: std 0.2
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    model.eval()  # no dropout (it is 0 anyway)
    if config.tie_word_embeddings:
        assert model.lm_head.weight is model.model.embed_tokens.weight, "weights not tied"
        assert "lm_head.weight" not in dict(model.named_parameters())
    else:
        assert model.lm_head.weight is not model.model.embed_tokens.weight
    return model


# --------------------------------------------------------------------------- batches

def plain_batch(vocab, B, T, ignored, seed):
    """One sequence per row, positions 0..T-1, next-token targets.

    Draws T+1 tokens per row so the last position also has a label; then sets the
    (row, t) pairs in `ignored` to -100.
    """
    gen = torch.Generator().manual_seed(seed)
    toks = torch.randint(0, vocab, (B, T + 1), generator=gen)
    input_ids = toks[:, :T].clone()
    targets = toks[:, 1:].clone()
    for b, t in ignored:
        targets[b, t] = IGNORE
    position_ids = torch.arange(T).unsqueeze(0).expand(B, T).clone()
    segment_ids = torch.zeros(B, T, dtype=torch.long)
    return input_ids, position_ids, segment_ids, targets


def packed_batch(vocab, rows, T, seed):
    """rows: per row, a list of (length, is_padding) segments filling T tokens.

    Real tokens are drawn from 1..vocab-1, padding tokens are PAD_ID. Positions restart
    at 0 in every segment (padding is its own segment). Targets: next token inside the
    segment, -100 at each segment's last token and at every padding token.
    """
    gen = torch.Generator().manual_seed(seed)
    B = len(rows)
    input_ids = torch.full((B, T), PAD_ID, dtype=torch.long)
    position_ids = torch.zeros(B, T, dtype=torch.long)
    segment_ids = torch.zeros(B, T, dtype=torch.long)
    targets = torch.full((B, T), IGNORE, dtype=torch.long)
    spans = []  # (b, start, length, is_padding)
    for b, segs in enumerate(rows):
        assert sum(n for n, _ in segs) == T
        start = 0
        for s, (n, is_pad) in enumerate(segs):
            sl = slice(start, start + n)
            if not is_pad:
                input_ids[b, sl] = torch.randint(1, vocab, (n,), generator=gen)
                targets[b, start:start + n - 1] = input_ids[b, start + 1:start + n]
            position_ids[b, sl] = torch.arange(n)
            segment_ids[b, sl] = s
            spans.append((b, start, n, is_pad))
            start += n
    return input_ids, position_ids, segment_ids, targets, spans


def block_causal_mask(segment_ids):
    """[B,1,T,T] additive f32 mask: 0 iff j <= i and seg[i] == seg[j], else f32 min."""
    B, T = segment_ids.shape
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    allowed = causal[None] & same
    mask = torch.zeros(B, 1, T, T, dtype=torch.float32)
    mask.masked_fill_(~allowed[:, None], MASK_MIN)
    return mask


# --------------------------------------------------------------------------- running

def decoder_layers(model):
    return model.model.layers


def forward(model, input_ids, position_ids, mask, check_mask_identity=True):
    """HF forward; asserts every attention layer receives `mask` itself, untouched."""
    seen = []

    def hook(module, args, kwargs):
        seen.append(kwargs.get("attention_mask"))

    handles = [l.self_attn.register_forward_pre_hook(hook, with_kwargs=True)
               for l in decoder_layers(model)]
    try:
        out = model(input_ids=input_ids, position_ids=position_ids,
                    attention_mask=mask, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    if check_mask_identity and mask is not None:
        assert len(seen) == len(decoder_layers(model)), seen
        for m in seen:
            assert m is mask, "attention layer did not receive our 4D mask as-is"
    return out.logits


def loss_of(logits, targets):
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=IGNORE)


def grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def run_case(model, input_ids, position_ids, segment_ids, targets):
    model.zero_grad(set_to_none=True)
    mask = block_causal_mask(segment_ids)
    logits = forward(model, input_ids, position_ids, mask)
    loss = loss_of(logits, targets)
    loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
        assert p.grad.abs().max() > 0, f"zero gradient for {n}"
    return mask, logits.detach(), loss.detach(), grads(model)


def close(a, b, atol, what):
    err = (a - b).abs().max().item()
    assert err <= atol, f"{what}: max abs diff {err:.3e} > {atol:.1e}"
    return err


def check_plain(model, input_ids, position_ids, logits):
    """Our 4D causal mask must match HF's own causal masking (no mask given)."""
    with torch.no_grad():
        ref = forward(model, input_ids, position_ids, None)
        ref2 = forward(model, input_ids, None, None)
    e1 = close(logits, ref, 1e-5, "4D causal mask vs HF built-in causal mask")
    e2 = close(logits, ref2, 1e-5, "explicit vs default position_ids")
    print(f"  check: vs HF built-in causal mask max|diff| {e1:.2e}, default positions {e2:.2e}")


def check_packed(model, input_ids, position_ids, segment_ids, targets, spans,
                 logits, loss, grads_packed):
    """Each packed sequence must behave exactly as if run alone."""
    n_sup = (targets != IGNORE).sum()
    worst = 0.0
    model.zero_grad(set_to_none=True)
    total = torch.zeros(())
    for b, start, n, is_pad in spans:
        ids = input_ids[b:b + 1, start:start + n]
        pos = torch.arange(n).unsqueeze(0)
        alone = forward(model, ids, pos, None)  # HF's own plain causal path
        worst = max(worst, close(logits[b, start:start + n], alone[0].detach(), 1e-5,
                                 f"packed vs alone, row {b} tokens {start}..{start + n}"))
        tgt = targets[b:b + 1, start:start + n]
        if (tgt != IGNORE).any():
            V = alone.shape[-1]
            s = F.cross_entropy(alone.reshape(-1, V), tgt.reshape(-1),
                                ignore_index=IGNORE, reduction="sum") / n_sup
            s.backward()
            total = total + s.detach()
    close(loss, total, 1e-6, "packed loss vs sum of per-sequence losses")
    gworst = 0.0
    for name, g in grads(model).items():
        gworst = max(gworst, close(grads_packed[name], g, 1e-5, f"packed vs alone grad {name}"))
    print(f"  check: packed vs each sequence alone: logits max|diff| {worst:.2e}, "
          f"grads max|diff| {gworst:.2e}")

    # HF's own packed-sequence detection from position_ids (no mask given) must agree.
    with torch.no_grad():
        hf_packed = forward(model, input_ids, position_ids, None)
    e = close(logits, hf_packed, 1e-5, "our 4D mask vs HF packed detection from position_ids")
    # Negative control: a plain causal 4D mask (sequences see each other) must differ.
    with torch.no_grad():
        leaky = forward(model, input_ids, position_ids,
                        block_causal_mask(torch.zeros_like(segment_ids)))
    d = (logits - leaky).abs().max().item()
    assert d > 1e-2, f"mask seems ignored: plain-causal mask changes logits by only {d}"
    print(f"  check: vs HF packed detection {e:.2e}; plain causal mask would differ by {d:.2f}")


# --------------------------------------------------------------------------- saving

def save_case(folder, model, input_ids, position_ids, segment_ids, targets,
              logits, loss, grad):
    if os.path.exists(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    model.save_pretrained(folder, safe_serialization=True)
    with open(os.path.join(folder, "inputs.json"), "w") as f:
        json.dump({
            "input_ids": input_ids.tolist(),
            "position_ids": position_ids.tolist(),
            "segment_ids": segment_ids.tolist(),
            "targets": targets.tolist(),
        }, f)
        f.write("\n")
    tensors = {"logits": logits.contiguous(), "loss": loss.reshape(()).contiguous()}
    for name, g in grad.items():
        tensors["grad." + name] = g.contiguous()
    for t in tensors.values():
        assert t.dtype == torch.float32
    save_file(tensors, os.path.join(folder, "expected.safetensors"),
              metadata={"format": "pt"})  # one key: safetensors orders metadata at random

    # Read back what was written and check it.
    from safetensors import safe_open
    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        for k in keys:
            assert f.get_tensor(k).dtype == torch.float32, k
    params = dict(model.named_parameters())
    assert keys == set(params), (sorted(keys ^ set(params)))
    if model.config.tie_word_embeddings:
        assert "lm_head.weight" not in keys

    # The saved folder alone must reproduce the logits (config.json + model.safetensors).
    reloaded = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager",
                                                    dtype=torch.float32).eval()
    with torch.no_grad():
        again = reloaded(input_ids=input_ids, position_ids=position_ids,
                         attention_mask=block_causal_mask(segment_ids), use_cache=False).logits
    close(again, logits, 0.0, "logits of the reloaded saved model")


def summarize(name, model, input_ids, logits, loss, targets):
    n_sup = int((targets != IGNORE).sum())
    print(f"[{name}] {type(model).__name__}: input_ids {list(input_ids.shape)}, "
          f"logits {list(logits.shape)}, supervised {n_sup}, loss {loss.item():.6f}, "
          f"max|logit| {logits.abs().max().item():.3f}, logit std {logits.std().item():.3f}, "
          f"params {sum(p.numel() for p in model.parameters())}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures/golden")
    args = ap.parse_args()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(1)  # reproducible CPU reductions
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)

    # 1. qwen2_tied
    name = "qwen2_tied"
    model = build_model(Qwen2ForCausalLM, qwen2_config(), seed=1001)
    batch = plain_batch(model.config.vocab_size, 2, 11, ignored=[(0, 0), (0, 1), (1, 6)], seed=11)
    mask, logits, loss, grad = run_case(model, *batch)
    summarize(name, model, batch[0], logits, loss, batch[3])
    check_plain(model, batch[0], batch[1], logits)
    save_case(os.path.join(args.out, name), model, *batch, logits, loss, grad)

    # 2. llama_untied
    name = "llama_untied"
    model = build_model(LlamaForCausalLM, llama_config(), seed=2002)
    batch = plain_batch(model.config.vocab_size, 2, 11, ignored=[(0, 3), (1, 0), (1, 10)], seed=22)
    mask, logits, loss, grad = run_case(model, *batch)
    summarize(name, model, batch[0], logits, loss, batch[3])
    check_plain(model, batch[0], batch[1], logits)
    save_case(os.path.join(args.out, name), model, *batch, logits, loss, grad)

    # 3. qwen2_packed
    name = "qwen2_packed"
    model = build_model(Qwen2ForCausalLM, qwen2_config(), seed=3003)
    rows = [[(6, False), (7, False)],
            [(5, False), (4, False), (4, True)]]
    input_ids, position_ids, segment_ids, targets, spans = packed_batch(
        model.config.vocab_size, rows, 13, seed=33)
    assert segment_ids.tolist() == [[0] * 6 + [1] * 7, [0] * 5 + [1] * 4 + [2] * 4]
    assert position_ids.tolist() == [list(range(6)) + list(range(7)),
                                     list(range(5)) + list(range(4)) + list(range(4))]
    batch = (input_ids, position_ids, segment_ids, targets)
    mask, logits, loss, grad = run_case(model, *batch)
    summarize(name, model, input_ids, logits, loss, targets)
    check_packed(model, *batch, spans, logits, loss, grad)
    save_case(os.path.join(args.out, name), model, *batch, logits, loss, grad)

    print(f"versions: torch {torch.__version__}, transformers {transformers.__version__}, "
          f"safetensors {safetensors.__version__}, numpy {np.__version__}")


if __name__ == "__main__":
    main()
