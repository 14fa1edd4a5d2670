//! Generates the C header with cbindgen.
//!
//! The header is always written to `$OUT_DIR/sutra.h`; `include/sutra.h` (committed) is
//! rewritten only when `SUTRA_UPDATE_HEADER=1`, so that the test `header_is_up_to_date`
//! catches a committed header that no longer matches the source.
//!
//! On Linux the shared library gets the SONAME `libsutra.so.<major>` (what `make install`
//! installs as a symlink to `libsutra.so.<version>`), and `libsutra.so.<major>` is made a
//! symlink to `libsutra.so` in the profile directory (`target/release/`) and its `deps/`, so
//! that programs linked there with `-lsutra` (which then need `libsutra.so.<major>`) find it
//! at run time.

use std::path::PathBuf;

/// The preamble's definition of `SUTRA_API`, which cbindgen puts before every function
/// (`[fn] prefix` in cbindgen.toml). On Windows a program using the DLL gets
/// `__declspec(dllimport)`; `SUTRA_BUILD` selects `dllexport` and `SUTRA_STATIC` (linking
/// sutra.lib / libsutra.a) nothing. Elsewhere: default visibility, so that the declarations
/// stay exported under `-fvisibility=hidden`. A definition made before the include wins.
const EXPORT_MACRO: &str = "\
// SUTRA_API marks every function of the C API. Define SUTRA_STATIC when linking the static
// library on Windows (SUTRA_BUILD when building a DLL); or define SUTRA_API yourself.
#ifndef SUTRA_API
#  if defined(_WIN32) || defined(__CYGWIN__)
#    if defined(SUTRA_STATIC)
#      define SUTRA_API
#    elif defined(SUTRA_BUILD)
#      define SUTRA_API __declspec(dllexport)
#    else
#      define SUTRA_API __declspec(dllimport)
#    endif
#  elif defined(__GNUC__) || defined(__clang__)
#    define SUTRA_API __attribute__((visibility(\"default\")))
#  else
#    define SUTRA_API
#  endif
#endif
";

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=SUTRA_UPDATE_HEADER");
    // Tests compile the C examples for the same target with the `cc` crate.
    println!("cargo:rustc-env=SUTRA_TARGET={}", std::env::var("TARGET").unwrap_or_default());
    println!("cargo:rustc-env=SUTRA_HOST={}", std::env::var("HOST").unwrap_or_default());

    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let mut parts = version.split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor, patch) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux") {
        let soname = format!("libsutra.so.{major}");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
        // OUT_DIR is <target dir>/<profile>/build/sutra-<hash>/out; libsutra.so is linked
        // into <target dir>/<profile>/ after this script has run (a dangling link until then).
        // `cargo test` leaves its cdylib in <profile>/deps/ only (`cargo build` also copies
        // it up to <profile>/), so the link is made in both.
        if let Some(profile_dir) = out_dir.ancestors().nth(3) {
            for dir in [profile_dir.to_path_buf(), profile_dir.join("deps")] {
                let link = dir.join(&soname);
                if dir.is_dir() && std::fs::symlink_metadata(&link).is_err() {
                    #[cfg(unix)]
                    std::os::unix::fs::symlink("libsutra.so", &link).ok();
                }
            }
        }
    }
    // On Apple targets rustc already gives the dylib the install name @rpath/libsutra.dylib.

    let mut config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    config.after_includes = Some(format!(
        "\n#define SUTRA_VERSION \"{version}\"\n#define SUTRA_VERSION_MAJOR {major}\n\
         #define SUTRA_VERSION_MINOR {minor}\n#define SUTRA_VERSION_PATCH {patch}\n\n{EXPORT_MACRO}"
    ));
    let generated = out_dir.join("sutra.h");
    match cbindgen::Builder::new().with_crate(&crate_dir).with_config(config).generate() {
        Ok(bindings) => {
            bindings.write_to_file(&generated);
            if std::env::var("SUTRA_UPDATE_HEADER").is_ok_and(|v| v == "1") {
                std::fs::create_dir_all(crate_dir.join("include")).expect("include/");
                bindings.write_to_file(crate_dir.join("include/sutra.h"));
            }
        }
        Err(e) => panic!("cbindgen failed to generate the header: {e}"),
    }
}
