#!/usr/bin/env bash
# fuzz.sh: the coverage-guided fuzz targets of fuzz/ (the readers of untrusted input:
# safetensors header, config.json, dataset files, chat templates, the verifier), run with
# AFL++ on stable Rust through cargo-afl.
#
#     tools/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]    # default: 600 s, every target
#
# Installs cargo-afl from crates.io when missing (it builds AFL++ on first use; gcc is
# enough). Seeds come from tests/fixtures. Each target runs in runs/fuzz/TARGET; every
# crash or hang it finds is copied to tests/fixtures/fuzz/TARGET/, which the test command
# replays (tests/fuzz_regressions.rs): commit them with the fix. runs/fuzz/summary.txt
# gets one line per target run: seconds, execs/s, executions, corpus, crashes, hangs.
# Two runs with different targets may share the machine (one core each).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-600}
shift || true
TARGETS=${*:-"safetensors config datasets chat_template verifier"}
OUT=runs/fuzz
mkdir -p "$OUT"

command -v cargo-afl >/dev/null || cargo install cargo-afl --locked
cargo afl config --build >/dev/null 2>&1 || true   # AFL++ itself, once per toolchain
(cd fuzz && cargo afl build --release)

seed_safetensors() {
    cp tests/fixtures/optim/model.safetensors "$1/optim"
    cp tests/fixtures/golden/qwen2_tied/model.safetensors "$1/qwen2_tied"
}
seed_config() {
    for f in tests/fixtures/golden/*/config.json tests/fixtures/optim/config.json; do
        cp "$f" "$1/$(basename "$(dirname "$f")")"
    done
}
seed_datasets() {
    for f in tests/fixtures/data/*.json tests/fixtures/data/*.jsonl; do head -c 4096 "$f" >"$1/$(basename "$f")"; done
}
seed_chat_template() {
    printf '{%% for m in messages %%}<|{{ m.role }}|>{{ m.content }}{%% endfor %%}{%% if add_generation_prompt %%}<|assistant|>{%% endif %%}\0Hello' >"$1/loop"
    printf '{{ bos_token }}{{ messages[0].content | trim }}\0 What is 2+2? ' >"$1/filters"
}
seed_verifier() {
    printf '0.5\nSo the result is $\\boxed{\\frac{1}{2}}$.' >"$1/boxed"
    printf '#### 1,234\nThe answer is 1234.' >"$1/gsm8k"
    printf '72\n<think>48 + 24 = 72</think> \\boxed{72}' >"$1/think"
}

for target in $TARGETS; do
    seeds=$OUT/seeds/$target
    rm -rf "$seeds" "$OUT/$target"
    mkdir -p "$seeds"
    "seed_$target" "$seeds"
    echo "== $target: $SECONDS_PER_TARGET s"
    AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_AUTORESUME=0 \
        cargo afl fuzz -i "$seeds" -o "$OUT/$target" -V "$SECONDS_PER_TARGET" -t 2000 -m none \
        -- "fuzz/target/release/$target" >"$OUT/$target.log" 2>&1 || echo "afl-fuzz exited $? (see $OUT/$target.log)"
    stats=$OUT/$target/default/fuzzer_stats
    stat() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$stats"; }
    if [[ -f $stats ]]; then
        printf '%-14s %5s s  %8s execs/s  %10s execs  corpus %5s  crashes %s  hangs %s\n' "$target" \
            "$(stat run_time)" "$(stat execs_per_sec)" "$(stat execs_done)" "$(stat corpus_count)" \
            "$(stat saved_crashes)" "$(stat saved_hangs)" | tee -a "$OUT/summary.txt"
    fi
    kept=tests/fixtures/fuzz/$target
    for finding in "$OUT/$target"/default/{crashes,hangs}/id:*; do
        [[ -f $finding ]] || continue
        mkdir -p "$kept"
        cp "$finding" "$kept/$(basename "$(dirname "$finding")")-$(sha1sum "$finding" | cut -c1-12)"
    done
done
echo "summary: $OUT/summary.txt; findings (if any) under tests/fixtures/fuzz/"
