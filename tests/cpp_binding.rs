//! The C++ wrapper include/sutra.hpp: bindings/cpp/test_sutra.cpp and the README's C++ quick
//! start are compiled with `g++ -Wall -Wextra -Werror -pedantic` (C++17, and the test program
//! also as C++20 for the std::span overloads), linked to the libsutra.so built by cargo and
//! run on the bundled model; their seeded text is compared with the Rust API's.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// target/<profile>/ (holds libsutra.so), found from this test executable (target/<profile>/deps/).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let found = [deps.parent().unwrap(), deps].into_iter().find(|d| d.join("libsutra.so").exists());
    found.unwrap_or_else(|| panic!("libsutra.so not found near {}", deps.display())).to_path_buf()
}

/// A cross build (.ci/arm runs this suite for aarch64 under qemu) has no C++ cross-compiler:
/// there these tests say so and return; the native suite (.ci/run) runs them.
fn cross_build() -> bool {
    let (target, host) = (env!("SUTRA_TARGET"), env!("SUTRA_HOST"));
    let cross = target != host;
    if cross {
        eprintln!("cpp_binding: skipped for the cross target {} (no C++ cross-compiler)", env!("SUTRA_TARGET"));
    }
    cross
}

/// The fenced block of `lang` after the line `heading` in the README.
pub fn readme_snippet(heading: &str, lang: &str) -> String {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let section = readme.split_once(heading).unwrap_or_else(|| panic!("README has no {heading:?}")).1;
    let open = format!("```{lang}\n");
    let mut blocks = section.split(open.as_str());
    blocks.next();
    let body = blocks.next().unwrap_or_else(|| panic!("no ```{lang} block after {heading:?}"));
    body.split_once("```").unwrap().0.to_string()
}

/// Compiles the C++ file `src` with g++ and `std` against include/ and target's libsutra.so.
fn compile(src: &Path, std: &str, name: &str) -> PathBuf {
    let lib = lib_dir();
    let out = std::env::temp_dir().join(format!("sutra-cpp-{name}-{std}-{}", std::process::id()));
    let result = Command::new("g++")
        .arg(format!("-std={std}"))
        .args(["-Wall", "-Wextra", "-Werror", "-pedantic", "-O1", "-I"])
        .arg(repo("include"))
        .arg(src)
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-lsutra", "-o"])
        .arg(&out)
        .output()
        .expect("g++ runs (.ci/run installs it)");
    assert!(
        result.status.success(),
        "g++ -std={std} {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&result.stderr)
    );
    out
}

fn run(exe: &Path, args: &[&Path]) -> Output {
    let out = command(exe).args(args).output().unwrap();
    std::fs::remove_file(exe).ok();
    out
}

fn bundled(file: &str) -> PathBuf {
    repo(&format!("models/rwkv7-shakespeare-6x256/{file}"))
}

/// The text the Rust API writes after "ROMEO:\n" with the demo's sampler chain and `seed`.
fn rust_text(max_tokens: usize, stop_tokens: Vec<u32>) -> String {
    let m = load(&bundled("model-bf16.safetensors"), 2);
    let t = sutra::Tokenizer::from_file(&bundled("tokenizer.json")).unwrap();
    let mut s = sutra::Sampler::new(42);
    s.add(sutra::Stage::TopP { p: 0.9, min_keep: 1 }).unwrap();
    s.add(sutra::Stage::Temperature(0.8)).unwrap();
    s.add(sutra::Stage::Dist).unwrap();
    let mut text = String::new();
    let p = sutra::GenerateParams { max_tokens, stop_tokens, ..Default::default() };
    let mut sess = sutra::Session::new(&m);
    sutra::generate(&mut sess, &t, &mut s, "ROMEO:\n", &p, &mut |piece| {
        text.push_str(piece);
        true
    })
    .unwrap();
    text
}

#[test]
fn cpp_test_program_passes_as_cpp17_and_cpp20() {
    if cross_build() {
        return;
    }
    for std in ["c++17", "c++20"] {
        let exe = compile(&repo("bindings/cpp/test_sutra.cpp"), std, "test");
        let out = run(&exe, &[&bundled("model-bf16.safetensors"), &bundled("tokenizer.json")]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "test_sutra ({std}) failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let checks: usize = stdout
            .lines()
            .find_map(|l| l.strip_prefix("cpp binding ok: ")?.strip_suffix(" checks")?.parse().ok())
            .unwrap_or_else(|| panic!("no summary line:\n{stdout}"));
        assert!(checks >= 30, "only {checks} checks ran:\n{stdout}");
        assert_eq!(stdout.contains("c++20 span overloads checked"), std == "c++20", "{stdout}");
        // The seeded text is the Rust API's, with the same stop token.
        let eot: i64 = stdout.lines().find_map(|l| l.strip_prefix("eot ")?.parse().ok()).expect("eot line");
        let text = stdout.split("---text---\n").nth(1).and_then(|s| s.split("\n---end---").next()).expect("text");
        let stops = if eot >= 0 { vec![eot as u32] } else { vec![] };
        assert_eq!(text, rust_text(40, stops), "{std}");
        assert!(stdout.contains("missing: sutra_model_load: SUTRA_ERR_IO: /nonexistent/sutra-cpp/model.safetensors"));
    }
}

#[test]
fn readme_cpp_quick_start_compiles_and_writes_the_seeded_text() {
    if cross_build() {
        return;
    }
    let snippet = readme_snippet("C++ quick start", "cpp");
    assert!(snippet.contains("sutra::generate") && snippet.contains("sutra::Error"), "{snippet}");
    let src = std::env::temp_dir().join(format!("sutra-quickstart-{}.cpp", std::process::id()));
    std::fs::write(&src, &snippet).unwrap();
    let exe = compile(&src, "c++17", "quickstart");
    std::fs::remove_file(&src).ok();

    let out = command(&exe).arg(bundled("model-bf16.safetensors")).arg(bundled("tokenizer.json")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "quickstart failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let text = rust_text(60, vec![]);
    assert!(text.len() > 20, "{text:?}");
    assert_eq!(stdout, format!("ROMEO:\n{text}\n"));

    // A missing model: exit status 1, the status and the path on stderr.
    let missing = "/nonexistent/quickstart/model.safetensors";
    let out = run(&exe, &[Path::new(missing), &bundled("tokenizer.json")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("SUTRA_ERR_IO") && stderr.contains(missing), "{stderr}");
}
