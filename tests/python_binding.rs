//! The Python package in bindings/python, installed with pip the way a user installs it, drives
//! the library built by cargo: `bindings/python/test_sutra.py` against the installed package,
//! the README's Python quick start, and the lookup of a library bundled in the package.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The libsutra.so cargo built for this test run.
fn library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    [deps.parent().unwrap(), deps]
        .iter()
        .map(|d| d.join("libsutra.so"))
        .find(|p| p.exists())
        .expect("libsutra.so next to the test binary")
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh scratch folder for this test (removed first if a previous run left it).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sutra-python-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `python3 -m pip install` of the package at `src` into `site`, offline: the package's own
/// build backend needs nothing beyond the standard library.
fn pip_install(src: &Path, site: &Path) {
    let out = Command::new("python3")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(["-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index"])
        .args(["--disable-pip-version-check", "--no-cache-dir", "--quiet", "--target"])
        .arg(site)
        .arg(src)
        .output()
        .expect("python3 runs (the project's machines ship CPython 3.11 with pip)");
    assert!(out.status.success(), "pip install {}: {}", src.display(), show(&out));
    assert!(site.join("sutra/__init__.py").exists(), "pip installed sutra/ into {}", site.display());
}

/// python3 with the installed package first on the path and `SUTRA_LIBRARY` as given.
fn python(site: &Path, library: Option<&Path>) -> Command {
    let mut cmd = Command::new("python3");
    cmd.env("PYTHONPATH", site).env("PYTHONDONTWRITEBYTECODE", "1").current_dir(root());
    match library {
        Some(lib) => cmd.env("SUTRA_LIBRARY", lib),
        None => cmd.env_remove("SUTRA_LIBRARY"),
    };
    cmd
}

/// The first ```python block of the README's "## Python" section.
fn readme_quick_start() -> String {
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme.split("\n## Python\n").nth(1).expect("README has a '## Python' section");
    let section = section.split("\n## ").next().unwrap();
    let block = section.split("```python\n").nth(1).expect("the Python section has a python block");
    block.split("\n```").next().unwrap().to_string()
}

#[test]
fn python_package_installs_and_round_trips() {
    let lib = library();
    let tmp = scratch("install");
    let site = tmp.join("site");
    pip_install(&root().join("bindings/python"), &site);

    let out = python(&site, Some(&lib)).arg(root().join("bindings/python/test_sutra.py")).arg(root()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", show(&out));
    let installed = site.join("sutra").join("__init__.py");
    assert!(
        stdout.contains(&format!("sutra from {}; library {}", installed.display(), lib.display())),
        "the script tested the installed package with SUTRA_LIBRARY: {}",
        show(&out)
    );
    assert!(stdout.contains("python binding ok: 91 checks"), "{}", show(&out));

    // The README's quick start, as written, against the same installed package.
    let snippet = readme_quick_start();
    let out = python(&site, Some(&lib)).arg("-c").arg(&snippet).output().unwrap();
    assert!(out.status.success(), "README quick start:\n{snippet}\n{}", show(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.trim().len() > 20, "the quick start generated text: {}", show(&out));
    let again = python(&site, Some(&lib)).arg("-c").arg(&snippet).output().unwrap();
    assert_eq!(out.stdout, again.stdout, "the seeded quick start is deterministic");
    let _ = fs::remove_dir_all(&tmp);
}

#[test]
fn python_package_finds_a_bundled_library() {
    let lib = library();
    let tmp = scratch("bundled");
    let src = tmp.join("src");
    let from = root().join("bindings/python");
    fs::create_dir_all(src.join("sutra")).unwrap();
    for f in ["pyproject.toml", "_sutra_build.py", "sutra/__init__.py"] {
        fs::copy(from.join(f), src.join(f)).unwrap();
    }
    fs::copy(&lib, src.join("sutra/libsutra.so")).unwrap();
    let site = tmp.join("site");
    pip_install(&src, &site);
    let bundled = site.join("sutra/libsutra.so");
    assert!(bundled.exists(), "the wheel carried the library");
    let wheel = fs::read_dir(&site)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "dist-info"))
        .expect("a dist-info folder");
    let meta = fs::read_to_string(wheel.join("WHEEL")).unwrap();
    assert!(meta.contains("Root-Is-Purelib: false") && !meta.contains("py3-none-any"), "{meta}");

    // No SUTRA_LIBRARY: the copy inside the package is the one loaded.
    let out = python(&site, None)
        .arg("-c")
        .arg("import sutra\nprint(sutra.library_path())\nprint(sutra.Model('models/rwkv7-shakespeare-6x256/model-bf16.safetensors').n_vocab)")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some(bundled.to_str().unwrap()), "{}", show(&out));
    assert_eq!(lines.next(), Some("2048"), "{}", show(&out));

    // A SUTRA_LIBRARY naming no file is an error that says so, not a silent fallback.
    let out = python(&site, Some(Path::new("/no/such/libsutra.so")))
        .args(["-c", "import sutra; sutra.version()"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SUTRA_LIBRARY='/no/such/libsutra.so'"), "{}", show(&out));
    let _ = fs::remove_dir_all(&tmp);
}
