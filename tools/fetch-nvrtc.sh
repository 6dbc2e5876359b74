#!/usr/bin/env bash
# Fetch NVRTC (NVIDIA's runtime CUDA compiler library) from PyPI, so that the tests compile
# every kernel for sm_80 and sm_90 on machines with no CUDA and no GPU.
#
#   eval "$(tools/fetch-nvrtc.sh --print-env)"   # fetch if missing, export LD_LIBRARY_PATH
#
# Installs the wheel nvidia-cuda-nvrtc==13.0.88 (pinned sha256) into
# ${SCOTD_CACHE:-$HOME/.cache/scotd}/nvrtc-13.0.88; its lib folder holds libnvrtc.so.13.
# Idempotent and offline on reruns; the folder appears by rename, never half-written.
# No CUDA headers are needed: kernels/common.cuh defines everything the kernels use.
set -euo pipefail

PRINT_ENV=0
case "${1:-}" in
    --print-env) PRINT_ENV=1 ;;
    "") ;;
    *) echo "usage: $0 [--print-env]" >&2; exit 2 ;;
esac

CACHE="${SCOTD_CACHE:-$HOME/.cache/scotd}"
VERSION="13.0.88"
WHEEL="nvidia_cuda_nvrtc-$VERSION-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl"
WHEEL_SHA256="ad9b6d2ead2435f11cbb6868809d2adeeee302e9bb94bcf0539c7a40d80e8575"
OUT="$CACHE/nvrtc-$VERSION"
LIB="$OUT/nvidia/cu13/lib"

log() { echo "[fetch-nvrtc] $*" >&2; }
die() { echo "[fetch-nvrtc] error: $*" >&2; exit 1; }

mkdir -p "$CACHE"
if [ ! -f "$LIB/libnvrtc.so.13" ]; then
    [ "$(uname -m)" = x86_64 ] || die "the pinned wheel is for x86_64 Linux"
    TMP="$(mktemp -d "$CACHE/.nvrtc.XXXXXX")"
    trap 'rm -rf "$TMP"' EXIT
    log "downloading nvidia-cuda-nvrtc==$VERSION from PyPI"
    python3 -m pip download -q --no-deps --only-binary=:all: \
        "nvidia-cuda-nvrtc==$VERSION" -d "$TMP/wheel"
    got="$(sha256sum "$TMP/wheel/$WHEEL" | cut -d' ' -f1)"
    [ "$got" = "$WHEEL_SHA256" ] || die "$WHEEL has sha256 $got, expected $WHEEL_SHA256"
    python3 -m zipfile -e "$TMP/wheel/$WHEEL" "$TMP/unpacked"
    rm -rf "$OUT"
    mv "$TMP/unpacked" "$OUT"
    log "installed into $OUT"
fi

if [ "$PRINT_ENV" = 1 ]; then
    echo "export LD_LIBRARY_PATH=\"$LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
else
    echo "$LIB"
fi
