#!/usr/bin/env python3
"""A bf16 copy of an f32 Hugging Face checkpoint folder (numpy only, no torch).

    python tools/cast_checkpoint.py --src DIR --out DIR_BF16

writes DIR_BF16/ with

    model.safetensors       every tensor of DIR/model.safetensors rounded to bfloat16
                            (round to nearest, ties to even: what torch's
                            .to(torch.bfloat16) does)
    config.json             DIR's, with "torch_dtype": "bfloat16"
    tokenizer.json, tokenizer_config.json, generation_config.json   copied
    scotd-cast.json         the marker: DIR's conversion marker, this script's sha256 and
                            the output files' sha256; a rerun whose marker matches does
                            nothing

tools/fetch-test-models.sh makes models/smollm2-135m-instruct-bf16 this way: a checkpoint
stored in bf16, as most published ones are, for inference that keeps the stored dtype.
Loaded by transformers with dtype=torch.float32 (bf16 -> f32 is exact) it is the peer
that scotd's bf16 inference must match. The folder is written to a temporary sibling and
renamed into place.
"""

import argparse
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile

import numpy as np

MARKER = "scotd-cast.json"
SOURCE_MARKER = "scotd-conversion.json"
COPIED = ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]
OUTPUT_FILES = ["config.json", "model.safetensors"] + COPIED


def log(msg):
    print(f"[cast_checkpoint] {msg}", file=sys.stderr, flush=True)


def sha256_file(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def to_bf16_bits(x):
    """f32 array -> uint16 bf16 bit patterns, rounded to nearest even."""
    if not np.isfinite(x).all():
        raise ValueError("non-finite weights: bf16 rounding of NaN/inf is not handled here")
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return ((bits + rounding) >> np.uint32(16)).astype(np.uint16)


def save_bf16(path, tensors):
    """A safetensors file of BF16 tensors: u64 header length, JSON header, packed data.
    (safetensors' numpy API has no bfloat16, numpy having none.)"""
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name in sorted(tensors):
        shape, bits = tensors[name]
        data = bits.astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)


def source_marker(src):
    with open(os.path.join(src, SOURCE_MARKER), encoding="utf-8") as f:
        return json.load(f)


def up_to_date(src, out):
    try:
        with open(os.path.join(out, MARKER), encoding="utf-8") as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return False
    return (
        marker.get("source_marker") == source_marker(src)
        and marker.get("caster_sha256") == sha256_file(os.path.abspath(__file__))
        and all(os.path.isfile(os.path.join(out, f)) for f in OUTPUT_FILES)
    )


def cast(src, out):
    from safetensors.numpy import load_file

    weights = load_file(os.path.join(src, "model.safetensors"))
    if any(w.dtype != np.float32 for w in weights.values()):
        raise ValueError(f"{src}/model.safetensors: expected f32 tensors only")
    tensors = {name: (w.shape, to_bf16_bits(w)) for name, w in weights.items()}
    with open(os.path.join(src, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    config["torch_dtype"] = "bfloat16"

    parent = os.path.dirname(os.path.abspath(out))
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    try:
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
        save_bf16(os.path.join(tmp, "model.safetensors"), tensors)
        for name in COPIED:
            shutil.copyfile(os.path.join(src, name), os.path.join(tmp, name))
        marker = {
            "source": os.path.basename(os.path.normpath(src)),
            "source_marker": source_marker(src),
            "dtype": "bfloat16",
            "rounding": "nearest, ties to even",
            "caster_sha256": sha256_file(os.path.abspath(__file__)),
            "files": {f: sha256_file(os.path.join(tmp, f)) for f in OUTPUT_FILES},
        }
        with open(os.path.join(tmp, MARKER), "w", encoding="utf-8") as f:
            json.dump(marker, f, indent=2)
            f.write("\n")
        for name in OUTPUT_FILES + [MARKER]:
            os.chmod(os.path.join(tmp, name), 0o644)
        os.chmod(tmp, 0o755)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(tmp, out):
    """Move the finished folder into place; an older one is moved aside first, then removed."""
    old = None
    if os.path.lexists(out):
        old = f"{out}.old-{os.getpid()}"
        os.rename(out, old)
    os.rename(tmp, out)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", required=True, help="an f32 checkpoint folder made by convert_gguf.py")
    ap.add_argument("--out", required=True)
    ap.add_argument("--force", action="store_true", help="cast even if the marker matches")
    args = ap.parse_args()
    if not args.force and up_to_date(args.src, args.out):
        log(f"{args.out} is up to date")
        return
    cast(args.src, args.out)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
