#!/usr/bin/env bash
# gpu-check.sh: every check and benchmark scotd runs on a GPU machine, in one go.
#
# Run it on a machine with CUDA, PyTorch and transformers (no Rust needed):
#
#     tools/gpu-check.sh "$OUT"            # the real run (estimated 1 to 2 minutes on an H100,
#                                          # plus up to GENERATE_BUDGET for generate_bench)
#     tools/gpu-check.sh --smoke "$OUT"    # tiny shapes, CPU allowed: tests this script anywhere
#
# It writes its report into OUT (created if missing), a handful of files only:
#   env.txt          nvidia-smi, nvcc, Python / PyTorch / transformers versions
#   gpu-check.log    the output of every section, as it ran
#   summary.txt      one line per section: ok / FAILED (exit status), seconds
#   torch_gpu.json   PyTorch reference numbers (tools/bench_torch_gpu.py), and torch_gpu.md, its tables
#   kernel-tests.txt every CUDA test of the library, the device half of every device test
#                    included, run on the card (bin/scotd-lib-tests)
#   kernels.json     our kernels' times (bin/scotd gpu-bench), and kernels.md, the table
#                    beside PyTorch's times from torch_gpu.json
#   train-*.json     the Qwen2.5-0.5B training step, scotd (bin/scotd bench train) and
#                    PyTorch (tools/bench_torch.py) at each shape, and train.md, the table
#   generate-*.json  greedy generation, scotd (bin/scotd bench generate) and PyTorch
#                    (tools/bench_generate.py) at the Qwen2.5-0.5B and 7B shapes, and
#                    generate.md, the table with the GSM8K sampling job's estimated time
#
# Each section runs in its own subshell: a failing section is recorded and the next one
# still runs. The script exits 1 if any section failed, 2 on bad usage.
#
# Environment:
#   PYTHON               interpreter with torch and transformers (default: python3)
#   GPU_CHECK_SECTIONS   sections to run, in order (default: all of SECTIONS below)
#   TORCH_BENCH_TIMEOUT  seconds before the PyTorch benchmark is interrupted (default 240;
#                        interrupted, it still writes what it measured)
#   TORCH_BENCH_ARGS     extra arguments for bench_torch_gpu.py, e.g. "--compile"
#   GENERATE_RUNS        generate_bench's runs, NAME:CONFIG:BATCH:PROMPT:NEW each
#   GENERATE_BUDGET      seconds for the whole generate_bench section (default 230); a run
#                        is skipped, and the section fails, when under 20 s are left
#   GENERATE_RUN_TIMEOUT seconds one generate run may take at most (default 90)
#   GENERATE_TORCH_ARGS  extra arguments for bench_generate.py, e.g. "--compile"
#
# Our binaries are built on the CPU machine by tools/build-gpu-binaries.sh into bin/ (the
# GPU machine may have no Rust); they load libcuda, libnvrtc and cuBLAS at run time, from
# the library path or CUDA's default folder. Adding a section: write a function
# section_NAME below that returns non-zero on failure and writes its results under $OUT
# (few files: keep a report to one .json and one .md), and add NAME to SECTIONS.

set -uo pipefail   # no -e: a failing command must not end the run, each section reports its own status

SECTIONS="env torch_bench kernel_tests kernel_bench train_bench generate_bench"

usage() { echo "usage: $0 [--smoke] OUT_DIR" >&2; exit 2; }
SMOKE=0
if [[ ${1:-} == --smoke ]]; then SMOKE=1; shift; fi
[[ $# -eq 1 ]] || usage
mkdir -p "$1" || exit 2
OUT=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2

PYTHON=${PYTHON:-python3}
TORCH_BENCH_TIMEOUT=${TORCH_BENCH_TIMEOUT:-240}
TORCH_BENCH_ARGS=${TORCH_BENCH_ARGS:-}
export PYTHONUNBUFFERED=1   # keep the log in step with the run
LOG=$OUT/gpu-check.log
SUMMARY=$OUT/summary.txt
: >"$LOG"
: >"$SUMMARY"

# ---------------------------------------------------------------------------- sections

# The machine, the driver, the compiler and the Python stack, into env.txt.
section_env() {
    local f=$OUT/env.txt rc=0
    {
        echo "== date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
        echo "== uname: $(uname -srm)"
        echo "== repo: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout')"
        echo "== nvidia-smi"
        if command -v nvidia-smi >/dev/null; then
            nvidia-smi
            nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu,persistence_mode \
                --format=csv
        else
            echo "nvidia-smi: not found"
        fi
        echo "== nvcc"
        local nvcc
        nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
        if [[ -n $nvcc ]]; then "$nvcc" --version; else echo "nvcc: not found"; fi
        echo "== python: $PYTHON"
        "$PYTHON" - <<'EOF'
import platform, sys
print("python", platform.python_version(), sys.executable)
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
print("cuda available:", torch.cuda.is_available())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"device {i}: {p.name}, cc {p.major}.{p.minor}, {p.multi_processor_count} SMs, "
          f"{p.total_memory / 2**30:.1f} GiB, L2 {getattr(p, 'L2_cache_size', 0) / 2**20:.0f} MiB")
for mod in ("transformers", "triton", "numpy", "safetensors"):
    try:
        print(mod, __import__(mod).__version__)
    except Exception as e:
        print(mod, "unavailable:", e)
EOF
    } >"$f" 2>&1 || rc=1
    cat "$f"
    grep -q '^torch ' "$f" || { echo "env: PyTorch could not be imported by $PYTHON"; rc=1; }
    if [[ $SMOKE == 0 ]]; then
        command -v nvidia-smi >/dev/null || { echo "env: no nvidia-smi"; rc=1; }
        grep -q '^cuda available: True' "$f" || { echo "env: PyTorch sees no CUDA device"; rc=1; }
    fi
    return $rc
}

# PyTorch's times for every op our kernels replace, the card's limits, a full HF step.
section_torch_bench() {
    local args=(--out "$OUT")
    [[ $SMOKE == 1 ]] && args+=(--smoke)
    # word splitting of TORCH_BENCH_ARGS is intended: it holds several arguments
    # shellcheck disable=SC2206
    args+=($TORCH_BENCH_ARGS)
    # SIGINT lets the script save what it measured; -k kills it if it does not stop
    timeout -s INT -k 30 "$TORCH_BENCH_TIMEOUT" "$PYTHON" tools/bench_torch_gpu.py "${args[@]}"
    local rc=$?
    [[ $rc == 124 ]] && echo "torch_bench: timed out after $TORCH_BENCH_TIMEOUT s (partial results kept)"
    # clocks, power and temperature just after the load: a throttled card shows here
    # (the throttle-reason field was renamed in newer drivers; fall back to the plain fields)
    if command -v nvidia-smi >/dev/null; then
        local q=clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu
        nvidia-smi --query-gpu=$q,clocks_event_reasons.active --format=csv 2>/dev/null ||
            nvidia-smi --query-gpu=$q --format=csv
    fi
    return $rc
}

# CUDA's libraries (libnvrtc, libcublas) where a toolkit installs them.
for dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [[ -d $dir ]] && export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done

# Every test of the library that names CUDA: the launcher tests of backend::cuda (on the
# device with SCOTD_TEST_CUDA=1) and the `cuda` half of every device test (each op's
# forward and backward through the tape, the training step against the CPU's, the kernel
# choice), which a build without a GPU ignores.
section_kernel_tests() {
    [[ -x bin/scotd-lib-tests ]] || { echo "bin/scotd-lib-tests missing: run tools/build-gpu-binaries.sh"; return 1; }
    local args=(--test-threads=1 cuda)
    if [[ $SMOKE == 1 ]]; then
        SCOTD_TEST_CUDA=0 bin/scotd-lib-tests "${args[@]}" 2>&1 | tee "$OUT/kernel-tests.txt"
    else
        SCOTD_TEST_CUDA=1 bin/scotd-lib-tests --include-ignored "${args[@]}" 2>&1 | tee "$OUT/kernel-tests.txt"
    fi
    return "${PIPESTATUS[0]}"
}

# Our kernels' times at Qwen2.5-0.5B shapes, joined with PyTorch's.
section_kernel_bench() {
    [[ -x bin/scotd ]] || { echo "bin/scotd missing: run tools/build-gpu-binaries.sh"; return 1; }
    local args=(gpu-bench --out "$OUT")
    [[ -f $OUT/torch_gpu.json ]] && args+=(--torch "$OUT/torch_gpu.json")
    [[ $SMOKE == 1 ]] && args+=(--smoke --device emulator)
    bin/scotd "${args[@]}"
}

# The whole training step at Qwen2.5-0.5B's shape, scotd then PyTorch at each batch x seq
# (TRAIN_SHAPES, default "16x1024 8x2048"), with the same data; the table in train.md.
section_train_bench() {
    [[ -x bin/scotd ]] || { echo "bin/scotd missing: run tools/build-gpu-binaries.sh"; return 1; }
    local config=benches/configs/qwen2.5-0.5b.json shapes=${TRAIN_SHAPES:-16x1024 8x2048} rc=0
    local common=()
    if [[ $SMOKE == 1 ]]; then
        config=benches/configs/tiny-qwen2.json shapes="2x32" common=(--steps 2 --warmup 1 --peak-gemm 128)
    fi
    for shape in $shapes; do
        local b=${shape%x*} t=${shape#*x} ours=(bench train --model "$config")
        [[ $SMOKE == 1 ]] && ours+=(--device emulator)
        bin/scotd "${ours[@]}" --batch "$b" --seq "$t" "${common[@]}" --json "$OUT/train-scotd-$shape.json" || rc=1
        "$PYTHON" tools/bench_torch.py --model "$config" --batch "$b" --seq "$t" "${common[@]}" \
            --json "$OUT/train-torch-$shape.json" || rc=1
    done
    "$PYTHON" tools/train_bench_table.py "$OUT" || rc=1
    return $rc
}

# Greedy generation through our decoder and through transformers' generate, one run of
# each per GENERATE_RUNS entry (NAME:CONFIG:BATCH:PROMPT:NEW): Qwen2.5-0.5B at batch 1,
# the 7B teacher's shape at batch 1, both at batch 64 (the sampling job's batches; the
# teacher's first). Every run has a timeout, and the section a budget, so that a slow run
# cannot eat the GPU session; generate.md holds the table.
section_generate_bench() {
    [[ -x bin/scotd ]] || { echo "bin/scotd missing: run tools/build-gpu-binaries.sh"; return 1; }
    local small=benches/configs/qwen2.5-0.5b.json teacher=benches/configs/deepseek-math-7b.json
    local runs=${GENERATE_RUNS:-"qwen0.5b-b1:$small:1:128:256 7b-b1:$teacher:1:128:128 7b-b64:$teacher:64:256:512 qwen0.5b-b64:$small:64:256:512"}
    local budget=${GENERATE_BUDGET:-230} run_timeout=${GENERATE_RUN_TIMEOUT:-90} rc=0
    local deadline=$((SECONDS + budget)) ours_args=() torch_args=()
    # word splitting of GENERATE_TORCH_ARGS is intended: it holds several arguments
    # shellcheck disable=SC2206
    torch_args=(${GENERATE_TORCH_ARGS:-})
    if [[ $SMOKE == 1 ]]; then
        runs="tiny-b2:benches/configs/tiny-qwen2.json:2:8:4"
        ours_args=(--device emulator)
        torch_args+=(--smoke)
    fi
    local run name config b p n engine limit status
    for run in $runs; do
        IFS=: read -r name config b p n <<<"$run"
        for engine in scotd torch; do
            limit=$((deadline - SECONDS))
            ((limit > run_timeout)) && limit=$run_timeout
            if ((limit < 20)); then
                echo "generate_bench: skipped $engine $name, ${budget} s budget spent"
                rc=1
                continue
            fi
            local shape=(--model "$config" --batch "$b" --prompt-len "$p" --new "$n")
            local json=$OUT/generate-$engine-$name.json
            if [[ $engine == scotd ]]; then
                timeout -k 10 "$limit" bin/scotd bench generate "${shape[@]}" "${ours_args[@]}" --json "$json"
            else
                timeout -k 10 "$limit" "$PYTHON" tools/bench_generate.py "${shape[@]}" "${torch_args[@]}" --json "$json"
            fi
            status=$?
            if [[ $status != 0 ]]; then
                [[ $status == 124 ]] && echo "generate_bench: $engine $name timed out after $limit s"
                echo "generate_bench: $engine $name failed (exit $status)"
                rc=1
            fi
        done
    done
    "$PYTHON" tools/generate_bench_table.py "$OUT" || rc=1
    return $rc
}

# ---------------------------------------------------------------------------- driver

FAILED=0
for name in ${GPU_CHECK_SECTIONS:-$SECTIONS}; do
    if ! declare -F "section_$name" >/dev/null; then
        echo "unknown section: $name" | tee -a "$LOG"
        printf '%-16s FAILED (no such section)\n' "$name" >>"$SUMMARY"
        FAILED=1
        continue
    fi
    echo "===== $name  $(date -u '+%H:%M:%S')" | tee -a "$LOG"
    start=$SECONDS
    ("section_$name") 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    took=$((SECONDS - start))
    if [[ $rc == 0 ]]; then status="ok"; else status="FAILED (exit $rc)"; FAILED=1; fi
    printf '%-16s %-20s %5d s\n' "$name" "$status" "$took" | tee -a "$LOG" >>"$SUMMARY"
done

# The tables last, so the end of the output carries them.
for md in "$OUT"/*.md; do
    [[ -e $md ]] && { echo; cat "$md"; }
done
echo
echo "===== summary ($OUT)"
cat "$SUMMARY"
exit $FAILED
