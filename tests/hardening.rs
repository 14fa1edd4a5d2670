//! Hostile and careless inputs (issue 13): each finding has a regression test here. No input
//! may abort the process, allocate far more than the input's own size, or corrupt what the
//! caller owns.

mod common;
use sutra::{Status, Tokenizer};

fn write_tmp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("sutra-hard-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A tokenizer.json naming a token id near 4e9 (70 bytes) or an added token at id 1e9 is a
/// format error, found before any id table is allocated (it used to abort the process or
/// allocate 24 GB).
#[test]
fn tokenizer_ids_far_beyond_the_vocabulary_are_refused() {
    let files = [
        ("huge-vocab-id.json", r#"{"model":{"type":"BPE","vocab":{"a":4000000000},"merges":[]}}"#.to_string()),
        (
            "huge-added-id.json",
            r#"{"model":{"type":"BPE","vocab":{"a":0,"b":1},"merges":[]},"added_tokens":[{"id":1000000000,"content":"<x>"}]}"#
                .to_string(),
        ),
    ];
    for (name, text) in files {
        let p = write_tmp(name, text.as_bytes());
        let t0 = std::time::Instant::now();
        let e = Tokenizer::from_file(&p).expect_err("accepted");
        assert_eq!(e.status(), Status::SUTRA_ERR_FORMAT, "{name}: {e}");
        assert!(e.to_string().contains("far beyond"), "{name}: {e}");
        assert!(t0.elapsed().as_secs() < 2, "{name}: took {:?}", t0.elapsed());
        std::fs::remove_file(&p).ok();
    }
    // A dense vocabulary with a few added tokens past it still loads.
    let ok = r#"{"model":{"type":"BPE","vocab":{"a":0,"b":1},"merges":[]},"added_tokens":[{"id":5,"content":"<x>"}]}"#;
    let p = write_tmp("ok.json", ok.as_bytes());
    let t = Tokenizer::from_file(&p).unwrap();
    assert_eq!(t.vocab_size(), 6);
    std::fs::remove_file(&p).ok();
}

/// A world vocabulary line with a huge id is refused naming the line, without allocating
/// the table first.
#[test]
fn world_vocabulary_ids_far_beyond_the_file_are_refused() {
    for (name, text) in [("w1.txt", "4000000000 'a' 1\n"), ("w2.txt", "0 'a' 1\n99999999 'b' 1\n")] {
        let p = write_tmp(name, text.as_bytes());
        let e = Tokenizer::from_file(&p).expect_err("accepted");
        assert_eq!(e.status(), Status::SUTRA_ERR_FORMAT, "{name}: {e}");
        assert!(e.to_string().contains("far beyond") && e.to_string().contains("line"), "{name}: {e}");
        std::fs::remove_file(&p).ok();
    }
}

fn quant_params(qtype: sutra::quant::QuantType) -> sutra::quant::QuantizeParams {
    sutra::quant::QuantizeParams { qtype, group: 32, method: sutra::quant::Method::Rtn, ..Default::default() }
}

/// Two quantizations into one folder at once (m.q4 and m.q8 used to share `m.partial`) both
/// succeed with their own contents; a user's own `m.partial` is left alone; the output is
/// byte-reproducible; quantizing onto the input is refused and leaves it intact.
#[test]
fn quantized_outputs_do_not_collide_and_are_reproducible() {
    use sutra::quant::{quantize_model, QuantType};
    let src = common::fixture("golden/rwkv7/model.safetensors");
    let dir = std::env::temp_dir().join(format!("sutra-hard-q-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let user = dir.join("m.partial");
    std::fs::write(&user, b"the user's own file").unwrap();
    let (q4, q8) = (dir.join("m.q4"), dir.join("m.q8"));
    std::thread::scope(|s| {
        let a = s.spawn(|| quantize_model(&src, &q4, &quant_params(QuantType::Q4), &mut |_| true));
        let b = s.spawn(|| quantize_model(&src, &q8, &quant_params(QuantType::Q8), &mut |_| true));
        a.join().unwrap().unwrap();
        b.join().unwrap().unwrap();
    });
    assert_eq!(std::fs::read(&user).unwrap(), b"the user's own file");
    assert_eq!(common::load(&q4, 1).info().weight_dtype, sutra::tensor::DType::Q4);
    assert_eq!(common::load(&q8, 1).info().weight_dtype, sutra::tensor::DType::Q8);
    let again = dir.join("m2.q4");
    quantize_model(&src, &again, &quant_params(QuantType::Q4), &mut |_| true).unwrap();
    assert!(std::fs::read(&q4).unwrap() == std::fs::read(&again).unwrap(), "quantized output is not reproducible");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 4, "temporary files left behind: {left:?}");
    // Onto its own input: refused, the input unchanged.
    let copy = dir.join("model.safetensors");
    std::fs::copy(&src, &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let e = quantize_model(&copy, &copy, &quant_params(QuantType::Q8), &mut |_| true).expect_err("accepted");
    assert_eq!(e.status(), Status::SUTRA_ERR_INVALID_ARGUMENT);
    assert!(e.to_string().contains("is the input file"), "{e}");
    assert!(std::fs::read(&copy).unwrap() == before);
    std::fs::remove_dir_all(&dir).ok();
}

/// The golden RWKV-7 checkpoint with one weight replaced by `bad` (and, with `dup`, the
/// header listing a tensor twice), written by hand.
fn poisoned(bad: f32, name: &str) -> std::path::PathBuf {
    let src = sutra::format::SafetensorsFile::open(&common::fixture("golden/rwkv7/model.safetensors"), false).unwrap();
    let tensors: Vec<sutra::format::safetensors::TensorBytes> = src
        .tensors
        .iter()
        .map(|(n, t)| {
            let mut v = t.to_f32_vec().unwrap();
            if n == "blocks.1.att.key.weight" {
                v[17] = bad;
            }
            (n.clone(), sutra::tensor::DType::F32, t.shape.clone(), bytemuck::cast_slice(&v).to_vec())
        })
        .collect();
    let p = std::env::temp_dir().join(format!("sutra-hard-{}-{name}.safetensors", std::process::id()));
    sutra::format::safetensors::write(&p, &tensors, None).unwrap();
    p
}

/// NaN/Inf weights: `check_finite` refuses the file naming the tensor and index; without it,
/// the logits are not finite and every sampler refuses them (greedy used to return token 0
/// with SUTRA_OK, so generation emitted token 0 forever).
#[test]
fn non_finite_weights_are_caught() {
    use sutra::{Model, ModelParams, Sampler, Session, Stage};
    for (bad, name) in [(f32::NAN, "nan"), (f32::INFINITY, "inf")] {
        let p = poisoned(bad, name);
        let e = Model::load(&p, &ModelParams { check_finite: true, ..Default::default() }).expect_err("accepted");
        assert_eq!(e.status(), Status::SUTRA_ERR_FORMAT);
        assert!(e.to_string().contains("blocks.1.att.key.weight") && e.to_string().contains("index 17"), "{e}");
        let m = common::load(&p, 1);
        let mut logits = vec![0f32; m.info().n_vocab];
        Session::new(&m).eval(&[1, 2, 3], Some(&mut logits)).unwrap();
        assert!(logits.iter().any(|l| !l.is_finite()));
        for stages in [vec![Stage::Greedy], vec![Stage::Temperature(0.0)], vec![Stage::TopK(5), Stage::Dist]] {
            let mut s = Sampler::new(1);
            for st in stages.clone() {
                s.add(st).unwrap();
            }
            let e = s.sample(&logits).expect_err("sampled from non-finite logits");
            assert_eq!(e.status(), Status::SUTRA_ERR_INVALID_ARGUMENT, "{stages:?}");
            assert!(e.to_string().contains("not finite"), "{e}");
        }
        std::fs::remove_file(&p).ok();
    }
}

/// A safetensors header naming a tensor twice (or a metadata key twice) is a format error;
/// it used to keep the last entry silently.
#[test]
fn duplicate_header_keys_are_refused() {
    let p = poisoned(0.5, "dup");
    let bytes = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap().trim_end().to_string();
    // Repeat the first tensor entry at the end of the object (same length budget via padding).
    let first = header.find("\"blocks.").unwrap();
    let end = header[first..].find('}').unwrap() + first + 1;
    let entry = header[first..end].to_string();
    for (what, new) in [
        ("tensor", format!("{},{}}}", &header[..header.len() - 1], entry)),
        ("metadata", header.replacen('{', "{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"},", 1)),
    ] {
        let mut out = (new.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(new.as_bytes());
        out.extend_from_slice(&bytes[8 + n..]);
        let e =
            sutra::format::SafetensorsFile::parse(std::sync::Arc::new(sutra::tensor::Storage::from_bytes(&out)), what)
                .err()
                .expect("duplicate accepted");
        assert_eq!(e.status(), Status::SUTRA_ERR_FORMAT, "{what}: {e}");
        assert!(e.to_string().contains("appears twice"), "{what}: {e}");
    }
    std::fs::remove_file(&p).ok();
}

/// Enum values from C are integers, checked: an out-of-range status has a name, and an
/// unknown qtype or method is an invalid argument naming the value (they used to be read as
/// Rust enums: undefined behaviour, mixing q8 and q4 code paths).
#[test]
fn c_enum_values_out_of_range_are_defined() {
    use sutra::ffi::*;
    // SAFETY: the returned pointers are static NUL-terminated strings.
    unsafe {
        let name = |v: i32| std::ffi::CStr::from_ptr(sutra_status_name(v)).to_str().unwrap().to_string();
        assert_eq!(name(3), "SUTRA_ERR_FORMAT");
        assert_eq!(name(42), "SUTRA_UNKNOWN_STATUS");
        assert_eq!(name(-1), "SUTRA_UNKNOWN_STATUS");
    }
    let src = std::ffi::CString::new(common::fixture("golden/rwkv7/model.safetensors").to_str().unwrap()).unwrap();
    let out_path = std::env::temp_dir().join(format!("sutra-hard-enum-{}.st", std::process::id()));
    let out = std::ffi::CString::new(out_path.to_str().unwrap()).unwrap();
    for (field, v) in [("qtype", 7), ("method", -3)] {
        let mut p = sutra_quantize_default_params();
        if field == "qtype" {
            p.qtype = v;
        } else {
            p.method = v;
        }
        // SAFETY: valid paths and params.
        let st = unsafe { sutra_quantize_model(src.as_ptr(), out.as_ptr(), &p, None, std::ptr::null_mut()) };
        assert_eq!(st, Status::SUTRA_ERR_INVALID_ARGUMENT, "{field} {v}");
        // SAFETY: static NUL-terminated message.
        let msg = unsafe { std::ffi::CStr::from_ptr(sutra_last_error()) }.to_str().unwrap().to_string();
        assert!(msg.contains(&format!("{field} {v}")), "{msg}");
        assert!(!out_path.exists());
    }
}

/// A mapped model file truncated by another process: the next evaluation is an I/O error
/// naming the file (it used to raise SIGBUS and kill the host).
#[test]
fn truncated_mapped_file_is_an_error_not_a_crash() {
    let p = std::env::temp_dir().join(format!("sutra-hard-trunc-{}.safetensors", std::process::id()));
    std::fs::copy(common::fixture("golden/rwkv7/model.safetensors"), &p).unwrap();
    let m = common::load(&p, 1);
    let mut s = sutra::Session::new(&m);
    let mut logits = vec![0f32; m.info().n_vocab];
    s.eval(&[1, 2], Some(&mut logits)).unwrap();
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(1000).unwrap();
    let e = s.eval(&[3], Some(&mut logits)).expect_err("evaluated over a truncated map");
    assert_eq!(e.status(), Status::SUTRA_ERR_IO);
    assert!(e.to_string().contains("truncated"), "{e}");
    std::fs::remove_file(&p).ok();
}

/// A WordPiece tokenizer whose unk_token is not in its vocabulary is refused at load (it used
/// to load and then fail every encode of an unknown word).
#[test]
fn wordpiece_without_its_unk_token_is_refused() {
    let text = r#"{"model":{"type":"WordPiece","unk_token":"[UNK]","vocab":{"a":0,"b":1}}}"#;
    let p = write_tmp("wp.json", text.as_bytes());
    let e = Tokenizer::from_file(&p).expect_err("accepted");
    assert_eq!(e.status(), Status::SUTRA_ERR_FORMAT);
    assert!(e.to_string().contains("[UNK]"), "{e}");
    std::fs::remove_file(&p).ok();
}

/// A logit bias on a token past the vocabulary is an error at sampling time naming the id and
/// the vocabulary (it was silently ignored); ids and a `top_k` past any vocabulary are
/// refused when the stage is added; a `top_k` at or above the vocabulary keeps every token.
#[test]
fn sampler_ids_and_top_k_past_the_vocabulary_are_refused() {
    use sutra::{Sampler, Stage};
    let logits = [0.5f32, 2.0, -1.0, 0.0];
    let mut s = Sampler::new(1);
    s.add(Stage::LogitBias(vec![(1, -5.0), (4, 3.0)])).unwrap();
    s.add(Stage::Greedy).unwrap();
    let e = s.sample(&logits).unwrap_err().to_string();
    assert!(e.contains("token id 4") && e.contains("4 ids"), "{e}");
    let mut s = Sampler::new(1);
    s.add(Stage::LogitBias(vec![(1, -5.0), (3, 3.0)])).unwrap();
    s.add(Stage::Greedy).unwrap();
    assert_eq!(s.sample(&logits).unwrap(), 3);
    let mut s = Sampler::new(1);
    let e = s.add(Stage::TopK(1_000_000_000)).unwrap_err().to_string();
    assert!(e.contains("top_k 1000000000"), "{e}");
    let e = s.add(Stage::LogitBias(vec![(u32::MAX, 1.0)])).unwrap_err().to_string();
    assert!(e.contains(&u32::MAX.to_string()), "{e}");
    s.add(Stage::TopK(10)).unwrap();
    s.add(Stage::Greedy).unwrap();
    assert_eq!(s.sample(&logits).unwrap(), 1);
    // Through the C API the same, as a status.
    use sutra::ffi::*;
    // SAFETY: valid handles and arrays; freed below.
    unsafe {
        let mut sp = std::ptr::null_mut();
        assert_eq!(sutra_sampler_new(7, &mut sp), Status::SUTRA_OK);
        assert_eq!(sutra_sampler_add_top_k(sp, 1_000_000_000), Status::SUTRA_ERR_INVALID_ARGUMENT);
        let (ids, bias) = ([9i32], [1f32]);
        assert_eq!(sutra_sampler_add_logit_bias(sp, ids.as_ptr(), bias.as_ptr(), 1), Status::SUTRA_OK);
        assert_eq!(sutra_sampler_add_greedy(sp), Status::SUTRA_OK);
        let mut tok = -1;
        let st = sutra_sampler_sample(sp, logits.as_ptr(), logits.len(), &mut tok);
        assert_eq!(st, Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert_eq!(tok, -1, "out-parameter written on error");
        let msg = std::ffi::CStr::from_ptr(sutra_last_error()).to_str().unwrap();
        assert!(msg.contains("token id 9"), "{msg}");
        sutra_sampler_free(sp);
    }
}
