#!/usr/bin/env python3
"""Expected lm-evaluation-harness gsm8k scores of committed model outputs.

Applies the gsm8k task's settings (lm_eval/tasks/gsm8k/gsm8k.yaml), written here as
data, with Python's `re`, the way lm-eval's RegexFilter and exact_match apply them:
- strict-match: regex "#### (\\-?[0-9\\.\\,]+)", findall, the first match;
- flexible-extract: regex "(-?[$0-9.,]{2,})|(-?[0-9]+)", findall, the last match
  (group_select -1), the first non-empty group of it;
  each stripped, "[invalid]" when nothing matches;
- exact_match: regexes_to_ignore [",", "\\$", "(?s).*#### ", "\\.$"] removed in order
  from prediction and reference with re.sub, ignore_case (lower), no punctuation removal.

Usage: tools/lm_eval_gsm8k_golden.py tests/fixtures/lm_eval/gsm8k_outputs.jsonl \
           tests/fixtures/lm_eval/gsm8k_golden.json \
           [tests/fixtures/data/gsm8k.jsonl tests/fixtures/lm_eval/gsm8k_prompt.txt]
With the last two: also the 5-shot prompt of the sixth question of the GSM8K file, the
first five its examples, as lm-eval renders it ("Question: {q}\nAnswer: {a}" blocks,
target delimiter " ", few-shot delimiter "\n\n", the question's "Question: {q}\nAnswer:").
The Rust test tests/lm_eval.rs checks src/eval/lm_eval.rs against the golden file.
"""
import json
import re
import sys

SETTINGS = {
    "strict_match": {"pattern": r"#### (\-?[0-9\.\,]+)", "group_select": 0},
    "flexible_extract": {"pattern": r"(-?[$0-9.,]{2,})|(-?[0-9]+)", "group_select": -1},
    "fallback": "[invalid]",
    "regexes_to_ignore": [",", r"\$", r"(?s).*#### ", r"\.$"],
    "ignore_case": True,
    "ignore_punctuation": False,
}


def apply_filter(text, setting):
    matches = re.compile(setting["pattern"]).findall(text)
    if not matches:
        return SETTINGS["fallback"]
    match = matches[setting["group_select"]]
    if isinstance(match, tuple):
        groups = [g for g in match if g]
        match = groups[0] if groups else SETTINGS["fallback"]
    return match.strip()


def normalise(text):
    for pattern in SETTINGS["regexes_to_ignore"]:
        text = re.sub(pattern, "", text)
    if SETTINGS["ignore_case"]:
        text = text.lower()
    return text


def write_prompt(gsm8k, out):
    with open(gsm8k, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    shots = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in rows[:5]]
    prompt = "\n\n".join(shots + [f"Question: {rows[5]['question']}\nAnswer:"])
    with open(out, "w", encoding="utf-8") as f:
        f.write(prompt)


def main(fixture, golden, gsm8k=None, prompt=None):
    if gsm8k:
        write_prompt(gsm8k, prompt)
    cases = []
    with open(fixture, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            strict = apply_filter(row["output"], SETTINGS["strict_match"])
            flexible = apply_filter(row["output"], SETTINGS["flexible_extract"])
            reference = normalise(row["reference"])
            cases.append({
                "output": row["output"],
                "reference": row["reference"],
                "strict_match": strict,
                "strict_exact_match": normalise(strict) == reference,
                "flexible_extract": flexible,
                "flexible_exact_match": normalise(flexible) == reference,
            })
    with open(golden, "w", encoding="utf-8") as f:
        json.dump({"settings": SETTINGS, "cases": cases}, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
