#!/usr/bin/env python3
"""Write an official BlinkDL RWKV-5.2 or RWKV-6 checkpoint as a Hugging Face folder in the
transformers layout (`Rwkv5ForCausalLM` / `Rwkv6ForCausalLM`, the remote-code models of the
RWKV/rwkv-5-world-* and RWKV/v6-Finch-*-HF repositories, which llama.cpp's
convert_hf_to_gguf.py reads for `rwkv6`).

    python3 scripts/hf_rwkv56.py IN.safetensors OUTDIR [--vocab RWKV_VOCAB.txt] [--rescale-every R]

The renames are those of transformers' convert_rwkv5_checkpoint_to_hf.py: `emb.` ->
`embeddings.`, `blocks.0.ln0` -> `blocks.0.pre_ln`, `att` -> `attention`, `ffn` ->
`feed_forward`, RWKV-5's `time_mix_k/v/r/g` -> `time_mix_key/value/receptance/gate`, and the
`rwkv.` prefix on everything but `head.weight`. Values and shapes are unchanged (RWKV-6's
`time_maa_*`, `time_decay_w1/w2`, `time_faaaa` keep their names, as in modeling_rwkv6.py).

config.json carries the shape hyper-parameters those configs have; `--rescale-every` sets
`rescale_every` (transformers applies it only to 16-bit weights; llama.cpp's converter divides
block i's output products by 2^(i div R) and its graph halves the residual every R blocks).
`--vocab` copies the world vocabulary file the converter reads.

Used to make tests/fixtures/formats/rwkv{5,6}-hf from tests/fixtures/golden/rwkv{5,6}, and the
rwkv6 GGUF files from that folder (see tests/fixtures/formats/README.md).
"""
import argparse
import json
import os
import re
import shutil

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

RWKV5_MIX = {"time_mix_k": "time_mix_key", "time_mix_v": "time_mix_value",
             "time_mix_r": "time_mix_receptance", "time_mix_g": "time_mix_gate"}


def hf_name(k):
    if k == "head.weight":
        return k
    n = k
    if n.startswith("emb."):
        n = "embeddings." + n[len("emb."):]
    if n.startswith("blocks.0.ln0."):
        n = "blocks.0.pre_ln." + n[len("blocks.0.ln0."):]
    n = re.sub(r"^blocks\.(\d+)\.att\.", r"blocks.\1.attention.", n)
    n = re.sub(r"^blocks\.(\d+)\.ffn\.", r"blocks.\1.feed_forward.", n)
    last = n.rsplit(".", 1)
    if len(last) == 2 and last[1] in RWKV5_MIX:
        n = last[0] + "." + RWKV5_MIX[last[1]]
    return "rwkv." + n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--vocab")
    ap.add_argument("--rescale-every", type=int, default=0)
    a = ap.parse_args()
    f = safe_open(a.src, "np")
    t = {hf_name(k): np.ascontiguousarray(f.get_tensor(k)) for k in f.keys()}
    v6 = "rwkv.blocks.0.attention.time_maa_x" in t
    vocab, c = t["rwkv.embeddings.weight"].shape
    n_head, head_size = t["rwkv.blocks.0.attention.time_faaaa"].shape
    n_layer = 1 + max(int(k.split(".")[2]) for k in t if k.startswith("rwkv.blocks."))
    cfg = {
        "architectures": ["Rwkv6ForCausalLM" if v6 else "Rwkv5ForCausalLM"],
        "model_type": "rwkv6" if v6 else "rwkv5",
        "vocab_size": int(vocab),
        "hidden_size": int(c),
        "num_hidden_layers": int(n_layer),
        "attention_hidden_size": int(c),
        "head_size": int(head_size),
        "head_size_divisor": 8,
        "intermediate_size": int(t["rwkv.blocks.0.feed_forward.key.weight"].shape[0]),
        "layer_norm_epsilon": 1e-5,
        "rescale_every": a.rescale_every,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }
    os.makedirs(a.out, exist_ok=True)
    save_file(t, os.path.join(a.out, "model.safetensors"))
    with open(os.path.join(a.out, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=1)
    if a.vocab:
        shutil.copy(a.vocab, os.path.join(a.out, "rwkv_vocab_v20230424.txt"))
    print("wrote", a.out, cfg)


if __name__ == "__main__":
    main()
