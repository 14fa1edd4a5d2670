//! Every bad input gets its own status and a message naming the problem — never a crash —
//! through the Rust API and through the C API.

mod common;
use common::*;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};
use sutra::ffi::*;
use sutra::format::SafetensorsFile;
use sutra::tensor::DType;
use sutra::{Error, Model, ModelParams, Session, Status};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sutra-errors-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn load_err(path: &Path) -> Error {
    match Model::load(path, &ModelParams::default()) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e,
    }
}

fn golden() -> PathBuf {
    fixture("golden/rwkv7/model.safetensors")
}

/// Rewrites the golden model with `edit` applied to its tensor list.
fn rewrite(name: &str, edit: impl FnOnce(&mut Vec<(String, DType, Vec<usize>, Vec<u8>)>)) -> PathBuf {
    let f = SafetensorsFile::open(&golden(), false).unwrap();
    let mut ts: Vec<_> =
        f.tensors.values().map(|t| (t.name.clone(), t.dtype, t.shape.clone(), t.bytes().to_vec())).collect();
    edit(&mut ts);
    let p = tmp(name);
    sutra::format::safetensors::write(&p, &ts, None).unwrap();
    p
}

#[test]
fn missing_file_is_io_naming_the_path() {
    let e = load_err(Path::new("/no/such/model.safetensors"));
    assert_eq!(e.status(), Status::SUTRA_ERR_IO);
    assert!(e.to_string().contains("/no/such/model.safetensors"), "{e}");
}

#[test]
fn empty_file_is_format() {
    let p = tmp("empty.safetensors");
    std::fs::write(&p, b"").unwrap();
    let e = load_err(&p);
    assert_eq!(e.status(), Status::SUTRA_ERR_FORMAT);
    assert!(e.to_string().contains("empty"), "{e}");
}

#[test]
fn truncated_file_is_format() {
    let bytes = std::fs::read(golden()).unwrap();
    for cut in [4, 100, bytes.len() / 2, bytes.len() - 1] {
        let p = tmp(&format!("trunc-{cut}.safetensors"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = load_err(&p);
        assert_eq!(e.status(), Status::SUTRA_ERR_FORMAT, "cut {cut}: {e}");
        assert!(e.to_string().contains("trunc") || e.to_string().contains("too short"), "cut {cut}: {e}");
    }
}

#[test]
fn garbage_header_is_format() {
    let p = tmp("garbage.safetensors");
    let mut g = 40u64.to_le_bytes().to_vec();
    g.extend_from_slice(b"this is not json at all, just some bytes");
    std::fs::write(&p, &g).unwrap();
    let e = load_err(&p);
    assert_eq!(e.status(), Status::SUTRA_ERR_FORMAT);
    assert!(e.to_string().contains("JSON"), "{e}");
    // Random bytes (a huge header length).
    std::fs::write(&p, [0xffu8; 64]).unwrap();
    assert_eq!(load_err(&p).status(), Status::SUTRA_ERR_FORMAT);
}

#[test]
fn inconsistent_tensor_shape_names_the_tensor() {
    let p = rewrite("badshape.safetensors", |ts| {
        let t = ts.iter_mut().find(|t| t.0 == "blocks.1.att.key.weight").unwrap();
        let (r, c) = (t.2[0], t.2[1]);
        t.2 = vec![r / 2, c * 2];
    });
    let e = load_err(&p);
    assert_eq!(e.status(), Status::SUTRA_ERR_FORMAT);
    let m = e.to_string();
    assert!(m.contains("blocks.1.att.key.weight") && m.contains("[64, 256]") && m.contains("[128, 128]"), "{m}");
}

#[test]
fn header_shape_disagreeing_with_data_is_format() {
    // A header whose shape needs more bytes than its data_offsets hold.
    let header = br#"{"emb.weight":{"dtype":"F32","shape":[4,4],"data_offsets":[0,32]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header);
    b.extend_from_slice(&[0u8; 32]);
    let p = tmp("shape-bytes.safetensors");
    std::fs::write(&p, &b).unwrap();
    let e = load_err(&p);
    assert_eq!(e.status(), Status::SUTRA_ERR_FORMAT);
    assert!(e.to_string().contains("emb.weight"), "{e}");
}

#[test]
fn missing_layer_tensor_is_named() {
    let p = rewrite("missing.safetensors", |ts| ts.retain(|t| t.0 != "blocks.1.ffn.value.weight"));
    let e = load_err(&p);
    assert_eq!(e.status(), Status::SUTRA_ERR_FORMAT);
    assert!(e.to_string().contains("blocks.1.ffn.value.weight"), "{e}");
}

#[test]
fn unsupported_architecture_says_what_was_found() {
    let p = tmp("other.safetensors");
    let data = vec![0u8; 64];
    sutra::format::safetensors::write(
        &p,
        &[("encoder.layer.0.attention.q.weight".into(), DType::F32, vec![4, 4], data)],
        None,
    )
    .unwrap();
    let e = load_err(&p);
    assert_eq!(e.status(), Status::SUTRA_ERR_UNSUPPORTED);
    assert!(e.to_string().contains("encoder.layer.0.attention.q.weight"), "{e}");
}

#[test]
fn bad_tokens_are_invalid_arguments() {
    let m = load(&golden(), 1);
    let mut s = Session::new(&m);
    let before = s.state().to_vec();
    let e = s.eval(&[1, 256, 2], None).unwrap_err();
    assert_eq!(e.status(), Status::SUTRA_ERR_INVALID_ARGUMENT);
    assert!(e.to_string().contains("256") && e.to_string().contains("position 1"), "{e}");
    let e = s.eval(&[], None).unwrap_err();
    assert_eq!(e.status(), Status::SUTRA_ERR_INVALID_ARGUMENT);
    assert_eq!(s.state(), &before[..], "a rejected eval must not touch the state");
}

#[test]
fn foreign_or_corrupted_state_is_rejected_and_session_unchanged() {
    let a = load(&golden(), 1);
    let b = load(&repo("models/rwkv7-shakespeare-6x256/model-bf16.safetensors"), 1);
    let mut sa = Session::new(&a);
    sa.eval(&[1, 2, 3], None).unwrap();
    let mut sb = Session::new(&b);
    sb.eval(&[5, 6], None).unwrap();
    let before = sa.state().to_vec();
    let good = sa.state_to_vec();

    let foreign = sb.state_to_vec();
    let e = sa.load_state(&foreign).unwrap_err();
    assert_eq!(e.status(), Status::SUTRA_ERR_FORMAT);
    assert!(e.to_string().contains("another shape"), "{e}");

    let mut corrupt = good.clone();
    corrupt[100] ^= 0x40;
    let e = sa.load_state(&corrupt).unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");

    let e = sa.load_state(&good[..good.len() - 9]).unwrap_err();
    assert_eq!(e.status(), Status::SUTRA_ERR_FORMAT);
    let e = sa.load_state(&good[..10]).unwrap_err();
    assert_eq!(e.status(), Status::SUTRA_ERR_FORMAT);
    let mut magic = good.clone();
    magic[0] = b'X';
    assert!(sa.load_state(&magic).unwrap_err().to_string().contains("magic"));
    let mut version = good.clone();
    version[8] = 9;
    assert!(sa.load_state(&version).unwrap_err().to_string().contains("version"));
    // The reserved header bytes must be zero, even under a valid checksum (FNV-1a 64 of
    // everything before the checksum, recomputed here).
    let mut reserved = good.clone();
    reserved[13] = 1;
    let end = reserved.len() - 8;
    let sum =
        reserved[..end].iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    reserved[end..].copy_from_slice(&sum.to_le_bytes());
    let e = sa.load_state(&reserved).unwrap_err();
    assert!(e.to_string().contains("reserved"), "{e}");
    assert_eq!(sa.state(), &before[..]);
    sa.load_state(&good).unwrap();
    assert_eq!(sa.state(), &before[..]);
}

fn last_error() -> String {
    // SAFETY: sutra_last_error never returns NULL and the string lives until our next call.
    unsafe { CStr::from_ptr(sutra_last_error()) }.to_string_lossy().into_owned()
}

#[test]
fn c_api_null_pointers_are_invalid_arguments() {
    let path = CString::new(golden().display().to_string()).unwrap();
    unsafe {
        let mut m: *mut sutra_model = null_mut();
        assert_eq!(sutra_model_load(null(), null(), &mut m), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("path is NULL"), "{}", last_error());
        assert_eq!(sutra_model_load(path.as_ptr(), null(), null_mut()), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("out_model"));
        assert_eq!(sutra_model_load_from_memory(null(), 10, null(), &mut m), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert!(m.is_null(), "out-params are written only on success");
        assert_eq!(sutra_model_n_vocab(null()), -1);
        let mut info = std::mem::MaybeUninit::<sutra_model_info>::uninit();
        assert_eq!(sutra_model_get_info(null(), info.as_mut_ptr()), Status::SUTRA_ERR_INVALID_ARGUMENT);
        sutra_model_free(null_mut());
        sutra_session_free(null_mut());

        assert_eq!(sutra_model_load(path.as_ptr(), null(), &mut m), Status::SUTRA_OK);
        assert_eq!(sutra_model_get_info(m, null_mut()), Status::SUTRA_ERR_INVALID_ARGUMENT);
        let mut s: *mut sutra_session = null_mut();
        assert_eq!(sutra_session_new(null(), &mut s), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert_eq!(sutra_session_new(m, null_mut()), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert_eq!(sutra_session_new(m, &mut s), Status::SUTRA_OK);
        let toks = [1i32, 2, 3];
        assert_eq!(sutra_session_eval(null_mut(), toks.as_ptr(), 3, null_mut()), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert_eq!(sutra_session_eval(s, null(), 3, null_mut()), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert_eq!(sutra_session_eval(s, toks.as_ptr(), 0, null_mut()), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("n_tokens is 0"));
        let neg = [-1i32];
        assert_eq!(sutra_session_eval(s, neg.as_ptr(), 1, null_mut()), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("negative"));
        let big = [100_000i32];
        assert_eq!(sutra_session_eval(s, big.as_ptr(), 1, null_mut()), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("100000"));
        assert_eq!(sutra_session_reset(null_mut()), Status::SUTRA_ERR_INVALID_ARGUMENT);
        let mut c: *mut sutra_session = null_mut();
        assert_eq!(sutra_session_clone(null(), &mut c), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert_eq!(sutra_session_clone(s, null_mut()), Status::SUTRA_ERR_INVALID_ARGUMENT);
        let mut n = 0usize;
        assert_eq!(sutra_session_state_size(null(), &mut n), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert_eq!(sutra_session_state_size(s, null_mut()), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert_eq!(sutra_session_state_size(s, &mut n), Status::SUTRA_OK);
        let mut buf = vec![0u8; n];
        assert_eq!(sutra_session_state_save(null(), buf.as_mut_ptr(), n), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert_eq!(sutra_session_state_save(s, null_mut(), n), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert_eq!(sutra_session_state_save(s, buf.as_mut_ptr(), n - 1), Status::SUTRA_ERR_BUFFER_TOO_SMALL);
        assert!(last_error().contains(&n.to_string()), "{}", last_error());
        assert_eq!(sutra_session_state_save(s, buf.as_mut_ptr(), n), Status::SUTRA_OK);
        assert_eq!(sutra_session_state_load(null_mut(), buf.as_ptr(), n), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert_eq!(sutra_session_state_load(s, null(), n), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert_eq!(sutra_session_state_load(s, buf.as_ptr(), n - 3), Status::SUTRA_ERR_FORMAT);
        assert_eq!(sutra_session_state_load(s, buf.as_ptr(), n), Status::SUTRA_OK);
        let bad = CString::new("/definitely/missing.safetensors").unwrap();
        let mut m2: *mut sutra_model = null_mut();
        assert_eq!(sutra_model_load(bad.as_ptr(), null(), &mut m2), Status::SUTRA_ERR_IO);
        assert!(last_error().contains("/definitely/missing.safetensors"));
        assert!(m2.is_null());
        sutra_session_free(s);
        sutra_model_free(m);
    }
}

#[test]
fn c_api_bad_params_and_cancel() {
    let path = CString::new(golden().display().to_string()).unwrap();
    unsafe extern "C" fn cancel(_f: f32, ud: *mut std::ffi::c_void) -> bool {
        // SAFETY: the test passes a pointer to a live u32 counter.
        unsafe { *(ud as *mut u32) += 1 };
        false
    }
    unsafe {
        let mut m: *mut sutra_model = null_mut();
        let mut p = sutra_model_default_params();
        p.n_threads = -3;
        assert_eq!(sutra_model_load(path.as_ptr(), &p, &mut m), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("n_threads"));
        let mut calls = 0u32;
        let mut p = sutra_model_default_params();
        p.progress_callback = Some(cancel);
        p.progress_user_data = (&mut calls as *mut u32).cast();
        assert_eq!(sutra_model_load(path.as_ptr(), &p, &mut m), Status::SUTRA_ERR_CANCELLED);
        assert_eq!(calls, 1);
        assert!(m.is_null());
        // From memory: a valid buffer loads, an empty one is rejected.
        let bytes = std::fs::read(golden()).unwrap();
        assert_eq!(sutra_model_load_from_memory(bytes.as_ptr(), bytes.len(), null(), &mut m), Status::SUTRA_OK);
        assert_eq!(sutra_model_n_vocab(m), 256);
        sutra_model_free(m);
        let mut m: *mut sutra_model = null_mut();
        assert_eq!(sutra_model_load_from_memory(bytes.as_ptr(), 0, null(), &mut m), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert_eq!(sutra_model_load_from_memory(bytes.as_ptr(), 77, null(), &mut m), Status::SUTRA_ERR_FORMAT);
        assert!(m.is_null());
    }
}
