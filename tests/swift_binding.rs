//! What can be checked of the Swift package here, without a Swift compiler (none exists for
//! this machine): every C name the Swift sources use is declared in include/sutra.h (functions
//! as functions, struct fields as fields), Package.swift's targets and the module maps point at
//! files that exist, and each module map compiles as a Clang module (`clang -fmodules
//! -fsyntax-only -Werror`, `@import` of the module and the address of every function the Swift
//! sources call). `.ci/run` installs clang when it is missing; without it (a developer's
//! machine) the header is compiled with gcc instead and a note is printed; under CI (`CI` set)
//! clang is required.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Source text without `//` comments (so that only code counts).
fn strip_line_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every identifier with the character before it and the next non-blank character after it.
fn identifiers(text: &str) -> Vec<(char, String, char)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let before = if start == 0 { ' ' } else { chars[start - 1] };
            let next = chars[i..].iter().copied().find(|c| !c.is_whitespace()).unwrap_or(' ');
            out.push((before, chars[start..i].iter().collect(), next));
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

fn swift_sources() -> Vec<(PathBuf, String)> {
    let dir = root().join("bindings/swift/Sources/Sutra");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "swift"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "Swift sources in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let text = fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

/// What the header declares: function names, structs with a body (Swift zero-initializes
/// them with `name()`), every identifier, struct field names.
struct Header {
    functions: BTreeSet<String>,
    structs: BTreeSet<String>,
    names: BTreeSet<String>,
    fields: BTreeSet<String>,
}

fn header() -> Header {
    let text = strip_line_comments(&fs::read_to_string(root().join("include/sutra.h")).unwrap());
    let ids = identifiers(&text);
    let structs = text
        .split("typedef struct ")
        .skip(1)
        .filter_map(|s| s.split_once('{').map(|(name, _)| name.trim().to_string()))
        .filter(|name| !name.contains(char::is_whitespace))
        .collect();
    Header {
        structs,
        functions: ids
            .iter()
            .filter(|(_, n, next)| *next == '(' && n.starts_with("sutra_"))
            .map(|(_, n, _)| n.clone())
            .collect(),
        names: ids.iter().map(|(_, n, _)| n.clone()).collect(),
        fields: ids.iter().filter(|(_, _, next)| *next == ';').map(|(_, n, _)| n.clone()).collect(),
    }
}

/// The C functions and constants the Swift sources use.
fn swift_c_names() -> (BTreeSet<String>, BTreeSet<String>) {
    let h = header();
    let mut calls = BTreeSet::new();
    let mut constants = BTreeSet::new();
    for (path, text) in swift_sources() {
        let code = strip_line_comments(&text);
        for (before, name, next) in identifiers(&code) {
            let c_name = name.starts_with("sutra_") || name.starts_with("SUTRA_");
            if c_name && next == '(' && h.structs.contains(&name) {
                // `sutra_model_info()`: the zero value of a C struct, not a call.
            } else if c_name && next == '(' {
                assert!(
                    h.functions.contains(&name),
                    "{}: {name}() is not a function of include/sutra.h",
                    path.display()
                );
                calls.insert(name);
            } else if c_name {
                assert!(h.names.contains(&name), "{}: {name} is not declared in include/sutra.h", path.display());
                if name.starts_with("SUTRA_") {
                    constants.insert(name);
                }
            } else if before == '.' && name.contains('_') {
                // Swift names are camelCase: a snake_case member is a field of a C struct.
                assert!(
                    h.fields.contains(&name),
                    "{}: .{name} is not a struct field of include/sutra.h",
                    path.display()
                );
            }
        }
        let count = |c: char| code.chars().filter(|&x| x == c).count();
        for (open, close) in [('{', '}'), ('(', ')'), ('[', ']')] {
            assert_eq!(count(open), count(close), "{}: unbalanced {open}{close}", path.display());
        }
    }
    (calls, constants)
}

#[test]
fn swift_sources_use_only_the_c_api_of_the_header() {
    let (calls, constants) = swift_c_names();
    // The wrapped surface: losing one of these from the Swift sources is a regression.
    for f in [
        "sutra_last_error",
        "sutra_status_name",
        "sutra_version",
        "sutra_system_info",
        "sutra_model_load",
        "sutra_model_load_from_memory",
        "sutra_model_free",
        "sutra_model_n_vocab",
        "sutra_model_get_info",
        "sutra_session_new",
        "sutra_session_free",
        "sutra_session_eval",
        "sutra_session_eval_stepwise",
        "sutra_session_reset",
        "sutra_session_clone",
        "sutra_session_state_size",
        "sutra_session_state_save",
        "sutra_session_state_load",
        "sutra_session_set_adapter",
        "sutra_session_clear_adapters",
        "sutra_batch_eval",
        "sutra_tokenizer_load",
        "sutra_tokenizer_free",
        "sutra_tokenize",
        "sutra_detokenize",
        "sutra_sampler_new",
        "sutra_sampler_free",
        "sutra_sampler_add_greedy",
        "sutra_sampler_add_dist",
        "sutra_sampler_add_temperature",
        "sutra_sampler_add_top_k",
        "sutra_sampler_add_top_p",
        "sutra_sampler_add_min_p",
        "sutra_sampler_add_penalties",
        "sutra_sampler_add_rwkv_presence",
        "sutra_sampler_add_logit_bias",
        "sutra_sampler_sample",
        "sutra_sampler_accept",
        "sutra_sampler_reset",
        "sutra_generate_default_params",
        "sutra_generate",
        "sutra_adapter_load",
        "sutra_adapter_free",
        "sutra_train_default_params",
        "sutra_trainer_new",
        "sutra_trainer_free",
        "sutra_trainer_step",
        "sutra_trainer_get_adapter",
        "sutra_trainer_save_adapter",
    ] {
        assert!(calls.contains(f), "the Swift sources call {f}");
    }
    for c in ["SUTRA_OK", "SUTRA_ERR_BUFFER_TOO_SMALL", "SUTRA_STOP_REASON_STOP_STRING"] {
        assert!(constants.contains(c), "the Swift sources use {c}");
    }
}

/// A module map's module name and the header path it names, resolved.
fn module_map(path: &Path) -> (String, PathBuf) {
    let text = strip_line_comments(&fs::read_to_string(path).unwrap());
    let name = text.split("module ").nth(1).and_then(|s| s.split_whitespace().next()).expect("a module").to_string();
    let header = text.split("header \"").nth(1).and_then(|s| s.split('"').next()).expect("a header");
    let resolved = path.parent().unwrap().join(header);
    assert!(resolved.exists(), "{}: header {header} resolves to {}", path.display(), resolved.display());
    assert_eq!(resolved.canonicalize().unwrap(), root().join("include/sutra.h").canonicalize().unwrap());
    assert!(text.contains("link \"sutra\""), "{}: links libsutra", path.display());
    (name, resolved)
}

#[test]
fn package_swift_targets_and_module_maps_resolve() {
    let pkg = strip_line_comments(&fs::read_to_string(root().join("Package.swift")).unwrap());
    let c_map = root().join("bindings/swift/CSutra/module.modulemap");
    let (c_module, _) = module_map(&c_map);
    assert_eq!(c_module, "CSutra");
    assert!(pkg.contains(".systemLibrary(name: \"CSutra\", path: \"bindings/swift/CSutra\")"), "{pkg}");
    assert!(pkg.contains("path: \"bindings/swift/Sources/Sutra\""), "{pkg}");
    assert!(pkg.contains(".library(name: \"Sutra\", targets: [\"Sutra\"])"), "{pkg}");
    for (path, text) in swift_sources() {
        assert!(
            text.contains("\nimport CSutra\n") || text.starts_with("import CSutra\n"),
            "{} imports CSutra",
            path.display()
        );
    }
    // The plain module map for Xcode header search paths (module Sutra, the C API only).
    let (plain, _) = module_map(&root().join("bindings/swift/module.modulemap"));
    assert_eq!(plain, "Sutra");
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Compiles `source` (extension `ext`) with `args`; returns (success, stderr).
fn compile(tool: &str, args: &[&str], dir: &Path, ext: &str, source: &str) -> (bool, String) {
    let file = dir.join(format!("probe-{}.{ext}", source.len()));
    fs::write(&file, source).unwrap();
    let out = Command::new(tool).args(args).arg(&file).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn module_maps_compile_as_clang_modules() {
    let (calls, constants) = swift_c_names();
    let uses = |extra: &str| {
        let mut body: String = calls.iter().map(|f| format!("    (void)&{f};\n")).collect();
        body += &constants.iter().map(|c| format!("    (void){c};\n")).collect::<String>();
        body + extra
    };
    let dir = std::env::temp_dir().join(format!("sutra-swift-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    if have("clang") {
        let cache = format!("-fmodules-cache-path={}", dir.join("cache").display());
        for map in ["bindings/swift/CSutra/module.modulemap", "bindings/swift/module.modulemap"] {
            let map = root().join(map);
            let (module, _) = module_map(&map);
            let map_arg = format!("-fmodule-map-file={}", map.display());
            let args = ["-fmodules", "-fsyntax-only", "-Werror", cache.as_str(), map_arg.as_str()];
            let probe =
                |extra: &str| format!("@import {module};\n\nint main(void) {{\n{}    return 0;\n}}\n", uses(extra));
            let (ok, err) = compile("clang", &args, &dir, "m", &probe(""));
            assert!(ok, "clang -fmodules {}:\n{err}", map.display());
            // The probe can fail: a name the header lacks is an error through the module too.
            let (ok, err) = compile("clang", &args, &dir, "m", &probe("    (void)&sutra_no_such_function;\n"));
            assert!(!ok && err.contains("sutra_no_such_function"), "{err}");
        }
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "clang is missing under CI: .ci/run installs it (apt-get install clang)"
        );
        eprintln!("note: clang not found, so the module maps were not compiled as modules; compiling their header with gcc instead");
        let (_, header) = module_map(&root().join("bindings/swift/CSutra/module.modulemap"));
        let probe = format!("#include \"{}\"\n\nint main(void) {{\n{}    return 0;\n}}\n", header.display(), uses(""));
        let (ok, err) = compile("gcc", &["-fsyntax-only", "-Werror", "-Wall", "-x", "c"], &dir, "c", &probe);
        assert!(ok, "gcc on the module map's header:\n{err}");
    }
    let _ = fs::remove_dir_all(&dir);
}
