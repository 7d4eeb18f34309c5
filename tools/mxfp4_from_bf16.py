#!/usr/bin/env python3
"""Usage: python3 tools/mxfp4_from_bf16.py SRC DST (numpy only; see BENCHMARKS.md, gpt-oss MXFP4)."""
# gpt-oss-20b-shaped checkpoint (2 layers) whose experts are MXFP4 blocks and scales as published:
# every other tensor copied byte for byte from an init-random bf16 checkpoint; experts become random
# MXFP4 blocks (scales 2^-9..2^-4) of gpt-oss-20b's shapes. Raw safetensors writing (no torch).
import json, os, shutil, struct, sys
import numpy as np
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
cfg = json.load(open(os.path.join(src, "config.json")))
f = open(os.path.join(src, "model.safetensors"), "rb")
n = struct.unpack("<Q", f.read(8))[0]
header = json.loads(f.read(n)); base = 8 + n
header.pop("__metadata__", None)
rng = np.random.default_rng(0)
tensors = []  # (name, dtype, shape, bytes-producer)
for name, info in header.items():
    if ".mlp.experts.gate_up_proj" in name or ".mlp.experts.down_proj" in name:
        if not name.endswith("_bias"):
            continue
    s, e = info["data_offsets"]
    tensors.append((name, info["dtype"], info["shape"], ("copy", base + s, e - s)))
E, H, I = cfg["num_local_experts"], cfg["hidden_size"], cfg["intermediate_size"]
for l in range(cfg["num_hidden_layers"]):
    p = f"model.layers.{l}.mlp.experts"
    for proj, rows, cols in [("gate_up_proj", 2 * I, H), ("down_proj", H, I)]:
        tensors.append((f"{p}.{proj}_blocks", "U8", [E, rows, cols // 32, 16], ("rand", 0, 256)))
        tensors.append((f"{p}.{proj}_scales", "U8", [E, rows, cols // 32], ("rand", 118, 124)))
hdr, off = {}, 0
for name, dt, shape, src_ in tensors:
    size = int(np.prod(shape)) * (1 if dt == "U8" else 2 if dt in ("BF16", "F16") else 4)
    hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + size]}; off += size
hdr["__metadata__"] = {"format": "pt"}
hb = json.dumps(hdr).encode(); hb += b" " * (-len(hb) % 8)
with open(os.path.join(dst, "model.safetensors"), "wb") as out:
    out.write(struct.pack("<Q", len(hb))); out.write(hb)
    for name, dt, shape, src_ in tensors:
        if src_[0] == "copy":
            f.seek(src_[1]); left = src_[2]
            while left:
                chunk = f.read(min(left, 1 << 26)); out.write(chunk); left -= len(chunk)
        else:
            out.write(rng.integers(src_[1], src_[2], size=shape, dtype=np.uint8).tobytes())
cfg["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
json.dump(cfg, open(os.path.join(dst, "config.json"), "w"), indent=2)
for g in os.listdir(src):
    if g not in ("model.safetensors", "config.json"):
        shutil.copy(os.path.join(src, g), dst)
print("written", dst, off / 2**20, "MiB of tensors")
