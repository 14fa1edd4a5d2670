//! Writes the seed corpora (`fuzz/seeds/<target>/`) and the dictionaries (`fuzz/dicts/`) from
//! the fixtures of `tests/fixtures` and `models/`:
//!
//! ```sh
//! cd fuzz && cargo run --release --example make_seeds
//! ```
//!
//! Everything is deterministic (fixed generator seeds), so the output only changes when the
//! fixtures or the library's writers do. Seeds are kept small (libFuzzer mutates small inputs
//! far better): real files where they are small, trimmed copies of the big ones (tokenizer
//! vocabularies cut to a few hundred entries), tiny synthetic checkpoints (`format::synth`,
//! width 16–32, one layer) and their quantized versions, and truncated copies.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use sutra::format::synth::{synthesize_with, MambaSizes, SynthSpec};
use sutra::format::SafetensorsFile;
use sutra::quant::{quantize_model, Method, QuantType, QuantizeParams};
use sutra::tensor::DType;
use sutra::{Adapter, Model, Session, Tokenizer};
use sutra_fuzz::{golden, join_prefixed, params, tokenizer, GOLDEN, MAMBA1, RWKV4, RWKV7, SAMPLE, TOKENIZERS};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The repository root (the fuzz crate's parent).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("fuzz/ has a parent").to_path_buf()
}

/// A file of the repository.
fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The seed directory of one target, emptied.
struct Seeds {
    dir: PathBuf,
}

impl Seeds {
    fn new(target: &str) -> Res<Seeds> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds").join(target);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(Seeds { dir })
    }

    fn put(&self, name: &str, bytes: &[u8]) -> Res<()> {
        std::fs::write(self.dir.join(name), bytes)?;
        Ok(())
    }

    /// `bytes`, and copies cut at each of `fractions` of its length.
    fn put_truncated(&self, name: &str, bytes: &[u8], fractions: &[f64]) -> Res<()> {
        self.put(name, bytes)?;
        for f in fractions {
            let n = (bytes.len() as f64 * f) as usize;
            self.put(&format!("{name}.cut{}", (f * 100.0) as usize), &bytes[..n])?;
        }
        Ok(())
    }
}

/// A scratch directory for intermediate files, emptied.
fn scratch() -> Res<PathBuf> {
    let dir = std::env::temp_dir().join(format!("sutra-make-seeds-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Writes a synthetic checkpoint into `dir/name.safetensors` and returns its path.
fn synth(dir: &Path, name: &str, arch: &str, width: usize, vocab: usize, head: usize, dtype: DType) -> Res<PathBuf> {
    synth_with(dir, name, arch, width, vocab, head, dtype, MambaSizes { d_state: Some(16), n_groups: None })
}

#[allow(clippy::too_many_arguments)]
fn synth_with(
    dir: &Path,
    name: &str,
    arch: &str,
    width: usize,
    vocab: usize,
    head: usize,
    dtype: DType,
    mamba: MambaSizes,
) -> Res<PathBuf> {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub)?;
    let path = sub.join("model.safetensors");
    let spec =
        SynthSpec { arch: arch.into(), n_layer: 1, n_embd: width, n_vocab: vocab, head_size: head, dtype, seed: 7 };
    synthesize_with(&spec, &mamba, &path)?;
    Ok(path)
}

/// Quantizes `src` into `dir/name.safetensors` (a `config.json` beside `src` is embedded).
fn quantize(src: &Path, dir: &Path, name: &str, qtype: QuantType, method: Method) -> Res<PathBuf> {
    let out = dir.join(format!("{name}.safetensors"));
    let mut p = QuantizeParams { qtype, group: 32, method, n_threads: 1, ..QuantizeParams::default() };
    if method == Method::Awq {
        let calib = dir.join("calib.txt");
        std::fs::write(&calib, &fixture("tests/fixtures/tokenizers/shakespeare_valid_20k.txt")[..4096])?;
        p.calib_file = Some(calib);
        p.calib_tokens = 512;
        p.tokenizer = Some(dir.join("bytes_vocab.txt"));
    }
    quantize_model(src, &out, &p, &mut |_| true)?;
    Ok(out)
}

/// The safetensors header of `bytes` (for the dictionaries).
fn header(bytes: &[u8]) -> Value {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    serde_json::from_slice(&bytes[8..8 + n]).expect("a seed's header is JSON")
}

/// The official RWKV-4 checkpoint at `src` renamed to the transformers layout.
fn rwkv4_to_hf(src: &Path, out: &Path) -> Res<()> {
    let file = SafetensorsFile::open(src, false)?;
    let mut tensors = Vec::new();
    for (name, t) in &file.tensors {
        let hf = match name.as_str() {
            "emb.weight" => "rwkv.embeddings.weight".to_string(),
            "head.weight" => "head.weight".to_string(),
            n if n.starts_with("ln_out.") => format!("rwkv.{n}"),
            n => {
                let n =
                    n.replace(".ln0.", ".pre_ln.").replace(".att.", ".attention.").replace(".ffn.", ".feed_forward.");
                let n = n.replace("time_mix_k", "time_mix_key").replace("time_mix_v", "time_mix_value");
                format!("rwkv.{}", n.replace("time_mix_r", "time_mix_receptance"))
            }
        };
        tensors.push((hf, t.dtype, t.shape.clone(), t.bytes().to_vec()));
    }
    sutra::format::safetensors::write(out, &tensors, None)?;
    Ok(())
}

fn model_seeds(tmp: &Path, names: &mut BTreeSet<String>) -> Res<()> {
    let seeds = Seeds::new("model")?;
    let mut put = |name: &str, path: &Path, cuts: &[f64]| -> Res<()> {
        let bytes = std::fs::read(path)?;
        if let Some(obj) = header(&bytes).as_object() {
            names.extend(obj.keys().cloned());
            if let Some(meta) = obj.get("__metadata__").and_then(Value::as_object) {
                names.extend(meta.keys().cloned());
            }
        }
        seeds.put_truncated(name, &bytes, cuts)
    };
    // Every architecture at width 16, f32; a few in bf16/f16.
    for (arch, head) in [("rwkv4", 8), ("rwkv5", 8), ("rwkv6", 8), ("rwkv7", 8), ("mamba1", 8), ("mamba2", 8)] {
        let p = synth(tmp, &format!("{arch}-w16"), arch, 16, 16, head, DType::F32)?;
        put(&format!("{arch}-w16-f32.safetensors"), &p, if arch == "rwkv7" { &[0.02, 0.5] } else { &[] })?;
    }
    for (arch, dtype, tag) in
        [("rwkv7", DType::BF16, "bf16"), ("rwkv6", DType::F16, "f16"), ("mamba1", DType::BF16, "bf16")]
    {
        let p = synth(tmp, &format!("{arch}-w16-{tag}"), arch, 16, 16, 8, dtype)?;
        put(&format!("{arch}-w16-{tag}.safetensors"), &p, &[])?;
    }
    let hf = tmp.join("rwkv4-hf.safetensors");
    rwkv4_to_hf(&tmp.join("rwkv4-w16/model.safetensors"), &hf)?;
    put("rwkv4-hf-w16-f32.safetensors", &hf, &[])?;
    // Quantized files: width 32 (a quantized matrix has a multiple of 32 columns).
    for (arch, q, tag) in [
        ("rwkv4", QuantType::Q8, "q8"),
        ("rwkv4", QuantType::Q4, "q4"),
        ("rwkv5", QuantType::Q8, "q8"),
        ("rwkv6", QuantType::Q4, "q4"),
        ("rwkv7", QuantType::Q8, "q8"),
        ("rwkv7", QuantType::Q4, "q4"),
        ("mamba1", QuantType::Q4, "q4"),
    ] {
        let src = synth(tmp, &format!("{arch}-w32"), arch, 32, 64, 16, DType::BF16)?;
        let q = quantize(&src, tmp, &format!("{arch}-w32-{tag}"), q, Method::Rtn)?;
        put(
            &format!("{arch}-w32-{tag}-rtn.safetensors"),
            &q,
            if tag == "q8" && arch == "rwkv4" { &[0.1, 0.6] } else { &[] },
        )?;
    }
    // Mamba-2 with two groups: synth writes the config.json the quantized file then embeds.
    let src = synth_with(
        tmp,
        "mamba2-g2",
        "mamba2",
        32,
        64,
        16,
        DType::BF16,
        MambaSizes { d_state: Some(16), n_groups: Some(2) },
    )?;
    put("mamba2-w32-g2-q8-rtn.safetensors", &quantize(&src, tmp, "mamba2-g2-q8", QuantType::Q8, Method::Rtn)?, &[])?;
    // AWQ (input scales): calibrated with a vocabulary of the 256 byte tokens (ids 1..=256).
    let world = fixture("tests/fixtures/tokenizers/rwkv_world/rwkv_vocab_v20230424.txt");
    let bytes_vocab: Vec<&[u8]> = world.split(|&b| b == b'\n').take(256).collect();
    std::fs::write(tmp.join("bytes_vocab.txt"), bytes_vocab.join(&b'\n'))?;
    let src = synth(tmp, "rwkv7-w32-v260", "rwkv7", 32, 260, 16, DType::BF16)?;
    put("rwkv7-w32-q4-awq.safetensors", &quantize(&src, tmp, "rwkv7-q4-awq", QuantType::Q4, Method::Awq)?, &[])?;
    Ok(())
}

/// Edit lists for `model_shapes` (see its `edit`): each base alone, and a few edits of every
/// kind on the RWKV-7, the Mamba-2 and the quantized RWKV-7.
fn model_shapes_seeds() -> Res<()> {
    let seeds = Seeds::new("model_shapes")?;
    for i in 0..10u8 {
        seeds.put(&format!("base{i}.bin"), &[i])?;
    }
    let edits: [(&str, u8, &[[u8; 4]]); 8] = [
        ("rwkv7-deeper", 4, &[[6, 0, 0x80, 0]]),
        ("rwkv7-deeper-then-wider", 4, &[[6, 0, 0x80, 0], [1, 3, 0, 0]]),
        ("rwkv7-dim", 4, &[[0, 5, 0, 24]]),
        ("rwkv7-rank", 4, &[[2, 7, 0, 1], [2, 9, 1, 0]]),
        ("rwkv7-dtype-nan", 4, &[[3, 2, 1, 0], [4, 3, 0, 0], [4, 4, 1, 1]]),
        ("mamba2-drop", 6, &[[5, 3, 0, 0], [6, 1, 1, 0]]),
        ("rwkv7-q4-record", 7, &[[7, 0, 2, 2], [8, 1, 0, 0], [9, 0, 0, 1]]),
        ("rwkv7-q4-group", 7, &[[9, 0, 0, 2], [9, 0, 1, 0]]),
    ];
    for (name, base, ops) in edits {
        let mut v = vec![base];
        v.extend(ops.iter().flatten());
        seeds.put(&format!("{name}.bin"), &v)?;
    }
    Ok(())
}

/// `text` of a golden config.json with `changes` applied.
fn config_with(rel: &str, changes: Value) -> String {
    let mut c: Value = serde_json::from_slice(&fixture(rel)).expect("a golden config is JSON");
    for (k, v) in changes.as_object().expect("an object") {
        c[k] = v.clone();
    }
    serde_json::to_string_pretty(&c).expect("JSON")
}

fn model_config_seeds(tmp: &Path) -> Res<()> {
    let seeds = Seeds::new("model_config")?;
    let framed = |flags: u8, config: &str, model: &[u8]| {
        let mut v = vec![flags];
        v.extend(join_prefixed(config.as_bytes(), model));
        v
    };
    let hf = std::fs::read(tmp.join("rwkv4-hf.safetensors"))?;
    let cfg = config_with(
        "tests/fixtures/golden/rwkv4/config.json",
        json!({"hidden_size": 16, "attention_hidden_size": 16, "intermediate_size": 64, "num_hidden_layers": 1,
               "vocab_size": 16, "rescale_every": 2}),
    );
    seeds.put("rwkv4-hf.bin", &framed(0, &cfg, &hf))?;
    seeds.put("rwkv4-hf-check-finite.bin", &framed(1, &cfg, &hf))?;
    let m1 = std::fs::read(tmp.join("mamba1-w16/model.safetensors"))?;
    let cfg = config_with(
        "tests/fixtures/golden/mamba1/config.json",
        json!({"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "vocab_size": 16,
               "time_step_rank": 1, "state_size": 16}),
    );
    seeds.put("mamba1.bin", &framed(0, &cfg, &m1))?;
    // Mamba-2: two groups (the config synth wrote), and transformers 4's bare `Infinity`.
    let src = synth_with(
        tmp,
        "mamba2-w16-g2",
        "mamba2",
        16,
        16,
        8,
        DType::F32,
        MambaSizes { d_state: Some(16), n_groups: Some(2) },
    )?;
    let cfg = std::fs::read_to_string(src.parent().expect("a folder").join("config.json"))?;
    seeds.put("mamba2-g2.bin", &framed(0, &cfg, &std::fs::read(&src)?))?;
    let m2 = std::fs::read(tmp.join("mamba2-w16/model.safetensors"))?;
    let cfg = config_with(
        "tests/fixtures/golden/mamba2/config.json",
        json!({"hidden_size": 16, "head_dim": 8, "num_heads": 4, "num_hidden_layers": 1, "vocab_size": 16,
               "state_size": 16, "time_step_rank": 1, "time_step_limit": [0.0, "INF"]}),
    );
    seeds.put("mamba2-bare-infinity.bin", &framed(1, &cfg.replace("\"INF\"", "Infinity"), &m2))?;
    seeds.put("mamba2-float-object.bin", &framed(0, &cfg.replace("\"INF\"", "{\"__float__\": \"Infinity\"}"), &m2))?;
    Ok(())
}

/// A copy of the tokenizer.json `v` with its vocabulary cut to ids below `keep` (merges, added
/// tokens and post-processor ids kept only where they still fit).
fn trim_tokenizer(mut v: Value, keep: u64) -> Value {
    let model = &mut v["model"];
    let kept: BTreeSet<String> = match model.get_mut("vocab") {
        Some(Value::Object(vocab)) => {
            vocab.retain(|_, id| id.as_u64().is_some_and(|id| id < keep));
            vocab.keys().cloned().collect()
        }
        Some(Value::Array(pieces)) => {
            pieces.truncate(keep as usize);
            pieces.iter().filter_map(|p| p[0].as_str().map(str::to_string)).collect()
        }
        _ => BTreeSet::new(),
    };
    if let Some(Value::Array(merges)) = model.get_mut("merges") {
        merges.retain(|m| {
            let (a, b) = match m {
                Value::String(s) => match s.split_once(' ') {
                    Some((a, b)) => (a.to_string(), b.to_string()),
                    None => return false,
                },
                Value::Array(p) => (p[0].as_str().unwrap_or("").into(), p[1].as_str().unwrap_or("").into()),
                _ => return false,
            };
            kept.contains(&a) && kept.contains(&b) && kept.contains(&format!("{a}{b}"))
        });
    }
    if let Some(Value::Array(added)) = v.get_mut("added_tokens") {
        added.retain(|t| t["id"].as_u64().is_some_and(|id| id < keep));
    }
    v
}

fn tokenizer_json_seeds() -> Res<()> {
    let seeds = Seeds::new("tokenizer_json")?;
    for (i, keep) in [(1, 400), (2, 1200), (3, 300), (4, 400)] {
        let fx = &TOKENIZERS[i];
        let v: Value = serde_json::from_slice(fx.bytes)?;
        let text = serde_json::to_vec_pretty(&trim_tokenizer(v, keep))?;
        Tokenizer::from_bytes(&text, fx.name)?;
        seeds.put_truncated(&format!("{}-{keep}.json", fx.name), &text, &[0.5])?;
    }
    // Real files that are small enough.
    seeds.put("unigram.json", TOKENIZERS[3].bytes)?;
    seeds.put("shakespeare_bpe.json", TOKENIZERS[4].bytes)?;
    // What no fixture has: every normalizer, pre-tokenizer and decoder the library reads.
    let vocab: serde_json::Map<String, Value> =
        ["<unk>", "a", "b", "c", "ab", "abc", "▁", "▁a", "1", "2", "<0x41>", "<0xE2>", "<0x82>", "<0xAC>", "."]
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), json!(i)))
            .collect();
    let kitchen = json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 15, "content": "<sep>", "single_word": false, "lstrip": true, "rstrip": true,
             "normalized": false, "special": true},
            {"id": 16, "content": "abc d", "single_word": true, "lstrip": false, "rstrip": false,
             "normalized": true, "special": false}
        ],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFKD"}, {"type": "StripAccents"}, {"type": "Lowercase"}, {"type": "NFD"}, {"type": "NFKC"},
            {"type": "Replace", "pattern": {"String": "  "}, "content": " "},
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Strip", "strip_left": true, "strip_right": false},
            {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": true,
             "lowercase": true}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"String": "-"}, "behavior": "Isolated", "invert": false},
            {"type": "Split", "pattern": {"String": "x"}, "behavior": "MergedWithPrevious", "invert": false},
            {"type": "Split", "pattern": {"String": "y"}, "behavior": "MergedWithNext", "invert": false},
            {"type": "Split", "pattern": {"String": "z"}, "behavior": "Contiguous", "invert": false},
            {"type": "Split", "pattern": {"String": "q"}, "behavior": "Removed", "invert": false},
            {"type": "Digits", "individual_digits": true},
            {"type": "Punctuation", "behavior": "Isolated"},
            {"type": "WhitespaceSplit"}, {"type": "Whitespace"},
            {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false}
        ]},
        "post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<sep>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {"<sep>": {"id": "<sep>", "ids": [15], "tokens": ["<sep>"]}}}
        ]},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}
        ]},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab, "merges": [["a", "b"], ["ab", "c"], ["▁", "a"]]}
    });
    let text = serde_json::to_vec_pretty(&kitchen)?;
    if let Err(e) = Tokenizer::from_bytes(&text, "kitchen-sink") {
        eprintln!("note: the kitchen-sink tokenizer seed does not load ({e}); kept as a seed anyway");
    }
    seeds.put("kitchen-sink-bpe.json", &text)?;
    let wordpiece = json!({
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": false},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 5, "vocab": {"[UNK]": 0, "a": 1, "##b": 2, "##c": 3, "中": 4}}
    });
    seeds.put("tiny-wordpiece.json", &serde_json::to_vec_pretty(&wordpiece)?)?;
    let unigram = json!({
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never", "split": true},
        "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never", "split": true},
        "model": {"type": "Unigram", "unk_id": 0, "byte_fallback": true,
                  "vocab": [["<unk>", 0.0], ["▁", -1.0], ["a", -2.0], ["ab", -1.5], ["<0x62>", -9.0]]}
    });
    seeds.put("tiny-unigram.json", &serde_json::to_vec_pretty(&unigram)?)?;
    Ok(())
}

fn world_vocab_seeds() -> Res<()> {
    let seeds = Seeds::new("world_vocab")?;
    let text = std::str::from_utf8(TOKENIZERS[0].bytes)?;
    let lines: Vec<&str> = text.lines().collect();
    seeds.put_truncated("head256.txt", lines[..256].join("\n").as_bytes(), &[0.5])?;
    seeds.put("head1000.txt", lines[..1000].join("\n").as_bytes())?;
    // A sample of the whole file (every kind of literal), renumbered from 257 after the bytes.
    let renumber = |picked: Vec<&str>| -> String {
        let mut out: Vec<String> = lines[..256].iter().map(|l| l.to_string()).collect();
        for (k, l) in picked.into_iter().enumerate() {
            let rest = l.split_once(' ').map_or(l, |(_, r)| r);
            out.push(format!("{} {rest}", 257 + k));
        }
        out.join("\n")
    };
    let sample = renumber(lines[256..].iter().step_by(97).copied().collect());
    seeds.put_truncated("sample-every97.txt", sample.as_bytes(), &[0.7])?;
    let escapes =
        renumber(lines[256..].iter().filter(|l| l.contains("b'") || l.contains('\\')).take(300).copied().collect());
    seeds.put("escapes.txt", escapes.as_bytes())?;
    seeds.put("crlf.txt", lines[..300].join("\r\n").as_bytes())?;
    Ok(())
}

fn state_seeds() -> Res<()> {
    let seeds = Seeds::new("state")?;
    let model = golden(RWKV4);
    let mut s = Session::new(model);
    seeds.put("initial.bin", &s.state_to_vec())?;
    s.eval(&[1, 2, 3], None)?;
    let blob = s.state_to_vec();
    seeds.put_truncated("after3.bin", &blob, &[0.01, 0.5])?;
    let mut bad = blob.clone();
    bad[40] ^= 1;
    seeds.put("bad-checksum.bin", &bad)?;
    let seeds = Seeds::new("state_fixed")?;
    for (i, g) in GOLDEN.iter().enumerate() {
        let mut s = Session::new(golden(i));
        s.eval(&[1, 2], None)?;
        let mut v = vec![i as u8];
        v.extend(s.state_to_vec());
        seeds.put(&format!("{}-after2.bin", g.name), &v)?;
    }
    Ok(())
}

fn adapter_seeds(tmp: &Path) -> Res<()> {
    let seeds = Seeds::new("adapter")?;
    let framed = |which: u8, config: &[u8], weights: &[u8]| {
        let mut v = vec![which];
        v.extend(join_prefixed(config, weights));
        v
    };
    // The PEFT fixtures, as PEFT wrote them.
    for (which, dir) in [(0, "rwkv7"), (1, "mamba1")] {
        let cfg = fixture(&format!("tests/fixtures/golden/lora/{dir}/adapter_config.json"));
        let w = fixture(&format!("tests/fixtures/golden/lora/{dir}/adapter.safetensors"));
        seeds.put_truncated(&format!("peft-{dir}.bin"), &framed(which, &cfg, &w), &[0.5])?;
    }
    // Small ones (rank 1 or 2, one or two modules), with the config variants the loader reads.
    let small = |model: &Arc<Model>, modules: &[&str], r: usize| -> Res<(Vec<u8>, Vec<u8>)> {
        let targets: std::collections::HashMap<String, (usize, usize)> =
            model.arch().matrices().into_iter().map(|m| (m.tensor.name.clone(), (m.rows, m.cols))).collect();
        let pairs = modules.iter().map(|m| {
            let (rows, cols) = targets[&format!("{m}.weight")];
            let a = (0..r * cols).map(|i| (i % 5) as f32 * 0.01).collect();
            let b = (0..rows * r).map(|i| (i % 3) as f32 * 0.01).collect();
            (m.to_string(), a, b, 2.0)
        });
        let adapter = Adapter::from_pairs(model, pairs, r, 2.0 * r as f32, "seed")?;
        let dir = tmp.join(format!("adapter-{}-{r}", modules.join("+")));
        adapter.save(&dir)?;
        Ok((std::fs::read(dir.join("adapter_config.json"))?, std::fs::read(dir.join("adapter_model.safetensors"))?))
    };
    let (cfg, w) = small(golden(RWKV7), &["blocks.0.att.key"], 1)?;
    seeds.put_truncated("rwkv7-att-key-r1.bin", &framed(0, &cfg, &w), &[0.9])?;
    let (cfg, w) = small(golden(RWKV7), &["blocks.1.ffn.value", "head"], 2)?;
    let mut c: Value = serde_json::from_slice(&cfg)?;
    c["rank_pattern"] = json!({"head": 2, "ffn.value": 2});
    c["alpha_pattern"] = json!({"head": 0.5});
    c["use_rslora"] = json!(true);
    seeds.put("rwkv7-patterns-rslora.bin", &framed(0, &serde_json::to_vec_pretty(&c)?, &w))?;
    let (cfg, w) = small(golden(MAMBA1), &["backbone.layers.0.mixer.in_proj"], 1)?;
    seeds.put("mamba1-in-proj-r1.bin", &framed(1, &cfg, &w))?;
    Ok(())
}

fn tokenize_seeds() -> Res<()> {
    let seeds = Seeds::new("tokenize")?;
    let shakespeare = &fixture("tests/fixtures/tokenizers/shakespeare_valid_20k.txt")[..600];
    let combining = "<|endoftext|>\u{338} e\u{301} A\u{30a} \u{1100}\u{1161}\u{11a8} ﬁ ① ｶ [SEP]x ##a </s>";
    for (i, fx) in TOKENIZERS.iter().enumerate() {
        let seed = |mode: u8, payload: &[u8]| {
            let mut v = vec![i as u8, mode];
            v.extend_from_slice(payload);
            v
        };
        seeds.put(&format!("{}-sample.bin", fx.name), &seed(0, SAMPLE.as_bytes()))?;
        seeds.put(&format!("{}-sample-special.bin", fx.name), &seed(2, SAMPLE.as_bytes()))?;
        seeds.put(&format!("{}-shakespeare.bin", fx.name), &seed(0, shakespeare))?;
        seeds.put(&format!("{}-combining.bin", fx.name), &seed(0, combining.as_bytes()))?;
        seeds.put(&format!("{}-not-utf8.bin", fx.name), &seed(0, b"ab\xe2\x82cd\xff"))?;
        let ids = tokenizer(i).encode(SAMPLE, true)?;
        let raw: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
        seeds.put(&format!("{}-ids.bin", fx.name), &seed(1, &raw))?;
    }
    Ok(())
}

/// Checks that every whole seed (not a `.cut` copy, not one made bad on purpose) is accepted by
/// the parser of its target, so that the fuzzers start from inputs that reach past parsing.
fn verify(tmp: &Path) -> Res<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let mut n = 0;
    for target in ["model", "model_config", "tokenizer_json", "world_vocab", "state", "state_fixed", "adapter"] {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(dir.join(target))?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
        files.sort();
        for path in files {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            if name.contains(".cut") || name.starts_with("bad-") {
                continue;
            }
            let data = std::fs::read(&path)?;
            let r: Result<(), sutra::Error> = match target {
                "model" => Model::load_from_memory(&data, &params()).map(drop),
                "model_config" => {
                    let (config, weights) = sutra_fuzz::split_prefixed(&data[1..]);
                    let config = std::str::from_utf8(config)?;
                    Model::load_from_memory_with_config(weights, Some(config), &params()).map(drop)
                }
                "tokenizer_json" | "world_vocab" => Tokenizer::from_bytes(&data, &name).map(drop),
                "state" => Session::new(golden(RWKV4)).load_state(&data),
                "state_fixed" => Session::new(golden(data[0] as usize % GOLDEN.len())).load_state(&data[1..]),
                _ => {
                    let model = golden(if data[0] % 2 == 0 { RWKV7 } else { MAMBA1 });
                    let (config, weights) = sutra_fuzz::split_prefixed(&data[1..]);
                    let folder = tmp.join("verify-adapter");
                    std::fs::create_dir_all(&folder)?;
                    std::fs::write(folder.join("adapter_config.json"), config)?;
                    std::fs::write(folder.join("adapter_model.safetensors"), weights)?;
                    Adapter::load(model, &folder).map(drop)
                }
            };
            r.map_err(|e| format!("seed {target}/{name} is refused: {e}"))?;
            n += 1;
        }
    }
    println!("{n} seeds checked: each is accepted by its parser");
    Ok(())
}

/// A libFuzzer dictionary: one quoted entry per line.
fn write_dict(name: &str, entries: impl IntoIterator<Item = String>) -> Res<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dicts");
    std::fs::create_dir_all(&dir)?;
    let quote = |s: &str| {
        let mut out = String::from("\"");
        for b in s.bytes() {
            match b {
                b'"' | b'\\' => out.push_str(&format!("\\{}", b as char)),
                0x20..=0x7e => out.push(b as char),
                _ => out.push_str(&format!("\\x{b:02X}")),
            }
        }
        out + "\""
    };
    let set: BTreeSet<String> = entries.into_iter().collect();
    let text: String = set.iter().map(|e| quote(e) + "\n").collect();
    std::fs::write(dir.join(format!("{name}.dict")), text)?;
    Ok(())
}

/// JSON keys as they appear in a file (quoted), and bare words.
fn keys(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| format!("\"{w}\"")).collect()
}

fn main() -> Res<()> {
    let _ = params();
    let tmp = scratch()?;
    let mut names = BTreeSet::new();
    model_seeds(&tmp, &mut names)?;
    model_shapes_seeds()?;
    model_config_seeds(&tmp)?;
    tokenizer_json_seeds()?;
    world_vocab_seeds()?;
    state_seeds()?;
    adapter_seeds(&tmp)?;
    tokenize_seeds()?;
    // Dictionaries: safetensors (tensor names of every layout, dtypes, the quantized record),
    // config.json, tokenizer.json, world vocabulary, PEFT config.
    let mut st: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    st.extend(keys(&["dtype", "shape", "data_offsets", "__metadata__", "F32", "F16", "BF16", "I8", "U8", "I64"]));
    st.extend(keys(&["quantized", "rtn", "awq", "q8", "q4", "type", "32", "64", "128", "1", "null"]));
    st.extend(["blocks.1.", "layers.1.", ".weight", ".bias", ".scales", ".input_scale"].map(String::from));
    write_dict("safetensors", st.clone())?;
    let mut cfg = keys(&[
        "model_type",
        "hidden_size",
        "num_hidden_layers",
        "num_heads",
        "head_dim",
        "n_groups",
        "state_size",
        "expand",
        "conv_kernel",
        "vocab_size",
        "layer_norm_epsilon",
        "tie_word_embeddings",
        "rescale_every",
        "intermediate_size",
        "attention_hidden_size",
        "time_step_rank",
        "time_step_limit",
        "residual_in_fp32",
        "__float__",
        "mamba",
        "mamba2",
        "rwkv",
    ]);
    cfg.extend(["Infinity", "-Infinity", "NaN", "1e-05", "0", "-1", "18446744073709551615"].map(String::from));
    cfg.extend(st.iter().cloned());
    write_dict("model_config", cfg)?;
    let mut tj = keys(&[
        "model",
        "vocab",
        "merges",
        "type",
        "BPE",
        "WordPiece",
        "Unigram",
        "unk_token",
        "unk_id",
        "byte_fallback",
        "fuse_unk",
        "ignore_merges",
        "continuing_subword_prefix",
        "end_of_word_suffix",
        "max_input_chars_per_word",
        "normalizer",
        "normalizers",
        "pre_tokenizer",
        "pretokenizers",
        "decoder",
        "decoders",
        "post_processor",
        "processors",
        "added_tokens",
        "id",
        "content",
        "single_word",
        "lstrip",
        "rstrip",
        "normalized",
        "special",
        "NFC",
        "NFD",
        "NFKC",
        "NFKD",
        "Lowercase",
        "StripAccents",
        "BertNormalizer",
        "Replace",
        "Prepend",
        "Strip",
        "Sequence",
        "ByteLevel",
        "BertPreTokenizer",
        "Metaspace",
        "Whitespace",
        "WhitespaceSplit",
        "Digits",
        "Punctuation",
        "Split",
        "ByteFallback",
        "Fuse",
        "BPEDecoder",
        "TemplateProcessing",
        "SpecialToken",
        "pattern",
        "String",
        "Regex",
        "behavior",
        "invert",
        "Removed",
        "Isolated",
        "MergedWithPrevious",
        "MergedWithNext",
        "Contiguous",
        "replacement",
        "prepend_scheme",
        "split",
        "always",
        "first",
        "never",
        "add_prefix_space",
        "use_regex",
        "trim_offsets",
        "clean_text",
        "handle_chinese_chars",
        "strip_accents",
        "lowercase",
        "individual_digits",
        "prefix",
        "suffix",
        "cleanup",
        "single",
        "pair",
        "special_tokens",
        "ids",
        "tokens",
        "type_id",
        "strip_left",
        "strip_right",
        "start",
        "stop",
        "prepend",
    ]);
    tj.extend(["▁", "Ġ", "##", "<0x41>", "true", "false", "null"].map(String::from));
    write_dict("tokenizer_json", tj)?;
    let wv = ["b'", "'", "\"", "\\x", "\\u", "\\U", "\\n", "\\\\", "\\'", "\\0", " 1\n", " 2\n", " 4\n", "65535 "];
    write_dict("world_vocab", wv.map(String::from))?;
    let mut ad = keys(&[
        "r",
        "lora_alpha",
        "peft_type",
        "LORA",
        "use_dora",
        "fan_in_fan_out",
        "lora_bias",
        "bias",
        "none",
        "rank_pattern",
        "alpha_pattern",
        "use_rslora",
        "target_modules",
        "base_model.model.",
        ".lora_A.weight",
        ".lora_B.weight",
    ]);
    ad.extend(st);
    write_dict("adapter", ad)?;
    verify(&tmp)?;
    std::fs::remove_dir_all(&tmp)?;
    println!("wrote fuzz/seeds and fuzz/dicts");
    Ok(())
}
