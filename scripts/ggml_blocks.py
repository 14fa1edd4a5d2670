#!/usr/bin/env python3
"""Writes tests/fixtures/formats/ggml-blocks.safetensors: rows of every ggml block type
libsutra reads, with the values gguf-py (llama.cpp's Python package) dequantizes them to.

For Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 the rows are what gguf-py's port of llama.cpp's reference
quantizers writes for random values (a zero row and rows of mixed magnitude included); gguf-py
has no quantizer for the K-quants, so Q4_K, Q5_K and Q6_K rows are random bytes with finite
f16 scales. Per type T: `T.bytes` U8 [rows, bytes per row] and `T.values` F32 [rows, 512].

  python3 scripts/ggml_blocks.py    # needs numpy, gguf, safetensors
"""
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from safetensors.numpy import save_file

rng = np.random.default_rng(20261203)
cols, rows = 512, 4
out = {}
for q in [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0]:
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    x[1] *= 0.0
    x[2] *= np.exp(rng.uniform(-6, 3, cols)).astype(np.float32)
    x[3] = np.abs(x[3]) + 0.5  # all positive: the minimum of Q4_1/Q5_1 matters
    b = gguf.quants.quantize(x, q)
    out[f"{q.name}.bytes"] = b
    out[f"{q.name}.values"] = gguf.quants.dequantize(b, q).astype(np.float32)
for q, (bsize, scale_at) in {Q.Q4_K: (144, [0, 2]), Q.Q5_K: (176, [0, 2]), Q.Q6_K: (210, [208])}.items():
    blocks = rng.integers(0, 256, (rows * cols // 256, bsize), dtype=np.uint8)
    for at in scale_at:
        d = rng.uniform(0.001, 0.05, len(blocks)).astype(np.float16)
        blocks[:, at : at + 2] = d.view(np.uint8).reshape(-1, 2)
    b = blocks.reshape(rows, -1)
    out[f"{q.name}.bytes"] = b
    out[f"{q.name}.values"] = gguf.quants.dequantize(b, q).astype(np.float32)
dst = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "formats" / "ggml-blocks.safetensors"
save_file(out, str(dst))
print(dst, {k: v.shape for k, v in out.items()})
