#!/usr/bin/env python3
"""Split a JSON array (or JSONL) of rows into a training part and a held-out part:
every Nth row (indices 0, N, 2N, ...) is held out, so both parts span the whole file.

    python3 tools/split_rows.py --every 8 ../shared/data/chat/alpaca_style_805.json \
        --train chat-train.json --held-out chat-held-out.json

Both outputs are written in the input's form (JSON array or JSONL), atomically."""
import argparse
import json
import os
import sys


def read_rows(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.lstrip().startswith("["):
        return json.loads(text), "array"
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{number}: not valid JSON: {e}")
    return rows, "jsonl"


def write_rows(path, rows, form):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        if form == "array":
            json.dump(rows, f, ensure_ascii=False, indent=1)
        else:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("--every", type=int, default=8, help="hold out every Nth row")
    parser.add_argument("--train", required=True)
    parser.add_argument("--held-out", required=True)
    args = parser.parse_args()
    if args.every < 2:
        sys.exit("--every must be at least 2")
    rows, form = read_rows(args.input)
    held_out = rows[:: args.every]
    train = [row for i, row in enumerate(rows) if i % args.every != 0]
    write_rows(args.train, train, form)
    write_rows(args.held_out, held_out, form)
    print(f"{len(train)} training rows -> {args.train}, {len(held_out)} held out -> {args.held_out}")


if __name__ == "__main__":
    main()
