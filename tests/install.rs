//! `make install` (the top-level Makefile) into a temporary prefix, then programs built
//! against that prefix only: a C program through pkg-config (shared, and static on
//! libsutra.a), and a CMake project (`find_package(sutra)`: the shared and static imported
//! targets, and the README's C++ quick start). Each program loads the bundled model and its
//! output is checked against the Rust API. Also: DESTDIR staging, `make uninstall`, the
//! SONAME, and the CMake package's version check. Needs make, cc, pkg-config and cmake
//! (.ci/run installs them); a missing tool fails the test.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// target/<profile>/ (holds libsutra.so and libsutra.a), found from this test executable.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let found = [deps.parent().unwrap(), deps].into_iter().find(|d| d.join("libsutra.so").exists());
    found.unwrap_or_else(|| panic!("libsutra.so not found near {}", deps.display())).to_path_buf()
}

/// Runs `cmd`, failing with its output unless it succeeds; returns stdout.
fn ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Fails with a clear message when a tool the test needs is missing.
fn require(tool: &str) {
    let found = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{tool}` is not installed: tests/install.rs needs make, cc, pkg-config and cmake \
         (.ci/run installs them: apt-get install cmake pkg-config g++ make, or pip install cmake)"
    );
}

/// `make install` (or another target) of the repository's Makefile, copying what cargo built.
fn make(target: &str, vars: &[(&str, &Path)]) {
    let mut cmd = Command::new("make");
    cmd.arg("-C").arg(repo("")).arg(target).arg("NO_BUILD=1");
    cmd.arg(format!("BUILD_DIR={}", lib_dir().display()));
    for (k, v) in vars {
        cmd.arg(format!("{k}={}", v.display()));
    }
    ok(cmd.env_remove("MAKEFLAGS").env_remove("MFLAGS"), &format!("make {target}"));
}

fn pkg_config(prefix: &Path, args: &[&str]) -> Vec<String> {
    let out =
        ok(Command::new("pkg-config").env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")).args(args), "pkg-config");
    out.split_whitespace().map(String::from).collect()
}

/// The NEEDED and SONAME entries of an ELF file (readelf -d).
fn dynamic(file: &Path) -> String {
    ok(Command::new("readelf").arg("-d").arg(file), "readelf -d")
}

const TOKENS: [u32; 4] = [0, 51, 1103, 22];

fn model() -> PathBuf {
    repo("models/rwkv7-shakespeare-6x256/model-bf16.safetensors")
}

/// What consumer.c must print for TOKENS: version, vocabulary and the Rust API's top token.
fn expected_line() -> (String, f32) {
    let m = load(&model(), 2);
    let mut s = sutra::Session::new(&m);
    let mut logits = vec![0f32; m.info().n_vocab];
    s.eval(&TOKENS, Some(&mut logits)).unwrap();
    let top = (0..logits.len()).fold(0, |b, i| if logits[i] > logits[b] { i } else { b });
    (format!("sutra {} vocab {} top {top}", env!("CARGO_PKG_VERSION"), logits.len()), logits[top])
}

/// Runs a built consumer program and checks its line against the Rust API.
fn check_consumer(exe: &Path, want: &(String, f32)) {
    let mut cmd = command(exe);
    cmd.arg(model()).args(TOKENS.iter().map(|t| t.to_string()));
    let line = ok(&mut cmd, &exe.display().to_string());
    let (head, logit) = line.trim_end().rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
    assert_eq!(head, want.0, "{}", exe.display());
    let logit: f32 = logit.parse().unwrap();
    assert!((logit - want.1).abs() < 1e-4, "{}: logit {logit} vs {}", exe.display(), want.1);
}

/// The fenced block of `lang` after the line `heading` in the README.
fn readme_snippet(heading: &str, lang: &str) -> String {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let section = readme.split_once(heading).unwrap_or_else(|| panic!("README has no {heading:?}")).1;
    let open = format!("```{lang}\n");
    let body = section.split(open.as_str()).nth(1).unwrap_or_else(|| panic!("no ```{lang} block after {heading:?}"));
    body.split_once("```").unwrap().0.to_string()
}

#[test]
fn make_install_serves_pkg_config_and_cmake_consumers() {
    let (target, host) = (env!("SUTRA_TARGET"), env!("SUTRA_HOST"));
    if target != host {
        eprintln!("install: skipped for the cross target {} (the native suite runs it)", env!("SUTRA_TARGET"));
        return;
    }
    for tool in ["make", "cc", "pkg-config", "cmake", "readelf"] {
        require(tool);
    }
    let tmp = std::env::temp_dir().join(format!("sutra-install-{}", std::process::id()));
    std::fs::remove_dir_all(&tmp).ok();
    let prefix = tmp.join("prefix");
    make("install", &[("PREFIX", &prefix)]);

    // The files, the links and the SONAME.
    let version = env!("CARGO_PKG_VERSION");
    let lib = prefix.join("lib");
    for f in ["include/sutra.h", "include/sutra.hpp", "lib/libsutra.a", "lib/pkgconfig/sutra.pc"] {
        assert!(prefix.join(f).is_file(), "{f} not installed");
    }
    for f in ["lib/pkgconfig/sutra-static.pc", "lib/cmake/sutra/sutraConfig.cmake"] {
        assert!(prefix.join(f).is_file(), "{f} not installed");
    }
    assert!(prefix.join("lib/cmake/sutra/sutraConfigVersion.cmake").is_file());
    let real = format!("libsutra.so.{version}");
    assert!(lib.join(&real).is_file() && !lib.join(&real).is_symlink());
    assert_eq!(std::fs::read_link(lib.join("libsutra.so.0")).unwrap(), PathBuf::from(&real));
    assert_eq!(std::fs::read_link(lib.join("libsutra.so")).unwrap(), PathBuf::from("libsutra.so.0"));
    assert!(dynamic(&lib.join(&real)).contains("Library soname: [libsutra.so.0]"));
    let pc = std::fs::read_to_string(lib.join("pkgconfig/sutra.pc")).unwrap();
    assert!(pc.contains(&format!("prefix={}\n", prefix.display())), "{pc}");

    // pkg-config: the version, the shared and the static link lines.
    assert_eq!(pkg_config(&prefix, &["--modversion", "sutra"]), [version]);
    let shared_libs = pkg_config(&prefix, &["--libs", "sutra"]);
    let static_libs = pkg_config(&prefix, &["--static", "--libs", "sutra"]);
    assert!(shared_libs.contains(&"-lsutra".to_string()), "{shared_libs:?}");
    let private: Vec<&String> = static_libs.iter().filter(|a| !shared_libs.contains(a)).collect();
    assert!(private.len() >= 2 && private.iter().all(|a| a.starts_with("-l")), "Libs.private: {static_libs:?}");

    let want = expected_line();
    let src = repo("packaging/test/consumer.c");
    let c_flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1"];
    let shared = tmp.join("consumer_shared");
    let mut cmd = Command::new("cc");
    cmd.args(c_flags).arg(&src).args(pkg_config(&prefix, &["--cflags", "--libs", "sutra"]));
    ok(cmd.arg(format!("-Wl,-rpath,{}", lib.display())).arg("-o").arg(&shared), "cc (pkg-config sutra)");
    assert!(dynamic(&shared).contains("Shared library: [libsutra.so.0]"));
    check_consumer(&shared, &want);

    let fixed = tmp.join("consumer_static");
    let mut cmd = Command::new("cc");
    cmd.args(c_flags).arg(&src).args(pkg_config(&prefix, &["--static", "--cflags", "--libs", "sutra-static"]));
    ok(cmd.arg("-o").arg(&fixed), "cc (pkg-config --static sutra-static)");
    assert!(!dynamic(&fixed).contains("libsutra"), "the static build needs libsutra.so");
    check_consumer(&fixed, &want);

    // CMake: find_package(sutra 0.1) and both imported targets, and the README's quick start.
    let quickstart = tmp.join("quickstart.cpp");
    std::fs::write(&quickstart, readme_snippet("C++ quick start", "cpp")).unwrap();
    let build = tmp.join("cmake-build");
    let mut cmd = Command::new("cmake");
    cmd.arg("-S").arg(repo("packaging/test")).arg("-B").arg(&build);
    cmd.arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display())).arg(format!("-DQUICKSTART={}", quickstart.display()));
    let configure = ok(cmd.arg("-DCMAKE_BUILD_TYPE=Release"), "cmake configure");
    assert!(
        configure.contains(&format!("found libsutra {version} in {}", lib.join("cmake/sutra").display())),
        "{configure}"
    );
    ok(Command::new("cmake").arg("--build").arg(&build).args(["-j", "2"]), "cmake --build");
    check_consumer(&build.join("consumer_shared"), &want);
    check_consumer(&build.join("consumer_static"), &want);
    assert!(dynamic(&build.join("consumer_shared")).contains("Shared library: [libsutra.so.0]"));
    assert!(!dynamic(&build.join("consumer_static")).contains("libsutra"));
    let tok = repo("models/rwkv7-shakespeare-6x256/tokenizer.json");
    let text = ok(command(build.join("quickstart")).arg(model()).arg(&tok), "quickstart (CMake)");
    assert!(text.starts_with("ROMEO:\n") && text.len() > 40, "{text:?}");

    // The version check: 0.2 (or 1.0) is not 0.1.x.
    let mut cmd = Command::new("cmake");
    cmd.arg("-S").arg(repo("packaging/test")).arg("-B").arg(tmp.join("cmake-0.2"));
    cmd.arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display())).arg("-DSUTRA_WANTED=0.2");
    let out = cmd.output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && log.contains("not accepted") && log.contains(version),
        "cmake accepted 0.2:\n{log}"
    );

    // DESTDIR stages the same tree under another root with the paths of the real prefix, and
    // uninstall takes every file away again.
    let stage = tmp.join("stage");
    let usr = Path::new("/usr/local");
    make("install", &[("PREFIX", usr), ("DESTDIR", &stage)]);
    let staged = stage.join("usr/local");
    let pc = std::fs::read_to_string(staged.join("lib/pkgconfig/sutra.pc")).unwrap();
    assert!(pc.contains("prefix=/usr/local\n") && !pc.contains(&stage.display().to_string()), "{pc}");
    assert!(staged.join("lib/libsutra.so.0").is_symlink() && staged.join("include/sutra.hpp").is_file());
    make("uninstall", &[("PREFIX", usr), ("DESTDIR", &stage)]);
    let left: Vec<PathBuf> = walk(&stage).into_iter().filter(|p| !p.is_dir()).collect();
    assert!(left.is_empty(), "make uninstall left {left:?}");

    std::fs::remove_dir_all(&tmp).ok();
}

/// Every path under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            all.extend(walk(&p));
        }
        all.push(p);
    }
    all
}
