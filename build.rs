//! Generates the C header with cbindgen.
//!
//! The header is always written to `$OUT_DIR/sutra.h`; `include/sutra.h` (committed) is
//! rewritten only when `SUTRA_UPDATE_HEADER=1`, so that the test `header_is_up_to_date`
//! catches a committed header that no longer matches the source.

use std::path::PathBuf;

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
    let mut config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    config.after_includes = Some(format!(
        "\n#define SUTRA_VERSION \"{version}\"\n#define SUTRA_VERSION_MAJOR {major}\n\
         #define SUTRA_VERSION_MINOR {minor}\n#define SUTRA_VERSION_PATCH {patch}\n"
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
