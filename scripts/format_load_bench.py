#!/usr/bin/env python3
"""Load time of one model in every container libsutra reads, side by side in one run.

  python3 scripts/format_load_bench.py WORKDIR [--sutra target/release/sutra] [--runs 5]

Writes into WORKDIR (once; reused when present) an RWKV-7 of the 0.1B shape (12 layers,
width 768, vocabulary 65536, random weights, bf16) as safetensors (`sutra synth`), as a
PyTorch `.pth` (the state dict pickled as torch.save does, stored entries; see
fuzz/make_format_seeds.py) and as a GGUF in llama.cpp's rwkv7 layout (the tensor names,
shapes and metadata of the golden GGUF that llama.cpp's converter wrote, scaled to this
shape, written by gguf-py; F32 and Q8_0 / Q4_0 blocks from gguf-py's quantizers). Then
runs `sutra bench -p 16 -n 4 -o json` on each, RUNS times, interleaved, with a warm page
cache, and prints the median `load_ms` (and decode ms/token) per file. Needs numpy and gguf.
"""
import argparse, json, os, statistics, subprocess, sys
from pathlib import Path

import numpy as np

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parent / "fuzz"))

ap = argparse.ArgumentParser()
ap.add_argument("work", type=Path)
ap.add_argument("--sutra", default=str(here.parent / "target" / "release" / "sutra"))
ap.add_argument("--runs", type=int, default=5)
a = ap.parse_args()
a.work.mkdir(parents=True, exist_ok=True)
L, D, F, V = 12, 768, 3072, 65536


def make_gguf(out, qtype):
    import gguf
    from gguf import GGMLQuantizationType as Q

    golden = here.parent / "tests" / "fixtures" / "formats" / "rwkv7-F32.gguf"
    r = gguf.GGUFReader(golden)
    w = gguf.GGUFWriter(out, "rwkv7")
    set_to = {"rwkv7.embedding_length": D, "rwkv7.feed_forward_length": F, "rwkv7.block_count": L}
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key.startswith("tokenizer.") or key == "general.architecture":
            continue
        sub = f.types[1] if len(f.types) > 1 else None
        w.add_key_value(key, set_to.get(key, f.contents()), f.types[0], sub)
    scale = {128: D, 512: F, 256: V}
    rng = np.random.default_rng(0)
    layers = {0: [t for t in r.tensors if t.name.startswith("blk.0.")],
              1: [t for t in r.tensors if t.name.startswith("blk.1.")]}
    todo = [(t.name, t) for t in r.tensors if not t.name.startswith("blk.")]
    for i in range(L):
        todo += [(t.name.replace("blk.1.", f"blk.{i}.") if i else t.name, t) for t in layers[min(i, 1)]]
    for name, t in todo:
        shape = tuple(scale.get(int(n), int(n)) for n in np.array(t.data).shape)
        x = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)
        if qtype != Q.F32 and x.ndim == 2 and x.shape[1] % 32 == 0 and x.shape[0] > 64:
            w.add_tensor(name, gguf.quants.quantize(x, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


st = a.work / "r7-0.1b-bf16.safetensors"
if not st.exists():
    subprocess.run([a.sutra, "synth", "--arch", "rwkv7", "--layers", str(L), "--width", str(D),
                    "--vocab", str(V), "--dtype", "bf16", "--out", str(st)], check=True)
pth = a.work / "r7-0.1b-bf16.pth"
if not pth.exists():
    import importlib.util
    spec = importlib.util.spec_from_file_location("seeds", here.parent / "fuzz" / "make_format_seeds.py")
    src = (here.parent / "fuzz" / "make_format_seeds.py").read_text()
    ns = {"__file__": str(here.parent / "fuzz" / "make_format_seeds.py"), "__name__": "seeds"}
    exec(compile(src.split("\n(root / \"seeds\"")[0], "make_format_seeds.py", "exec"), ns)
    ns["small_pth"](st, "r7-0.1b-bf16", pth)
files = [st, pth]
for q in ["F32", "Q8_0", "Q4_0"]:
    g = a.work / f"r7-0.1b-{q}.gguf"
    if not g.exists():
        import gguf
        make_gguf(g, getattr(gguf.GGMLQuantizationType, q))
    files.append(g)

res = {f: [] for f in files}
for _ in range(a.runs):
    for f in files:
        o = subprocess.run([a.sutra, "bench", str(f), "-p", "16", "-n", "4", "-o", "json"],
                           check=True, capture_output=True, text=True).stdout
        res[f].append(json.loads(o))
print(f"{'file':<28} {'bytes':>12} {'load ms':>9} {'decode ms/token':>16}")
for f, rs in res.items():
    load = statistics.median(r["load_ms"] for r in rs)
    dec = statistics.median(r["decode"]["ms_per_token"]["mean"] for r in rs)
    print(f"{f.name:<28} {f.stat().st_size:>12} {load:>9.1f} {dec:>16.2f}")
