//! PyTorch `.pth` checkpoints as `torch.save` writes them (tests/fixtures/formats, see its
//! README): through the C API they give the golden logits; `sutra convert` writes the same
//! weights as safetensors (and dequantizes GGUF blocks as gguf-py does); malicious archives
//! and pickles are format errors naming the problem.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use sutra::format::pth::zip_entries;
use sutra::{Error, Model, ModelParams, Status};

fn formats(file: &str) -> PathBuf {
    fixture(&format!("formats/{file}"))
}

fn tmp(name: &str) -> PathBuf {
    tmp_path("pth", name)
}

fn load_err(bytes: &[u8], name: &str) -> Error {
    load_err_at(&tmp(name), bytes)
}

fn assert_format_error(bytes: &[u8], name: &str, needle: &str) {
    let e = load_err(bytes, name);
    assert_eq!(e.status(), Status::SUTRA_ERR_FORMAT, "{name}: {e}");
    assert!(e.to_string().contains(needle), "{name}: '{needle}' not in: {e}");
}

#[test]
fn pth_gives_the_golden_logits() {
    for (file, want) in [("rwkv7.pth", "expected-bf16.safetensors"), ("rwkv7-fp32.pth", "expected.safetensors")] {
        let (toks, want, _) = expected(&fixture(&format!("golden/rwkv7/{want}")), "logits");
        for threads in [1, 2] {
            let got = c_logits(&formats(file), &toks, threads);
            assert_close(&got, &want, 1e-4, 1e-3, &format!("{file}, {threads} threads"));
        }
    }
}

/// The tensors point into the mapped archive: same names, types and bytes as the
/// safetensors file the state dict was saved from.
#[test]
fn pth_tensors_are_the_state_dict_in_place() {
    let (pth, _) = sutra::format::open(&formats("rwkv7.pth"), true).unwrap();
    let st = sutra::format::SafetensorsFile::open(&fixture("golden/rwkv7/model-bf16.safetensors"), true).unwrap();
    assert_eq!(pth.format, sutra::format::Format::Pth);
    assert_eq!(pth.tensors.keys().collect::<Vec<_>>(), st.tensors.keys().collect::<Vec<_>>());
    let base = pth.tensors.values().next().unwrap().storage().bytes().as_ptr() as usize;
    for (name, t) in &pth.tensors {
        let s = &st.tensors[name];
        assert_eq!((t.dtype, &t.shape), (s.dtype, &s.shape), "{name}");
        assert_eq!(t.bytes(), s.bytes(), "{name}");
        let at = t.bytes().as_ptr() as usize;
        assert!(at >= base && at < base + pth.n_bytes, "{name} is a copy, not the mapped archive");
    }
}

/// The converted file loads as the same model: `.pth` and F32 GGUF give exactly the source's
/// logits; a quantized GGUF, dequantized, gives llama.cpp's logits on the same file
/// dequantized to F32 by gguf-py.
#[test]
fn convert_writes_the_same_weights_as_safetensors() {
    let exe = env!("CARGO_BIN_EXE_sutra");
    let cases = [
        ("rwkv7.pth", "golden/rwkv7/expected-bf16.safetensors", "logits"),
        ("rwkv7-F32.gguf", "formats/rwkv7-F32-gguf-expected.safetensors", "logits"),
        ("mamba1-Q4_0.gguf", "formats/mamba1-Q4_0-gguf-expected.safetensors", "logits_dequant_f32"),
        ("rwkv7-Q4_K_M.gguf", "formats/rwkv7-Q4_K_M-gguf-expected.safetensors", "logits_dequant_f32"),
        ("mamba2-Q8_0.gguf", "formats/mamba2-Q8_0-gguf-expected.safetensors", "logits_dequant_f32"),
    ];
    for (file, want, key) in cases {
        let out = tmp(&format!("{file}.safetensors"));
        let o = command(exe).arg("convert").arg(formats(file)).arg(&out).output().unwrap();
        assert!(o.status.success(), "{file}: {}", String::from_utf8_lossy(&o.stderr));
        let (toks, want, _) = expected(&fixture(want), key);
        let got = c_logits(&out, &toks, 2);
        assert_close(&got, &want, 1e-4, 1e-3, &format!("{file} converted"));
        let f = sutra::format::SafetensorsFile::open(&out, true).unwrap();
        assert_eq!(f.format, sutra::format::Format::Safetensors);
    }
    // The output is never the input.
    let o = command(exe).arg("convert").arg(formats("rwkv7.pth")).arg(formats("rwkv7.pth")).output().unwrap();
    assert!(!o.status.success());
}

/// A zip archive of stored entries (what torch.save writes), for building malicious files.
fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let (mut out, mut cd) = (Vec::new(), Vec::new());
    for (name, data) in entries {
        let off = out.len() as u32;
        let mut h = Vec::new();
        h.extend_from_slice(b"PK\x03\x04");
        h.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        h.extend_from_slice(&0u32.to_le_bytes()); // crc (not checked)
        h.extend_from_slice(&(data.len() as u32).to_le_bytes());
        h.extend_from_slice(&(data.len() as u32).to_le_bytes());
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        cd.extend_from_slice(b"PK\x01\x02");
        cd.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        cd.extend_from_slice(&0u32.to_le_bytes());
        cd.extend_from_slice(&(data.len() as u32).to_le_bytes());
        cd.extend_from_slice(&(data.len() as u32).to_le_bytes());
        cd.extend_from_slice(&(name.len() as u16).to_le_bytes());
        cd.extend_from_slice(&[0; 12]);
        cd.extend_from_slice(&off.to_le_bytes());
        cd.extend_from_slice(name.as_bytes());
    }
    let cd_off = out.len() as u32;
    out.extend_from_slice(&cd);
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(cd.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_off.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// The entries of a real archive, as (name, bytes).
fn entries_of(path: &Path) -> Vec<(String, Vec<u8>)> {
    let b = std::fs::read(path).unwrap();
    let es = zip_entries(&b, "x").unwrap();
    es.iter().map(|e| (e.name.clone(), b[e.start..e.start + e.len].to_vec())).collect()
}

/// The archive rebuilt from `entries` with `edit` applied to data.pkl.
fn rebuilt(entries: &[(String, Vec<u8>)], edit: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut es = entries.to_vec();
    for (n, d) in &mut es {
        if n.ends_with("/data.pkl") {
            edit(d);
        }
    }
    let refs: Vec<(&str, &[u8])> = es.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
    zip(&refs)
}

fn replace(d: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let at = d.windows(from.len()).position(|w| w == from).expect("pattern in data.pkl");
    d[at..at + to.len()].copy_from_slice(to);
}

#[test]
fn malicious_pth_files_are_format_errors_naming_the_problem() {
    let es = entries_of(&formats("rwkv7.pth"));
    // The rebuilt archive itself loads (the builder is sound).
    let ok = rebuilt(&es, |_| {});
    let p = tmp("rebuilt.pth");
    std::fs::write(&p, &ok).unwrap();
    Model::load(&p, &ModelParams::default()).unwrap();

    // A pickle that names another callable: refused by name, nothing imported or run.
    let bad = rebuilt(&es, |d| replace(d, b"collections\nOrderedDict", b"subprocess\ncheck_output"));
    assert_format_error(&bad, "callable.pth", "'subprocess.check_output'");
    let bad = rebuilt(&es, |d| replace(d, b"torch._utils\n_rebuild_tensor_v2", b"torch._utils\n_rebuild_parameter"));
    assert_format_error(&bad, "rebuild.pth", "'torch._utils._rebuild_parameter'");

    // Nested archives: a second checkpoint inside, or another data.pkl.
    let inner = std::fs::read(formats("rwkv7.pth")).unwrap();
    let mut nested: Vec<(&str, &[u8])> = es.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
    nested.push(("rwkv7/inner.pth", &inner));
    assert_format_error(&zip(&nested), "nested.pth", "nested archives");
    let pkl = es.iter().find(|(n, _)| n.ends_with("data.pkl")).unwrap().1.clone();
    let mut two: Vec<(&str, &[u8])> = es.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
    two.push(("other/data.pkl", &pkl));
    assert_format_error(&zip(&two), "two.pth", "nested archives");

    // A storage whose element count disagrees with its entry, a view past its storage, a
    // storage with no entry.
    let bad = rebuilt(&es, |d| replace(d, b"X\x01\x00\x00\x001q", b"X\x01\x00\x00\x00zq"));
    assert_format_error(&bad, "nostorage.pth", "storage 'z' has no entry");
    let bad = rebuilt(&es, |d| replace(d, b"M\x00\x0ct", b"M\x00\x0dt"));
    assert_format_error(&bad, "numel.pth", "storage '1' holds 6144 bytes, but its pickle says 3328 elements");
    let bad = rebuilt(&es, |d| replace(d, b"QK\x00K\x01K\x01K\x80\x87", b"QK\x05K\x01K\x01K\x80\x87"));
    assert_format_error(&bad, "offset.pth", "reaches past its storage");

    // An entry pointing past the end of the file, and a truncated archive.
    let mut past = ok.clone();
    let cd = past.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    past[cd + 20..cd + 28].copy_from_slice(&[0, 0, 0, 0x10, 0, 0, 0, 0x10]);
    assert_format_error(&past, "past.pth", "points past the end of the file");
    assert_format_error(&ok[..ok.len() / 2], "truncated.pth", "truncated zip archive");

    // A compressed entry is not what torch writes: unsupported, naming it.
    let mut comp = ok.clone();
    comp[cd + 10] = 8;
    let e = load_err(&comp, "deflate.pth");
    assert_eq!(e.status(), Status::SUTRA_ERR_UNSUPPORTED, "{e}");
    assert!(e.to_string().contains("compressed"), "{e}");
}

/// A buffer handed over by an application loads whatever its container: a `.pth` and a GGUF
/// from memory give what the files give, and a GGUF's tokenizer loads from its bytes.
#[test]
fn every_format_loads_from_memory() {
    for file in ["rwkv7.pth", "rwkv7-Q4_0.gguf", "mamba2-Q8_0.gguf"] {
        let bytes = std::fs::read(formats(file)).unwrap();
        let from_file = load(&formats(file), 1);
        let from_mem = Model::load_from_memory(&bytes, &ModelParams { n_threads: 1, ..Default::default() }).unwrap();
        let toks = [1u32, 7, 3, 200, 5];
        let v = from_file.info().n_vocab;
        let (mut a, mut b) = (vec![0f32; toks.len() * v], vec![0f32; toks.len() * v]);
        sutra::Session::new(&from_file).eval_all_logits(&toks, &mut a).unwrap();
        sutra::Session::new(&std::sync::Arc::new(from_mem)).eval_all_logits(&toks, &mut b).unwrap();
        assert_eq!(a, b, "{file}");
    }
    let bytes = std::fs::read(formats("rwkv7-F32.gguf")).unwrap();
    let mem = sutra::Tokenizer::from_bytes(&bytes, "rwkv7-F32.gguf").unwrap();
    let file = sutra::Tokenizer::from_file(&formats("rwkv7-F32.gguf")).unwrap();
    let text = "abc, the quick fox";
    assert_eq!(mem.encode(text, false).unwrap(), file.encode(text, false).unwrap());
    assert!(!mem.encode(text, false).unwrap().is_empty());
}

/// `sutra_model_get_info` names the container each file was read from.
#[test]
fn model_info_reports_the_format() {
    use sutra::ffi::*;
    for (path, want) in [
        (formats("rwkv7.pth"), sutra_format::Pth),
        (formats("rwkv7-Q8_0.gguf"), sutra_format::Gguf),
        (fixture("golden/rwkv7/model.safetensors"), sutra_format::Safetensors),
    ] {
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: valid pointers; the handle is freed below.
        unsafe {
            let mut m = std::ptr::null_mut();
            assert_eq!(sutra_model_load(c.as_ptr(), std::ptr::null(), &mut m), Status::SUTRA_OK);
            let mut info = std::mem::zeroed::<sutra_model_info>();
            assert_eq!(sutra_model_get_info(m, &mut info), Status::SUTRA_OK);
            assert_eq!(info.format, want, "{}", path.display());
            sutra_model_free(m);
        }
    }
}
