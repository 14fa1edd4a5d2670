//! The Java/JNI binding in bindings/java drives the library built by cargo: the JNI glue
//! (`src/main/c/sutra_jni.c`) is compiled into `libsutra_jni.so` against `include/sutra.h`
//! and the JDK's `jni.h`, linked to `target/<profile>/libsutra.so` (rpath), the Java sources
//! and `BindingTest.java` are compiled with `javac`, and `java -Xcheck:jni` runs the test.
//!
//! A JDK is required (`.ci/run` installs openjdk-17-jdk-headless when `javac` is missing):
//! without one the test fails and says so.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// target/<profile>/ (holds libsutra.so), found from this test executable (target/<profile>/deps/).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for d in [deps.parent().unwrap(), deps] {
        if d.join("libsutra.so").exists() {
            return d.to_path_buf();
        }
    }
    panic!("libsutra.so not found near {}", deps.display());
}

/// The JDK's home: `$JAVA_HOME` when it holds bin/javac, else the folder above the `bin/` of
/// the `javac` on PATH with symlinks resolved (/usr/bin/javac -> /usr/lib/jvm/<jdk>/bin/javac).
fn jdk_home() -> PathBuf {
    if let Some(home) = std::env::var_os("JAVA_HOME").map(PathBuf::from) {
        if home.join("bin/javac").is_file() {
            return home;
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let javac = dir.join("javac");
        if javac.is_file() {
            let real = std::fs::canonicalize(&javac).unwrap_or(javac);
            if let Some(home) = real.parent().and_then(Path::parent) {
                return home.to_path_buf();
            }
        }
    }
    panic!(
        "javac not found (neither $JAVA_HOME/bin/javac nor javac on PATH): the Java binding test needs a \
         JDK >= 8; on Debian/Ubuntu `apt-get install default-jdk-headless` (.ci/run does), or set JAVA_HOME"
    );
}

fn run_ok(what: &str, cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every .java file under `dir`, sorted.
fn java_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            java_sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "java") {
            out.push(p);
        }
    }
    out.sort();
}

#[test]
fn java_binding_round_trips() {
    let jdk = jdk_home();
    let include = jdk.join("include");
    assert!(include.join("jni.h").is_file(), "{}: no jni.h (a JRE, not a JDK?)", include.display());
    let lib = lib_dir();
    let work = std::env::temp_dir().join(format!("sutra-java-{}", std::process::id()));
    let classes = work.join("classes");
    let scratch = work.join("scratch");
    std::fs::create_dir_all(&classes).unwrap();
    std::fs::create_dir_all(&scratch).unwrap();

    // The glue, strictly, for the target the suite is built for.
    let so = work.join("libsutra_jni.so");
    let compiler = cc::Build::new()
        .target(env!("SUTRA_TARGET"))
        .host(env!("SUTRA_HOST"))
        .opt_level(1)
        .cargo_metadata(false)
        .get_compiler();
    run_ok(
        "compiling bindings/java/src/main/c/sutra_jni.c",
        compiler
            .to_command()
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-shared", "-fPIC"])
            .arg("-I")
            .arg(repo("include"))
            .arg("-I")
            .arg(&include)
            .arg("-I")
            .arg(include.join("linux"))
            .arg(repo("bindings/java/src/main/c/sutra_jni.c"))
            .arg("-L")
            .arg(&lib)
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .arg("-lsutra")
            .arg("-o")
            .arg(&so),
    );

    // The classes, as Java 8 (what Android's toolchain takes everywhere), warnings as errors.
    let mut sources = Vec::new();
    java_sources(&repo("bindings/java/src/main/java"), &mut sources);
    java_sources(&repo("bindings/java/src/test/java"), &mut sources);
    assert!(sources.len() > 10, "Java sources: {sources:?}");
    run_ok(
        "javac",
        Command::new(jdk.join("bin/javac"))
            .args(["--release", "8", "-Xlint:all,-options", "-Werror", "-encoding", "UTF-8", "-d"])
            .arg(&classes)
            .args(&sources),
    );

    if env!("SUTRA_TARGET") != env!("SUTRA_HOST") {
        // Cross-built suite (.ci/arm): the glue and the classes compiled for the target above,
        // but the host's JVM cannot load a library of another architecture.
        eprintln!("java_binding: {} is not the host: compiled, not run", env!("SUTRA_TARGET"));
        return;
    }

    let out = run_ok(
        "java org.libsutra.BindingTest",
        Command::new(jdk.join("bin/java"))
            .arg("-Xcheck:jni")
            .arg(format!("-Djava.library.path={}:{}", work.display(), lib.display()))
            .arg("-cp")
            .arg(&classes)
            .arg("org.libsutra.BindingTest")
            .arg(repo(""))
            .arg(&scratch),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // -Xcheck:jni reports misuse of JNI (a call with an exception pending, a wrong type, more
    // local references than the frame's capacity) as warnings without failing the program.
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains("WARNING in native method") && !text.contains("WARNING: JNI"),
            "JNI misuse:\n{stdout}\n{stderr}"
        );
    }
    let last = stdout.lines().last().unwrap_or_default();
    let n: usize = last
        .strip_prefix("java binding ok: ")
        .and_then(|r| r.strip_suffix(" checks"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no final `java binding ok: N checks` line:\n{stdout}\n{stderr}"));
    assert!(n >= 100, "only {n} checks ran:\n{stdout}");
    std::fs::remove_dir_all(&work).ok();
}
