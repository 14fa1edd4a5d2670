//! The committed include/sutra.h is exactly what cbindgen generates from the source.

#[test]
fn header_is_up_to_date() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/sutra.h"));
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/sutra.h"))
        .expect("include/sutra.h is missing");
    assert!(
        generated == committed,
        "include/sutra.h differs from what the source generates; run `SUTRA_UPDATE_HEADER=1 cargo build` and commit it"
    );
}
