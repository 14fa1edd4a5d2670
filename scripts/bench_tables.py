#!/usr/bin/env python3
"""Regenerates the README's prefill / decode / batch tables in one command.

    python3 scripts/bench_tables.py --dir /tmp/bench [--base OLD_SUTRA] [--passes 2] [--threads 2]

Makes the synthesized models it needs in --dir (`sutra synth` + `sutra quantize`, skipped when
the files exist), then runs `sutra bench MODEL --threads T --prompt 512 --gen 64 --batch 8
-o json` on each, alternating the binaries (this checkout's `target/release/sutra`, and
--base when given, for a paired before/after table) pass after pass, so that a drift of the
machine hits both alike. Prints markdown: per model the prefill tokens/s, decode ms/token
beside its bandwidth floor (weight bytes per token / --bw GB/s, when given), and the aggregate
tokens/s of 8 sessions advanced together; then a batch-size sweep (1, 2, 4, 8, 16 sessions) of
the RWKV-7 q4 model. Every figure of every pass is printed (comma-separated), not a best-of.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SUTRA = os.path.join(HERE, "..", "target", "release", "sutra")

MODELS = [
    # (file, what the row says, how to make it)
    ("r7-f32.safetensors", "RWKV-7 0.1B shape, 12×768, vocab 65536 (f32)",
     ["synth", "--arch", "rwkv7", "--layers", "12", "--width", "768", "--vocab", "65536"]),
    ("r7-q8.safetensors", "RWKV-7 0.1B shape (q8 g32)", ("r7-f32.safetensors", "q8")),
    ("r7-q4.safetensors", "RWKV-7 0.1B shape (q4 g32, head q8)", ("r7-f32.safetensors", "q4")),
    ("m1-f32.safetensors", "Mamba 130M shape, 24×768, vocab 50280 (f32)",
     ["synth", "--arch", "mamba1", "--layers", "24", "--width", "768", "--vocab", "50280"]),
    ("m1-q4.safetensors", "Mamba 130M shape (q4 g32)", ("m1-f32.safetensors", "q4")),
]


def make(sutra, d, name, how):
    path = os.path.join(d, name)
    if os.path.exists(path):
        return path
    if isinstance(how, list):
        cmd = [sutra] + how + ["--out", path]
    else:
        src, q = how
        cmd = [sutra, "quantize", os.path.join(d, src), path, "--type", q, "--group", "32", "--method", "rtn"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return path


def bench(sutra, model, threads, prompt, gen, batch):
    cmd = [sutra, "bench", model, "--threads", str(threads), "--prompt", str(prompt), "--gen", str(gen),
           "--batch", str(batch), "-o", "json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def fmt(xs, digits):
    return ", ".join(f"{x:.{digits}f}" for x in xs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="where the models are (made when missing)")
    ap.add_argument("--sutra", default=SUTRA, help="the sutra binary measured (default: this checkout's)")
    ap.add_argument("--base", help="a second sutra binary (e.g. an older commit's) for before/after columns")
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bw", type=float, help="streaming-read bandwidth in GB/s for the floor column")
    ap.add_argument("--models", help="comma-separated file names to keep (default: all)")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    bins = [("after", a.sutra)] + ([("before", a.base)] if a.base else [])
    models = [m for m in MODELS if not a.models or m[0] in a.models.split(",")]
    paths = {name: make(a.sutra, a.dir, name, how) for name, _, how in MODELS if any(
        name == m[0] or (not isinstance(m[2], list) and m[2][0] == name) for m in models)}
    res = {}  # (model, bin) -> list of runs
    for p in range(a.passes):
        order = bins if p % 2 == 0 else bins[::-1]
        for name, _, _ in models:
            for tag, b in order:
                r = bench(b, paths[name], a.threads, 512, 64, 8)
                res.setdefault((name, tag), []).append(r)
                print(f"pass {p + 1} {tag} {name}: prefill {r['prefill']['tokens_per_s']['mean']:.0f} tok/s, "
                      f"decode {r['decode']['ms_per_token']['mean']:.2f} ms, "
                      f"batch {r['batch']['tokens_per_s']['mean']:.0f} tok/s", file=sys.stderr)
    tags = [t for t, _ in bins]
    head = "| model (weights) | MiB/token |"
    for col in ["prefill tok/s", "decode ms/token", "batch of 8, tok/s"]:
        for t in tags:
            head += f" {col}{' ' + t if a.base else ''} |"
    if a.bw:
        head += " floor ms/token |"
    print(f"\n`sutra bench MODEL --threads {a.threads} --prompt 512 --gen 64 --batch 8`, {a.passes} interleaved passes\n")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name, what, _ in models:
        first = res[(name, tags[0])][0]
        mib = first["bytes_per_token"] / 2**20
        row = f"| {what} | {mib:.0f} |"
        for key, unit, dg in [("prefill", "tokens_per_s", 0), ("decode", "ms_per_token", 2), ("batch", "tokens_per_s", 0)]:
            for t in tags:
                row += " " + fmt([r[key][unit]["mean"] for r in res[(name, t)]], dg) + " |"
        if a.bw:
            row += f" {first['bytes_per_token'] / (a.bw * 1e9) * 1e3:.2f} |"
        print(row)
    # Batch sweep on the RWKV-7 q4 model, this checkout's binary.
    q4 = paths.get("r7-q4.safetensors")
    if q4:
        sweep = {}
        one = []
        for p in range(a.passes):
            for n in [1, 2, 4, 8, 16]:
                r = bench(a.sutra, q4, a.threads, 16, 48, n)
                sweep.setdefault(n, []).append(r["batch"]["tokens_per_s"]["mean"])
                one.append(r["decode"]["tokens_per_s"]["mean"])
        solo = sorted(one)[len(one) // 2]
        print(f"\nBatch sweep, RWKV-7 0.1B q4 g32, {a.threads} threads (`sutra bench … --prompt 16 --gen 48 --batch N`;"
              f" one session decodes at {solo:.0f} tokens/s, median of the same runs):\n")
        print("| sessions | " + " | ".join(str(n) for n in sweep) + " |")
        print("|---|" + "---|" * len(sweep))
        print("| aggregate tokens/s | " + " | ".join(fmt(v, 0) for v in sweep.values()) + " |")
        print("| × one session | " + " | ".join(f"{sorted(v)[len(v) // 2] / solo:.1f}" for v in sweep.values()) + " |")


if __name__ == "__main__":
    main()
