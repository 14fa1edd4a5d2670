//! The Python (ctypes) binding in bindings/python drives the library built by cargo.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn python_binding_round_trips() {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let lib = [deps.parent().unwrap(), deps]
        .iter()
        .map(|d| d.join("libsutra.so"))
        .find(|p| p.exists())
        .expect("libsutra.so next to the test binary");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(root.join("bindings/python/test_sutra.py"))
        .arg(&lib)
        .arg(&root)
        .output()
        .expect("python3 runs (the project's machines ship CPython 3.11)");
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("python binding ok: 6 checks"));
}
