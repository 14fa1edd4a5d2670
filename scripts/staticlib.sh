#!/usr/bin/env bash
# Builds target/TARGET/release/libsutra.a (the library alone, no command-line features):
#
#   scripts/staticlib.sh TARGET [extra rustc flags...]
#
# With the stable toolchain when the target's standard library is installed (`rustup target
# add TARGET`); otherwise (e.g. aarch64-apple-ios-sim, whose standard library this machine's
# rustup mirror does not serve) with the nightly toolchain building the standard library from
# source (`-Zbuild-std`, rust-src installed on demand). Exits non-zero if neither works.
set -euo pipefail
cd "$(dirname "$0")/.."
target=$1
shift
if rustup target list --installed | grep -qx "$target"; then
    cargo rustc -q --lib --release --no-default-features --target "$target" --crate-type staticlib -- "$@"
else
    if ! rustup +nightly component list --installed 2>/dev/null | grep -q '^rust-src'; then
        rustup +nightly component add rust-src >/dev/null
    fi
    cargo +nightly rustc -q -Zbuild-std --lib --release --no-default-features --target "$target" \
        --crate-type staticlib -- "$@"
fi
