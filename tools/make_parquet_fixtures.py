#!/usr/bin/env python3
"""Writes the parquet fixtures of tests/fixtures/data/ from their JSONL twins, as the
Hugging Face Hub ships datasets (pyarrow, snappy): gsm8k, alpaca and traces with the same
rows, one GSM8K file without its `answer` column, and a corrupt (truncated) one.
Needs pyarrow (`pip install pyarrow`). Run from the repository root."""
import json
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq

DATA = pathlib.Path("tests/fixtures/data")


def rows(name):
    lines = (DATA / name).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def write(rows_, name):
    pq.write_table(pa.Table.from_pylist(rows_), DATA / name, compression="snappy")


write(rows("gsm8k.jsonl"), "gsm8k.parquet")
write(rows("alpaca.jsonl"), "alpaca.parquet")
# A parquet column holds one type: the ids (strings and integers) all as strings.
write([{**r, "id": str(r["id"])} for r in rows("traces.jsonl")], "traces.parquet")
write([{"question": r["question"]} for r in rows("gsm8k.jsonl")], "gsm8k_no_answer.parquet")
whole = (DATA / "gsm8k.parquet").read_bytes()
(DATA / "corrupt.parquet").write_bytes(whole[: len(whole) // 2])
