#!/usr/bin/env python3
"""Aggregate greedy tokens/s of `scotd serve` under concurrent clients beside
`scotd generate --batch-size B` on the same prompts, measured in the same run and
repeated (the cores may be shared: the spread is printed). Standard library only.

generate's time is its wall time less its start-up (loading the model), measured as
the wall time of a one-token run of one prompt; serve's is from the first request sent
to the last reply received, the server started and loaded beforehand.

    tools/bench_serve.py --model DIR [--clients 32] [--max-tokens 64] [--repeats 3]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SCOTD = os.path.join(HERE, "..", "target", "release", "scotd")


def prompts(n):
    return [f"Explain in a few sentences why {i + 2} is {'even' if i % 2 == 0 else 'odd'}." for i in range(n)]


def run_generate(model, texts, max_tokens, batch):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "prompts.jsonl")
        with open(path, "w") as f:
            f.writelines(json.dumps({"prompt": t}) + "\n" for t in texts)
        out = os.path.join(tmp, "out.jsonl")
        start = time.perf_counter()
        subprocess.run([SCOTD, "generate", "--model", model, "--batch-size", str(batch),
                        "--max-new-tokens", str(max_tokens), "--prompts-file", path, "--out", out],
                       check=True, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        with open(out) as f:
            tokens = sum(len(json.loads(line)["ids"]) for line in f)
    return tokens, seconds


def post(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.load(response)


def run_serve(base, texts, max_tokens):
    counts = [0] * len(texts)

    def client(i):
        reply = post(base + "/v1/chat/completions", {
            "messages": [{"role": "user", "content": texts[i]}], "max_tokens": max_tokens, "temperature": 0})
        counts[i] = reply["usage"]["completion_tokens"]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(texts))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    texts = prompts(args.clients)
    server = subprocess.Popen([SCOTD, "serve", "--model", args.model, "--port", "0", "--batch-size",
                               str(args.clients), "--max-context", "512"], stdout=subprocess.PIPE, text=True)
    try:
        base = None
        for line in server.stdout:
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                base = m.group(1)
                break
        assert base, "scotd serve did not start"
        rates = {"generate": [], "serve": []}
        for r in range(args.repeats):
            _, startup = run_generate(args.model, texts[:1], 1, 1)
            tokens, seconds = run_generate(args.model, texts, args.max_tokens, args.clients)
            rates["generate"].append(tokens / (seconds - startup))
            served, seconds = run_serve(base, texts, args.max_tokens)
            assert served == tokens, f"serve generated {served} tokens, generate {tokens}"
            rates["serve"].append(served / seconds)
            print(f"repeat {r}: generate {rates['generate'][-1]:.1f} tok/s, serve {rates['serve'][-1]:.1f} tok/s "
                  f"({tokens} tokens, generate start-up {startup:.2f} s)", flush=True)
        ratios = [s / g for s, g in zip(rates["serve"], rates["generate"])]
        for name, values in rates.items():
            print(f"{name}: median {statistics.median(values):.1f} tok/s, min {min(values):.1f}, max {max(values):.1f}")
        print(f"serve / generate: median {statistics.median(ratios):.2f}, min {min(ratios):.2f}, max {max(ratios):.2f}")
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
