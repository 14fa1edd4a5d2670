//! The committed include/sutra.h is exactly what cbindgen generates from the source, defines
//! only SUTRA_ macros, and compiles cleanly as C99 and as C++17.

use std::path::PathBuf;
use std::process::Command;

fn header() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("include/sutra.h")
}

#[test]
fn header_is_up_to_date() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/sutra.h"));
    let committed = std::fs::read_to_string(header()).expect("include/sutra.h is missing");
    assert!(
        generated == committed,
        "include/sutra.h differs from what the source generates; run `SUTRA_UPDATE_HEADER=1 cargo build` and commit it"
    );
}

/// The names of every `#define` in `text` (a `#` and `define` may be spaced apart).
fn defined_macros(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix('#')?.trim_start().strip_prefix("define")?;
            if !rest.starts_with([' ', '\t']) {
                return None;
            }
            let name: String =
                rest.trim_start().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            Some(name)
        })
        .collect()
}

/// No `pub const` of the crate (nor anything else) leaks into the C namespace: every macro
/// the header defines is SUTRA_-prefixed (its include guard is SUTRA_H). Checked on the
/// header the source generates now, so a new constant fails here before it is committed.
#[test]
fn header_defines_only_sutra_macros() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/sutra.h"));
    let macros = defined_macros(generated);
    // The version, the export macro and the guard at least.
    for want in ["SUTRA_H", "SUTRA_VERSION", "SUTRA_VERSION_MAJOR", "SUTRA_API"] {
        assert!(macros.iter().any(|m| m == want), "{want} is not defined: {macros:?}");
    }
    let leaked: Vec<&String> = macros.iter().filter(|m| !m.starts_with("SUTRA_")).collect();
    assert!(leaked.is_empty(), "include/sutra.h defines macros outside the SUTRA_ namespace: {leaked:?}");
    // The scanner itself sees an un-prefixed definition.
    assert_eq!(
        defined_macros("#define SUTRA_X 1\n#  define MAX_VOCAB (1 << 24)\n#defined_not\n"),
        ["SUTRA_X", "MAX_VOCAB"]
    );
}

/// Every function is declared with the export macro.
#[test]
fn every_function_is_exported_with_sutra_api() {
    let text = std::fs::read_to_string(header()).unwrap();
    let decls: Vec<&str> = text.lines().filter(|l| l.contains(" sutra_") && l.trim_end().ends_with(");")).collect();
    assert!(decls.len() > 50, "found only {} function declarations", decls.len());
    for d in decls {
        assert!(d.starts_with("SUTRA_API "), "declared without SUTRA_API: {d}");
    }
}

/// Compiles a translation unit that includes the header (twice, for the guard) and calls
/// into it, with `compiler args`, failing with the compiler's output.
fn compiles(compiler: &str, args: &[&str], ext: &str) {
    let dir = std::env::temp_dir().join(format!("sutra-header-{ext}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join(format!("use_header.{ext}"));
    std::fs::write(
        &src,
        "#include \"sutra.h\"\n#include \"sutra.h\"\n\
         int main(void) {\n\
             sutra_model *model = 0;\n\
             sutra_status st = sutra_model_load(\"x\", 0, &model);\n\
             return st == SUTRA_OK && SUTRA_VERSION_MAJOR >= 0 ? 0 : (int)st;\n\
         }\n",
    )
    .unwrap();
    let include = header().parent().unwrap().to_path_buf();
    let out = Command::new(compiler)
        .args(args)
        .arg("-I")
        .arg(&include)
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(dir.join(format!("use_header_{ext}.o")))
        .output()
        .unwrap_or_else(|e| panic!("{compiler} runs (.ci/run installs g++): {e}"));
    assert!(
        out.status.success(),
        "{compiler} {args:?} rejects include/sutra.h:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn header_compiles_as_c99_pedantic() {
    compiles("gcc", &["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"], "c");
}

#[test]
fn header_compiles_as_cpp17() {
    compiles("g++", &["-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic"], "cpp");
}
