#!/usr/bin/env bash
# Builds what tools/gpu-check.sh runs on a GPU machine that has no Rust: the scotd binary
# and the library's test binary, both with --features cuda, stripped, into bin/ (ignored
# by git; pass it to the device tool's `carry`). They load libcuda, libnvrtc and cuBLAS
# at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bin
cargo build --release --features cuda --bin scotd
test_binary=$(cargo test --release --features cuda --lib --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["lib"]:
        print(m["executable"])')
cp target/release/scotd bin/scotd
cp "$test_binary" bin/scotd-lib-tests
strip bin/scotd bin/scotd-lib-tests
ls -la bin/
