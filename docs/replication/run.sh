#!/usr/bin/env bash
# Reproduces every number of docs/replication/README.md: the seed experiment (base, v1,
# v2) on SmolLM2-135M-Instruct, end to end with scotd's own commands.
#
#   docs/replication/run.sh                  # run folder: runs/seed-replication
#   RUN=/big/disk/seed QUESTIONS=1319 docs/replication/run.sh
#   PUBLISH=1 docs/replication/run.sh        # then copy the results into docs/replication
#
# Every step is skipped or resumed when its output is there (the trainer resumes from
# its last checkpoint, scotd eval from answers.jsonl and chat.jsonl), so after an
# interruption the same command carries on. Needs ../shared/data (GSM8K and the
# Alpaca-style chat rows) or DATA pointing at a folder of the same layout. About three
# hours on two CPU cores; on a GPU build add DEVICE=cuda.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RUN="${RUN:-$REPO/runs/seed-replication}"
DATA="${DATA:-$REPO/../shared/data}"
QUESTIONS="${QUESTIONS:-500}"     # GSM8K test questions evaluated (the first N)
DEVICE="${DEVICE:-cpu}"
SCOTD="${SCOTD:-$REPO/target/release/scotd}"

[ -x "$SCOTD" ] || (cd "$REPO" && cargo build --release --bin scotd)
eval "$("$REPO/tools/fetch-test-models.sh" --print-env)"
mkdir -p "$RUN"
cd "$RUN"
ln -sfn "$SCOTD_SMOLLM2_DIR" base

# The data: 101 chat rows held out (every 8th), GSM8K's first 2,032 training solutions
# as traces (2,000 to train on, 32 held out for the trainer's held-out loss).
[ -f chat-train.json ] || python3 "$REPO/tools/split_rows.py" --every 8 \
    "$DATA/chat/alpaca_style_805.json" --train chat-train.json --held-out chat-held-out.json
[ -f gsm8k-solution-traces.jsonl ] || "$SCOTD" solution-traces \
    --data "$DATA/gsm8k/train.jsonl" --tokenizer base --limit 2032 \
    --out gsm8k-solution-traces.jsonl
[ -f gsm8k-test.jsonl ] || cp "$DATA/gsm8k/test.jsonl" gsm8k-test.jsonl

for v in v1 v2; do
    [ -d "$v/checkpoint-350" ] || "$SCOTD" train --config "$REPO/configs/seed-$v-smollm2.toml" \
        --model "$SCOTD_SMOLLM2_DIR" --device "$DEVICE" 2>&1 | tee -a "train-$v.log"
done

# One greedy evaluation per model: the same prompt (the question alone, the model's own
# chat template), 512 new tokens, the held-out chat rows, the original's five prompts.
for model in base v1/checkpoint-350 v2/checkpoint-350; do
    name="${model%%/*}"
    "$SCOTD" eval --model "$model" --data gsm8k-test.jsonl --limit "$QUESTIONS" \
        --out "eval/$name" --max-new-tokens 512 --batch-size 32 \
        --chat chat-held-out.json --chat-max-new-tokens 256 \
        --probes "$REPO/docs/replication/prompts.txt"
done
"$SCOTD" eval --compare eval/base eval/v1 eval/v2 --out compare.md
"$SCOTD" plot v1/metrics.jsonl v2/metrics.jsonl --label v1 --label v2 --out curves.png
echo "done: $RUN/compare.md, $RUN/curves.png, $RUN/eval/{base,v1,v2}"

# PUBLISH=1: copy what the write-up commits into docs/replication (no checkpoints).
if [ "${PUBLISH:-0}" = 1 ]; then
    DOCS="$REPO/docs/replication"
    for name in base v1 v2; do
        mkdir -p "$DOCS/$name"
        cp "eval/$name"/{answers.jsonl,chat.jsonl,report.json,report.md,run.json} "$DOCS/$name/"
    done
    cp compare.md curves.png "$DOCS/"
    cp v1/metrics.jsonl "$DOCS/v1-metrics.jsonl"
    cp v2/metrics.jsonl "$DOCS/v2-metrics.jsonl"
fi
