#!/usr/bin/env python3
"""train.md from the train-scotd-BxT.json and train-torch-BxT.json files of a gpu-check
run: `scotd bench train` beside tools/bench_torch.py at each shape.

    python tools/train_bench_table.py OUT_DIR
"""

import glob
import json
import os
import sys


def gib(report):
    value = report.get("peak_memory_gib")
    return "-" if value is None else f"{value:.1f}"


def row(shape, ours, peer):
    ratio = f"{ours['tokens_per_s'] / peer['tokens_per_s']:.2f}" if peer else "-"
    peer_rate = f"{peer['tokens_per_s']:.0f}" if peer else "-"
    peer_mfu = f"{100 * peer['mfu']:.1f}%" if peer else "-"
    return (f"| {shape} | {ours['tokens_per_s']:.0f} | {peer_rate} | {ratio} | {100 * ours['mfu']:.1f}% "
            f"| {peer_mfu} | {gib(ours)} | {gib(peer)} |")


def main(out):
    rows = ["| batch x seq | scotd tok/s | PyTorch tok/s | ratio | scotd MFU | PyTorch MFU "
            "| scotd peak GiB | PyTorch peak GiB |",
            "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for path in sorted(glob.glob(os.path.join(out, "train-scotd-*.json"))):
        shape = os.path.basename(path)[len("train-scotd-"):-len(".json")]
        with open(path) as f:
            ours = json.load(f)
        peer_path = os.path.join(out, f"train-torch-{shape}.json")
        peer = None
        if os.path.exists(peer_path):
            with open(peer_path) as f:
                peer = json.load(f)
        rows.append(row(shape, ours, peer))
    text = ("Training step, Qwen2.5-0.5B shape: `scotd bench train` vs tools/bench_torch.py\n\n"
            + "\n".join(rows) + "\n")
    with open(os.path.join(out, "train.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main(sys.argv[1])
