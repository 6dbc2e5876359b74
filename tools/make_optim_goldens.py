#!/usr/bin/env python3
"""Golden fixture for scotd's optimizer: 20 steps of PyTorch AdamW + HF schedule + clipping.

What it makes
-------------
A tiny RANDOM Qwen2ForCausalLM (float32, eager attention, seeded, weights N(0, 0.1))
trained for 20 steps on one fixed batch by the reference implementations themselves:

    loss = cross_entropy(logits, targets, ignore_index=-100)   (mean over supervised)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm=2.0)
    optimizer.step()        torch.optim.AdamW, two param groups (decay / no decay)
    scheduler.step()        transformers' get_cosine_with_min_lr_schedule_with_warmup

Choices that keep the comparison meaningful
- rope_theta 100, not Qwen's 1e6. The k_proj bias adds the same vector to every key;
  attention is blind to it except through RoPE's rotation, and with theta 1e6 the
  slowest rotary pair turns by ~3e-4 rad over 9 positions, so those bias components
  get gradients that are mostly rounding noise. AdamW normalises every gradient to a
  step of about lr, noise included, so float32 training then lands 4e-4 (relative)
  away from the same training in float64, and no two float32 implementations could
  agree to 1e-5. With theta 100 every rotary pair turns and float32 stays within
  ~1e-6 of float64.
- max_norm 2.0: the gradient norm falls from ~4.2 to ~1.5 over the 20 steps, so
  clipping acts in the first steps and not in the last ones; both paths are compared.

The decay / no-decay split follows scotd's rule (scotd::optim::default_decay): no
weight decay on norms, biases and embeddings. The split is written out so the Rust
test can check that its rule picks the same parameters.

Files written to --out:
    config.json, model.safetensors   the initial model, as save_pretrained writes it
    inputs.json      {"input_ids", "targets"}: B x T ints, targets already shifted,
                     -100 = ignored
    expected.safetensors   "param.<name>": every parameter after the 20 steps (f32)
    expected.json    "settings": the hyperparameters above; "decayed": the names in
                     the decay group; per step (0-based): "lrs" (the learning rate the
                     step used), "losses" (before the step), "grad_norms" (before
                     clipping)

    adamw_alone.safetensors   AdamW by itself (same betas, eps, weight decay) on one
                     tensor: "start" [N], "grads" [S, N], "lrs" [S], "final" [N], the
                     tensor after S steps with those gradients and learning rates

It also runs the same training in float64 and prints how far the float32 result is
from it: the rounding noise the 20 steps amplify, which bounds how closely any other
float32 implementation can be expected to agree.

Rerun (from the repository root; CPU only, a few seconds):

    python tools/make_optim_goldens.py --out tests/fixtures/optim

with the versions pinned in tools/requirements-goldens.txt. The Rust test
(tests/optim.rs) only reads the committed output.
"""

import argparse
import json
import math
import os
import shutil

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file
from transformers import Qwen2Config, Qwen2ForCausalLM
from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

IGNORE = -100
ROPE_THETA = 100.0
SETTINGS = {
    "peak_lr": 3e-3,
    "warmup_steps": 3,
    "total_steps": 20,
    "min_lr_ratio": 0.1,
    "beta1": 0.9,
    "beta2": 0.95,
    "eps": 1e-8,
    "weight_decay": 0.1,
    "max_norm": 2.0,
}


def decays(name):
    """scotd's default_decay: no decay on norms, biases and embeddings."""
    parts = name.split(".")
    return not (parts[-1] == "bias" or "embed_tokens" in parts
                or any(p.endswith("norm") for p in parts))


def build_model(seed):
    config = Qwen2Config(
        vocab_size=53,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_act="silu",
        max_position_embeddings=32,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        tie_word_embeddings=True,
        use_sliding_window=False,
        attention_dropout=0.0,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    torch.manual_seed(seed)
    config._attn_implementation = "eager"
    model = Qwen2ForCausalLM(config).to(torch.float32)
    model.config._attn_implementation = "eager"
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):  # RMSNorm gains: 1.0 +- 0.1
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:  # biases, embeddings and projection weights: std 0.1
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    model.eval()  # no dropout (it is 0 anyway)
    assert model.lm_head.weight is model.model.embed_tokens.weight, "weights not tied"
    return model


def fixed_batch(vocab, B, T, ignored, seed):
    gen = torch.Generator().manual_seed(seed)
    toks = torch.randint(0, vocab, (B, T + 1), generator=gen)
    input_ids = toks[:, :T].clone()
    targets = toks[:, 1:].clone()
    for b, t in ignored:
        targets[b, t] = IGNORE
    return input_ids, targets


def train(model, input_ids, targets, s):
    """The 20 reference steps; returns per-step lrs, losses and grad norms."""
    params = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in params if decays(n)], "weight_decay": s["weight_decay"]},
        {"params": [p for n, p in params if not decays(n)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=s["peak_lr"], betas=(s["beta1"], s["beta2"]),
                                  eps=s["eps"], foreach=False)
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, s["warmup_steps"], s["total_steps"], min_lr_rate=s["min_lr_ratio"])
    lrs, losses, norms = [], [], []
    for _ in range(s["total_steps"]):
        optimizer.zero_grad(set_to_none=True)
        logits = model(input_ids=input_ids, use_cache=False).logits
        V = logits.shape[-1]
        loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=IGNORE)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), s["max_norm"])
        lrs.append(scheduler.get_last_lr()[0])
        assert all(g["lr"] == lrs[-1] for g in optimizer.param_groups)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        norms.append(norm.item())
    return lrs, losses, norms


def expected_lr(step, s):
    """The schedule written out independently: LambdaLR gives update step+1 the factor
    of `step`, so the very first update runs at lr 0."""
    w, n, r = s["warmup_steps"], s["total_steps"], s["min_lr_ratio"]
    if step < w:
        return s["peak_lr"] * step / max(1, w)
    progress = (step - w) / max(1, n - w)
    return s["peak_lr"] * (r + (1 - r) * 0.5 * (1 + math.cos(math.pi * progress)))


def optimizer_alone(seed):
    """AdamW by itself on given gradients, so nothing but the update is compared: one
    tensor, gradients spanning 1e-7..10 in size (some exactly 0), decay on, and
    learning rates that are exact in f32 (scotd passes lr as f32)."""
    gen = torch.Generator().manual_seed(seed)
    n, steps = 1000, 6
    start = torch.randn(n, generator=gen)
    scales = 10.0 ** (torch.rand(steps, n, generator=gen) * 8 - 7)
    grads = torch.randn(steps, n, generator=gen) * scales
    grads[:, :10] = 0.0
    lrs = torch.tensor([0.0, 1e-2, 3e-2, 2e-2, 1e-3, 5e-3], dtype=torch.float32)
    p = torch.nn.Parameter(start.clone())
    s = SETTINGS
    optimizer = torch.optim.AdamW([p], lr=0.0, betas=(s["beta1"], s["beta2"]), eps=s["eps"],
                                  weight_decay=s["weight_decay"], foreach=False)
    for step in range(steps):
        p.grad = grads[step].clone()
        optimizer.param_groups[0]["lr"] = lrs[step].item()
        optimizer.step()
    return {"start": start, "grads": grads, "lrs": lrs, "final": p.detach().clone()}


def save(out, start, input_ids, targets, final, lrs, losses, norms):
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    start.save_pretrained(out, safe_serialization=True)
    os.remove(os.path.join(out, "generation_config.json"))  # not read by scotd
    with open(os.path.join(out, "inputs.json"), "w") as f:
        json.dump({"input_ids": input_ids.tolist(), "targets": targets.tolist()}, f)
        f.write("\n")
    save_file({"param." + n: t.contiguous() for n, t in final.items()},
              os.path.join(out, "expected.safetensors"), metadata={"format": "pt"})
    save_file(optimizer_alone(seed=55), os.path.join(out, "adamw_alone.safetensors"),
              metadata={"format": "pt"})
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({
            "settings": SETTINGS,
            "decayed": [n for n in final if decays(n)],
            "lrs": lrs,
            "losses": losses,
            "grad_norms": norms,
        }, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures/optim")
    args = ap.parse_args()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(1)  # reproducible CPU reductions
    torch.use_deterministic_algorithms(True)

    start = build_model(seed=4004)  # saved as it is: the initial weights
    model = build_model(seed=4004)
    model_f64 = build_model(seed=4004).to(torch.float64)
    initial = {n: p.detach().clone() for n, p in start.named_parameters()}
    input_ids, targets = fixed_batch(model.config.vocab_size, 2, 9,
                                     ignored=[(0, 0), (0, 1), (1, 4)], seed=44)
    lrs, losses, norms = train(model, input_ids, targets, SETTINGS)
    final = {n: p.detach().clone() for n, p in model.named_parameters()}

    for step, lr in enumerate(lrs):
        assert abs(lr - expected_lr(step, SETTINGS)) <= 1e-15, (step, lr)
    assert any(n > SETTINGS["max_norm"] for n in norms), "clipping never triggered"
    assert any(n < SETTINGS["max_norm"] for n in norms), "clipping always triggered"

    _, losses64, _ = train(model_f64, input_ids, targets, SETTINGS)
    worst = 0.0
    for n, p in model_f64.named_parameters():
        scale = final[n].abs().max().item()
        worst = max(worst, (p.detach() - final[n].double()).abs().max().item() / scale)
    moved = max((final[n] - initial[n]).abs().max().item() / initial[n].abs().max().item()
                for n in final)

    save(args.out, start, input_ids, targets, final, lrs, losses, norms)
    print(f"losses {losses[0]:.4f} -> {losses[-1]:.4f}; grad norms "
          f"{', '.join(f'{x:.2f}' for x in norms)}")
    print(f"largest change of a parameter over training: {moved:.3f} of its tensor's max |value|")
    print(f"float32 vs float64 training: final params max relative error {worst:.2e}, "
          f"last loss {abs(losses[-1] - losses64[-1]):.2e}")
    print(f"versions: torch {torch.__version__}, transformers {transformers.__version__}")


if __name__ == "__main__":
    main()
