#!/usr/bin/env python3
"""Writes the seeds of the `gguf` and `pth` fuzz targets (fuzz/seeds/{gguf,pth}/): small files
in the layouts llama.cpp and torch.save write, so that the fuzzer starts from inputs the
parsers accept whole.

  python3 fuzz/make_format_seeds.py [GOLDEN_FORMATS_DIR]

GGUF: the golden rwkv7 GGUF written by llama.cpp's converter (tests/fixtures/formats, or
GOLDEN_FORMATS_DIR), cut to width 64 and feed-forward 128 (every dimension of 128 halved,
512 quartered, the metadata to match), with its matrices quantized by gguf-py's
port of llama.cpp's reference quantizers (Q8_0, Q4_0, Q5_1). `.pth`: the width-16 RWKV-7
model seeds (fuzz/seeds/model) pickled as torch.save pickles a state dict (protocol 2, the
same globals and persistent ids, stored zip entries under one folder), with stand-in
`torch` modules so that torch itself is not needed. Needs numpy and gguf.
"""
import collections, io, json, pickle, sys, types, zipfile
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

root = Path(__file__).resolve().parent
src = Path(sys.argv[1]) if len(sys.argv) > 1 else root.parent / "tests" / "fixtures" / "formats"


def small_gguf(qtype, out, arch="rwkv7"):
    """The golden `arch` GGUF (rwkv7 or rwkv6) cut to width 64 (one head) and FFN 128."""
    r = gguf.GGUFReader(src / f"{arch}-F32.gguf")
    w = gguf.GGUFWriter(out, arch)
    cut = {128: 64, 512: 128, 448: 128}
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        v = f.contents()
        if key == f"{arch}.embedding_length":
            v = 64
        elif key == f"{arch}.feed_forward_length":
            v = 128
        elif key == f"{arch}.attention.head_count" and v:
            v = 1
        sub = f.types[1] if len(f.types) > 1 else None
        w.add_key_value(key, v, f.types[0], sub)
    for t in r.tensors:
        a = np.array(t.data, dtype=np.float32)
        a = a[tuple(slice(0, cut.get(n, n)) for n in a.shape)]
        if t.name.endswith("time_mix_first.weight"):
            a = a[:1]  # [heads, head_size]: one head of 64
        a = np.ascontiguousarray(a)
        if qtype != Q.F32 and a.ndim == 2 and a.shape[1] % 32 == 0:
            w.add_tensor(t.name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(t.name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def fake_torch():
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise RuntimeError("never called")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    storages = {}
    for name in ["FloatStorage", "BFloat16Storage", "HalfStorage"]:
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch, name, cls)
        storages[name] = cls
    torch._utils = utils
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    return _rebuild_tensor_v2, storages


def small_pth(safetensors_path, folder, out):
    rebuild, storages = fake_torch()
    class Storage:
        def __init__(self, key, kind, numel):
            self.key, self.kind, self.numel = key, kind, numel

    class Tensor:
        def __init__(self, storage, shape):
            self.storage, self.shape = storage, shape

        def __reduce__(self):
            stride = tuple(int(np.prod(self.shape[i + 1:])) for i in range(len(self.shape)))
            return (rebuild, (self.storage, 0, tuple(self.shape), stride, False, collections.OrderedDict()))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", storages[obj.kind], obj.key, "cpu", obj.numel)
            return None

    raw = Path(safetensors_path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__", None)
    kinds = {"F32": ("FloatStorage", 4), "BF16": ("BFloat16Storage", 2), "F16": ("HalfStorage", 2)}
    state, blobs = collections.OrderedDict(), {}
    for i, (name, h) in enumerate(header.items()):
        key = str(i)
        kind, size = kinds[h["dtype"]]
        a, b = h["data_offsets"]
        blobs[key] = raw[8 + n + a : 8 + n + b]
        state[name] = Tensor(Storage(key, kind, (b - a) // size), list(h["shape"]))
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(state)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:

        def put(name, data):
            # As torch's writer does: a padding extra field ("FB") puts every entry's data
            # on a 64-byte boundary, so that storages map in place.
            at = z.fp.tell() + 30 + len(name.encode()) + 4
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.extra = b"FB" + ((-at) % 64).to_bytes(2, "little") + bytes((-at) % 64)
            z.writestr(info, data)

        put(f"{folder}/data.pkl", buf.getvalue())
        put(f"{folder}/byteorder", "little")
        for key, data in blobs.items():
            put(f"{folder}/data/{key}", data)
        put(f"{folder}/version", "3\n")


(root / "seeds" / "gguf").mkdir(parents=True, exist_ok=True)
(root / "seeds" / "pth").mkdir(parents=True, exist_ok=True)
for q in [Q.Q8_0, Q.Q4_0, Q.Q5_1]:
    small_gguf(q, root / "seeds" / "gguf" / f"rwkv7-w64-{q.name}.gguf")
small_gguf(Q.Q8_0, root / "seeds" / "gguf" / "rwkv6-w64-Q8_0.gguf", "rwkv6")
for name in ["rwkv7-w16-f32", "rwkv7-w16-bf16"]:
    small_pth(root / "seeds" / "model" / f"{name}.safetensors", name, root / "seeds" / "pth" / f"{name}.pth")
