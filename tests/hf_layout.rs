//! Hugging Face `RWKV7ForCausalLM` folders (tests/fixtures/formats/rwkv7-hf, made by
//! shared/anchors/prep_hf_dirs.py from the golden rwkv7 case): through the C API the folder,
//! its `model.safetensors`, the same weights split into shards with an index, and the
//! flash-linear-attention spelling of the layout all give the golden logits; a sharded folder
//! checks every shard for truncation; bad indexes are errors naming the file and tensor.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use sutra::ffi::*;
use sutra::format::safetensors::{write, TensorBytes};
use sutra::format::SafetensorsFile;
use sutra::tensor::DType;
use sutra::{Model, ModelParams, Status};

fn hf_dir() -> PathBuf {
    fixture("formats/rwkv7-hf")
}

fn golden() -> (Vec<u32>, Vec<f32>, usize) {
    expected(&fixture("golden/rwkv7/expected.safetensors"), "logits")
}

fn last_error() -> String {
    // SAFETY: sutra_last_error never returns NULL and the string lives until our next call.
    unsafe { CStr::from_ptr(sutra_last_error()) }.to_string_lossy().into_owned()
}

/// A loaded C model and a session on it, freed on drop.
struct CModel {
    model: *mut sutra_model,
    session: *mut sutra_session,
    n_vocab: usize,
}

impl CModel {
    fn load(path: &Path, threads: i32) -> Result<CModel, (Status, String)> {
        let c_path = CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: valid out-pointers and a NUL-terminated path; handles freed on drop.
        unsafe {
            let mut params = sutra_model_default_params();
            params.n_threads = threads;
            let mut model = std::ptr::null_mut();
            let st = sutra_model_load(c_path.as_ptr(), &params, &mut model);
            if st != Status::SUTRA_OK {
                return Err((st, last_error()));
            }
            let mut info = std::mem::zeroed();
            assert_eq!(sutra_model_get_info(model, &mut info), Status::SUTRA_OK);
            let mut session = std::ptr::null_mut();
            assert_eq!(sutra_session_new(model, &mut session), Status::SUTRA_OK);
            Ok(CModel { model, session, n_vocab: info.n_vocab as usize })
        }
    }

    /// `sutra_session_eval` of one token into `out` (n_vocab floats).
    fn eval(&mut self, token: u32, out: &mut [f32]) -> Status {
        assert_eq!(out.len(), self.n_vocab);
        let t = token as i32;
        // SAFETY: a live session, one token, an output of n_vocab floats.
        unsafe { sutra_session_eval(self.session, &t, 1, out.as_mut_ptr()) }
    }
}

impl Drop for CModel {
    fn drop(&mut self) {
        // SAFETY: handles created by CModel::load, freed once.
        unsafe {
            sutra_session_free(self.session);
            sutra_model_free(self.model);
        }
    }
}

/// Logits of every token, one `sutra_session_eval` per token from the fresh state.
fn c_logits(path: &Path, tokens: &[u32], threads: i32) -> Vec<f32> {
    let mut m = CModel::load(path, threads).unwrap_or_else(|(st, msg)| panic!("{}: {st:?} {msg}", path.display()));
    let v = m.n_vocab;
    let mut out = vec![0f32; tokens.len() * v];
    for (i, &t) in tokens.iter().enumerate() {
        assert_eq!(m.eval(t, &mut out[i * v..(i + 1) * v]), Status::SUTRA_OK, "{}", last_error());
    }
    out
}

/// A fresh, empty temporary folder for one test.
fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sutra-hf-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The HF fixture's tensors as raw bytes, by name.
fn hf_tensors() -> BTreeMap<String, TensorBytes> {
    let f = SafetensorsFile::open(&hf_dir().join("model.safetensors"), false).unwrap();
    f.tensors.iter().map(|(k, t)| (k.clone(), (k.clone(), t.dtype, t.shape.clone(), t.bytes().to_vec()))).collect()
}

/// The shard (1-3) a tensor goes to: feed-forward tensors (the largest) in 1, embedding and
/// head in 2, the rest in 3.
fn shard_of(name: &str) -> usize {
    if name.contains(".feed_forward.") {
        1
    } else if name.contains("embeddings") || name.starts_with("lm_head") {
        2
    } else {
        3
    }
}

fn shard_name(i: usize) -> String {
    format!("model-{i:05}-of-00003.safetensors")
}

/// Writes a sharded copy of the HF fixture into `dir` (config.json, 3 shards, index).
fn write_sharded(dir: &Path) {
    std::fs::copy(hf_dir().join("config.json"), dir.join("config.json")).unwrap();
    let tensors = hf_tensors();
    let mut weight_map = serde_json::Map::new();
    for i in 1..=3 {
        let part: Vec<TensorBytes> = tensors.values().filter(|t| shard_of(&t.0) == i).cloned().collect();
        for t in &part {
            weight_map.insert(t.0.clone(), shard_name(i).into());
        }
        write(&dir.join(shard_name(i)), &part, None).unwrap();
    }
    let total: usize = tensors.values().map(|t| t.3.len()).sum();
    write_index(dir, &serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map}));
}

fn write_index(dir: &Path, index: &serde_json::Value) {
    std::fs::write(dir.join("model.safetensors.index.json"), serde_json::to_string_pretty(index).unwrap()).unwrap();
}

fn index_of(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap()).unwrap()
}

#[test]
fn hf_folder_gives_the_golden_logits() {
    let (toks, want, _) = golden();
    for threads in [1, 2] {
        let got = c_logits(&hf_dir(), &toks, threads);
        assert_close(&got, &want, 1e-4, 1e-3, &format!("rwkv7-hf folder, {threads} threads"));
    }
    // The folder's model.safetensors named directly, mapped or read.
    let got = c_logits(&hf_dir().join("model.safetensors"), &toks, 1);
    assert_close(&got, &want, 1e-4, 1e-3, "rwkv7-hf/model.safetensors");
    let m = Model::load(&hf_dir(), &ModelParams { use_mmap: false, ..Default::default() }).unwrap();
    assert_eq!(m.info().arch_name, "rwkv7");
    assert_eq!((m.info().n_layer, m.info().n_embd, m.info().n_vocab), (2, 128, 256));
}

#[test]
fn renamed_tensors_keep_the_file_storage() {
    let (file, config) = sutra::format::open(&hf_dir(), true).unwrap();
    assert!(config.is_some(), "config.json read");
    assert!(file.tensors.keys().all(|k| !k.starts_with("model.") && !k.starts_with("lm_head")));
    for k in
        ["emb.weight", "head.weight", "ln_out.weight", "blocks.0.ln0.weight", "blocks.1.att.v1", "blocks.1.ffn.x_k"]
    {
        assert!(file.tensors.contains_key(k), "{k} missing");
    }
    // Every tensor is a view of the one mapped file: renamed, not copied.
    let ids: std::collections::HashSet<usize> = file.tensors.values().map(|t| t.storage_id()).collect();
    assert_eq!(ids.len(), 1, "tensors copied out of the file");
    assert_eq!(file.tensors["emb.weight"].name, "emb.weight");
}

#[test]
fn sharded_folder_gives_the_golden_logits() {
    let dir = tmp("sharded");
    write_sharded(&dir);
    let (toks, want, _) = golden();
    for threads in [1, 2] {
        let got = c_logits(&dir, &toks, threads);
        assert_close(&got, &want, 1e-4, 1e-3, &format!("sharded rwkv7-hf folder, {threads} threads"));
    }
    let (file, _) = sutra::format::open(&dir, true).unwrap();
    let ids: std::collections::HashSet<usize> = file.tensors.values().map(|t| t.storage_id()).collect();
    assert_eq!(ids.len(), 3, "each tensor views its own shard");
    let m = Model::load(&dir, &ModelParams { use_mmap: false, ..Default::default() }).unwrap();
    assert_eq!(m.info().n_layer, 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_truncated_shard_is_an_io_error_before_any_read() {
    let dir = tmp("truncated");
    write_sharded(&dir);
    let mut m = CModel::load(&dir, 1).unwrap();
    let mut out = vec![0f32; m.n_vocab];
    assert_eq!(m.eval(1, &mut out), Status::SUTRA_OK);
    // Shard 2 holds the embedding and head, not the largest tensor (a feed-forward matrix).
    let shard = dir.join(shard_name(2));
    let len = std::fs::metadata(&shard).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&shard).unwrap().set_len(len / 2).unwrap();
    assert_eq!(m.eval(2, &mut out), Status::SUTRA_ERR_IO);
    let msg = last_error();
    assert!(msg.contains(&shard_name(2)) && msg.contains("truncated"), "{msg}");
    drop(m);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The load error of the folder `dir` through the C API.
fn load_err(dir: &Path) -> (Status, String) {
    match CModel::load(dir, 1) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn bad_indexes_are_errors_naming_the_file_and_tensor() {
    let dir = tmp("bad");
    write_sharded(&dir);
    let good = index_of(&dir);
    let some_tensor = "model.layers.0.attention.key.weight";
    assert_eq!(good["weight_map"][some_tensor], shard_name(3));

    // A shard the index names but the folder lacks: an I/O error naming it.
    let mut idx = good.clone();
    idx["weight_map"][some_tensor] = "model-00004-of-00003.safetensors".into();
    write_index(&dir, &idx);
    let (st, msg) = load_err(&dir);
    assert_eq!(st, Status::SUTRA_ERR_IO, "{msg}");
    assert!(msg.contains("model-00004-of-00003.safetensors"), "{msg}");

    // Shard names that leave the folder.
    for escaping in ["../model-00003-of-00003.safetensors", "/etc/passwd", "sub/../../x.safetensors", ""] {
        let mut idx = good.clone();
        idx["weight_map"][some_tensor] = escaping.into();
        write_index(&dir, &idx);
        let (st, msg) = load_err(&dir);
        assert_eq!(st, Status::SUTRA_ERR_FORMAT, "{escaping}: {msg}");
        assert!(msg.contains(&format!("'{escaping}'")) && msg.contains(some_tensor), "{msg}");
        assert!(msg.contains("model.safetensors.index.json"), "{msg}");
    }

    // A tensor listed in a shard that does not hold it.
    let mut idx = good.clone();
    idx["weight_map"][some_tensor] = shard_name(1).into();
    write_index(&dir, &idx);
    let (st, msg) = load_err(&dir);
    assert_eq!(st, Status::SUTRA_ERR_FORMAT, "{msg}");
    assert!(msg.contains(some_tensor) && msg.contains(&shard_name(1)), "{msg}");

    // A tensor listed that no shard holds.
    let mut idx = good.clone();
    idx["weight_map"]["model.layers.0.attention.nonexistent"] = shard_name(3).into();
    write_index(&dir, &idx);
    let (st, msg) = load_err(&dir);
    assert_eq!(st, Status::SUTRA_ERR_FORMAT, "{msg}");
    assert!(msg.contains("model.layers.0.attention.nonexistent"), "{msg}");

    // An index that is not JSON, or has no weight_map.
    std::fs::write(dir.join("model.safetensors.index.json"), "{\"weight_map\": ").unwrap();
    let (st, msg) = load_err(&dir);
    assert_eq!(st, Status::SUTRA_ERR_FORMAT, "{msg}");
    assert!(msg.contains("model.safetensors.index.json") && msg.contains("JSON"), "{msg}");
    write_index(&dir, &serde_json::json!({"metadata": {}}));
    let (st, msg) = load_err(&dir);
    assert_eq!(st, Status::SUTRA_ERR_FORMAT, "{msg}");
    assert!(msg.contains("weight_map"), "{msg}");

    // The same tensor in two shards.
    write_index(&dir, &good);
    let tensors = hf_tensors();
    let mut part: Vec<TensorBytes> = tensors.values().filter(|t| shard_of(&t.0) == 1).cloned().collect();
    part.push(tensors[some_tensor].clone());
    write(&dir.join(shard_name(1)), &part, None).unwrap();
    let (st, msg) = load_err(&dir);
    assert_eq!(st, Status::SUTRA_ERR_FORMAT, "{msg}");
    assert!(msg.contains(some_tensor) && msg.contains("two shards"), "{msg}");

    // A folder with neither model.safetensors nor an index.
    let empty = tmp("empty");
    std::fs::copy(hf_dir().join("config.json"), empty.join("config.json")).unwrap();
    let (st, msg) = load_err(&empty);
    assert_eq!(st, Status::SUTRA_ERR_IO, "{msg}");
    assert!(msg.contains("model.safetensors.index.json"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&empty).unwrap();
}

/// `[rows, cols]` f32 bytes → `[cols, rows]`.
fn transpose_bytes(t: &TensorBytes) -> TensorBytes {
    assert_eq!(t.1, DType::F32);
    let (rows, cols) = (t.2[0], t.2[1]);
    let src: Vec<f32> = t.3.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let mut dst = vec![0f32; src.len()];
    for r in 0..rows {
        for c in 0..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
    (t.0.clone(), DType::F32, vec![cols, rows], dst.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// The fixture in flash-linear-attention's spelling: `attn.{r,k,v,o}_proj`, the low-rank
/// matrices as `nn.Linear` weights with the `*0` vectors as their biases, `attn.g_norm`,
/// `attn_norm`/`ffn_norm`, `ffn.*`; layer 1's six mixes fused into `attn.x_x` [6, C].
fn fla_tensors() -> Vec<TensorBytes> {
    let src = hf_tensors();
    let mut out = Vec::new();
    let mut fused: Vec<u8> = Vec::new();
    for (k, t) in &src {
        let rename = |n: String| (n, t.1, t.2.clone(), t.3.clone());
        let Some(rest) = k.strip_prefix("model.layers.") else {
            out.push(t.clone());
            continue;
        };
        let (l, rest) = rest.split_once('.').unwrap();
        let p = format!("model.layers.{l}.");
        let n = if let Some(a) = rest.strip_prefix("attention.") {
            match a {
                "receptance.weight" => rename(format!("{p}attn.r_proj.weight")),
                "key.weight" => rename(format!("{p}attn.k_proj.weight")),
                "value.weight" => rename(format!("{p}attn.v_proj.weight")),
                "output.weight" => rename(format!("{p}attn.o_proj.weight")),
                "ln_x.weight" | "ln_x.bias" => rename(format!("{p}attn.g_norm.{}", &a[5..])),
                "w0" | "a0" | "v0" => (format!("{p}attn.{}_lora.lora.2.bias", &a[..1]), t.1, vec![t.2[2]], t.3.clone()),
                "w1" | "a1" | "v1" | "g1" => {
                    transpose_bytes(&rename(format!("{p}attn.{}_lora.lora.0.weight", &a[..1])))
                }
                "w2" | "a2" | "v2" | "g2" => {
                    transpose_bytes(&rename(format!("{p}attn.{}_lora.lora.2.weight", &a[..1])))
                }
                "x_r" | "x_w" | "x_k" | "x_v" | "x_a" | "x_g" if l == "1" => continue,
                other => rename(format!("{p}attn.{other}")),
            }
        } else if let Some(f) = rest.strip_prefix("feed_forward.") {
            rename(format!("{p}ffn.{f}"))
        } else if let Some(n) = rest.strip_prefix("ln1.") {
            rename(format!("{p}attn_norm.{n}"))
        } else if let Some(n) = rest.strip_prefix("ln2.") {
            rename(format!("{p}ffn_norm.{n}"))
        } else {
            t.clone()
        };
        out.push(n);
    }
    for m in ["x_r", "x_w", "x_k", "x_v", "x_a", "x_g"] {
        fused.extend_from_slice(&src[&format!("model.layers.1.attention.{m}")].3);
    }
    out.push(("model.layers.1.attn.x_x".into(), DType::F32, vec![6, 128], fused));
    out
}

#[test]
fn flash_linear_attention_spelling_gives_the_golden_logits() {
    let dir = tmp("fla");
    std::fs::copy(hf_dir().join("config.json"), dir.join("config.json")).unwrap();
    let tensors = fla_tensors();
    assert!(tensors.iter().any(|t| t.0 == "model.layers.0.attn.w_lora.lora.0.weight" && t.2 == [32, 128]));
    write(&dir.join("model.safetensors"), &tensors, None).unwrap();
    let (toks, want, _) = golden();
    let got = c_logits(&dir, &toks, 2);
    assert_close(&got, &want, 1e-4, 1e-3, "rwkv7 in flash-linear-attention names");

    // A name outside the layout is refused, naming it.
    let mut extra = tensors.clone();
    extra.push(("model.layers.0.attn.mystery".into(), DType::F32, vec![1], vec![0; 4]));
    write(&dir.join("model.safetensors"), &extra, None).unwrap();
    let (st, msg) = load_err(&dir);
    assert_eq!(st, Status::SUTRA_ERR_UNSUPPORTED, "{msg}");
    assert!(msg.contains("model.layers.0.attn.mystery"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_config_that_disagrees_with_the_weights_is_refused() {
    let dir = tmp("config");
    std::fs::copy(hf_dir().join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf_dir().join("config.json")).unwrap()).unwrap();
    cfg["num_hidden_layers"] = 3.into();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let (st, msg) = load_err(&dir);
    assert_eq!(st, Status::SUTRA_ERR_FORMAT, "{msg}");
    assert!(msg.contains("num_hidden_layers") && msg.contains("config.json"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn transformers_mamba_folders_load_by_folder_name() {
    for arch in ["mamba1", "mamba2"] {
        let dir = fixture(&format!("golden/{arch}"));
        let (toks, want, _) = expected(&dir.join("expected.safetensors"), "logits");
        let got = c_logits(&dir, &toks, 2);
        assert_close(&got, &want, 1e-4, 1e-3, &format!("{arch} folder"));
        assert_eq!(Model::load(&dir, &ModelParams::default()).unwrap().info().arch_name, arch);
    }
}

/// The transformers RWKV-5.2 / RWKV-6 folders (tests/fixtures/formats/rwkv{5,6}-hf, written by
/// scripts/hf_rwkv56.py from the golden cases with transformers' converter renames; llama.cpp's
/// convert_hf_to_gguf.py reads the rwkv6 one) give the golden logits, as the folder and as its
/// model.safetensors named directly. The rwkv6 config's `rescale_every` 1 is not applied in
/// f32, as transformers does not apply it to f32 weights.
#[test]
fn transformers_rwkv5_and_rwkv6_folders_give_the_golden_logits() {
    for arch in ["rwkv5", "rwkv6"] {
        let dir = fixture(&format!("formats/{arch}-hf"));
        let (toks, want, _) = expected(&fixture(&format!("golden/{arch}/expected.safetensors")), "logits");
        for threads in [1, 2] {
            let got = c_logits(&dir, &toks, threads);
            assert_close(&got, &want, 1e-4, 1e-3, &format!("{arch}-hf folder, {threads} threads"));
        }
        let got = c_logits(&dir.join("model.safetensors"), &toks, 1);
        assert_close(&got, &want, 1e-4, 1e-3, &format!("{arch}-hf/model.safetensors"));
        let m = Model::load(&dir, &ModelParams::default()).unwrap();
        assert_eq!(m.info().arch_name, arch);
        assert_eq!((m.info().n_layer, m.info().n_embd, m.info().n_vocab), (2, 128, 256));
    }
}

/// A tensor outside the transformers RWKV-5/6 layout is unsupported, naming it and the layout;
/// a config that disagrees with the weights is a format error naming the key.
#[test]
fn transformers_rwkv56_errors_name_the_tensor_and_key() {
    let src = fixture("formats/rwkv6-hf");
    let f = SafetensorsFile::open(&src.join("model.safetensors"), false).unwrap();
    let mut t: Vec<TensorBytes> =
        f.tensors.iter().map(|(k, t)| (k.clone(), t.dtype, t.shape.clone(), t.bytes().to_vec())).collect();
    let dir = tmp("rwkv56-unknown");
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    t.push(("rwkv.blocks.1.attention.mystery".into(), DType::F32, vec![2], vec![0; 8]));
    write(&dir.join("model.safetensors"), &t, None).unwrap();
    let (st, msg) = load_err(&dir);
    assert_eq!(st, Status::SUTRA_ERR_UNSUPPORTED, "{msg}");
    assert!(msg.contains("rwkv.blocks.1.attention.mystery") && msg.contains("Rwkv6ForCausalLM"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();

    let dir = tmp("rwkv56-config");
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg["hidden_size"] = 256.into();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let (st, msg) = load_err(&dir);
    assert_eq!(st, Status::SUTRA_ERR_FORMAT, "{msg}");
    assert!(msg.contains("hidden_size") && msg.contains("rwkv.embeddings.weight"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}
