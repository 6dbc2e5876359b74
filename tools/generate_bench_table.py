#!/usr/bin/env python3
"""generate.md from the generate-scotd-NAME.json and generate-torch-NAME.json files of a
gpu-check run (`scotd bench generate` beside tools/bench_generate.py at each shape): the
decode rates side by side, the fraction of the memory roofline, and what the measured
batched rates mean for the distillation's sampling job (GSM8K train, 7,473 questions, a
256-token prompt and ~300 new tokens per trace, 1 and 4 traces per question).

    python tools/generate_bench_table.py OUT_DIR
"""

import glob
import json
import math
import os
import sys

QUESTIONS = 7473
JOB_NEW_TOKENS = 300


def load(out, engine, name):
    path = os.path.join(out, f"generate-{engine}-{name}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def percent(report):
    fraction = report and report["roofline"]["fraction"]
    return "-" if fraction is None else f"{100 * fraction:.0f}%"


def shape_of(report):
    params = report["params"]
    size = f"{params / 1e9:.2f}B" if params >= 1e9 else f"{params / 1e6:.1f}M"
    return f"{size}, {report['batch']} × {report['prompt_len']} + {report['new_tokens']}"


def rate_row(name, ours, peer):
    any_report = ours or peer
    get = lambda r, key: r[key] if r else None  # noqa: E731
    ratio = (f"{ours['decode_tokens_per_s'] / peer['decode_tokens_per_s']:.2f}"
             if ours and peer else "-")
    return (f"| {name} | {shape_of(any_report)} | {fmt(get(ours, 'decode_tokens_per_s'), '.0f')} "
            f"| {fmt(get(peer, 'decode_tokens_per_s'), '.0f')} | {ratio} "
            f"| {fmt(get(ours, 'decode_ms_per_step'), '.2f')} | {fmt(get(peer, 'decode_ms_per_step'), '.2f')} "
            f"| {percent(ours)} | {percent(peer)} "
            f"| {fmt(get(ours, 'prefill_ms'), '.0f')} | {fmt(get(peer, 'prefill_ms'), '.0f')} |")


def job_hours(report, traces):
    """Hours to sample `traces` greedy traces of every question at the report's batch:
    a prefill and JOB_NEW_TOKENS - 1 decode steps per batch, at the measured times (its
    steps attend over a longer mean context than the job's, so this errs long)."""
    batches = math.ceil(QUESTIONS * traces / report["batch"])
    batch_ms = report["prefill_ms"] + (JOB_NEW_TOKENS - 1) * report["decode_ms_per_step"]
    return batches * batch_ms / 3.6e6


def job_row(name, engine, report):
    note = "" if report["prompt_len"] == 256 else f"prefill measured at {report['prompt_len']} tokens"
    return (f"| {name} | {engine} | {report['batch']} | {job_hours(report, 1):.2f} h "
            f"| {job_hours(report, 4):.2f} h | {note} |")


def main(out):
    names = sorted({os.path.basename(p)[len("generate-"):-len(".json")].split("-", 1)[1]
                    for p in glob.glob(os.path.join(out, "generate-*-*.json"))})
    rows = ["| run | params, batch × prompt + new | scotd tok/s | PyTorch tok/s | ratio "
            "| scotd ms/step | PyTorch ms/step | scotd roofline | PyTorch roofline "
            "| scotd prefill ms | PyTorch prefill ms |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    jobs = ["| run | engine | batch | 1 trace / question | 4 traces / question | note |",
            "|---|---|--:|--:|--:|---|"]
    engines = []
    for name in names:
        ours, peer = load(out, "scotd", name), load(out, "torch", name)
        rows.append(rate_row(name, ours, peer))
        for label, report in (("scotd", ours), ("PyTorch", peer)):
            if report:
                engines.append(f"{label}: {report['engine']} on {report['device']}")
                if report["batch"] > 1:
                    jobs.append(job_row(name, label, report))
    text = ("Greedy generation: `scotd bench generate` vs tools/bench_generate.py (transformers "
            "`generate`, static cache)\n\n"
            "Decode tokens/s over the steps after the prefill, all sequences together; roofline = "
            "the bytes a decode step must read (weights + K/V at the mean context) at the measured "
            "device copy bandwidth, over the measured step time.\n\n"
            + "\n".join(rows) + "\n\n"
            f"GSM8K-train sampling at the measured batched rates ({QUESTIONS:,} questions, 256-token "
            f"prompts, {JOB_NEW_TOKENS} new tokens a trace; prefill + {JOB_NEW_TOKENS - 1} steps per "
            "batch):\n\n" + "\n".join(jobs) + "\n\n"
            + "\n".join(f"- {e}" for e in sorted(set(engines))) + "\n")
    with open(os.path.join(out, "generate.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main(sys.argv[1])
