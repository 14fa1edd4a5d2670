#!/usr/bin/env bash
# ThreadSanitizer over tests/concurrency.rs (issue #13 part 3): eight threads sharing one
# model, its worker pool and one adapter, with sessions evaluated, batched, saved, loaded,
# cloned and reset in a seeded order.
#
#   scripts/tsan.sh                 # build (the first time: std and every crate, instrumented) and run
#   scripts/tsan.sh --nocapture     # extra arguments go to the test binary
#   CARGO_BUILD_JOBS=1 scripts/tsan.sh   # on a small shared machine
#   SUTRA_CONCURRENCY_SESSIONS=60 scripts/tsan.sh   # a shorter run (default 240 sessions per thread)
#
# How: the nightly toolchain (its rust-src component is added when missing) builds with
# RUSTFLAGS=-Zsanitizer=thread and -Zbuild-std, so the standard library is instrumented too
# (an uninstrumented std hides its synchronisation from TSan and makes every Arc, Mutex and
# channel look racy); --target x86_64-unknown-linux-gnu keeps build scripts and proc-macros
# uninstrumented; a separate target directory (target/tsan) leaves the normal builds alone;
# --release because the unoptimised kernels under TSan would take hours. The test binary
# runs with TSAN_OPTIONS: halt_on_error=0 (report every race, not only the first),
# exitcode=66 (any report fails the run even when the test itself passes) and the
# suppressions of scripts/tsan.supp (each entry is explained there).
#
# A clean result: the last lines are "test result: ok. 1 passed" and "== scripts/tsan.sh
# clean", and the log holds no "WARNING: ThreadSanitizer" report. A report prints the two
# racing accesses with their stacks; the script then exits non-zero. The first build takes a
# while (std, every dependency and libsutra instrumented; about 15 minutes with one job on
# two cores); later runs rebuild only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
start=$SECONDS
say() { printf '== scripts/tsan.sh [%4ds] %s\n' $((SECONDS - start)) "$*"; }

TARGET=x86_64-unknown-linux-gnu
if ! rustup toolchain list | grep -q '^nightly'; then
    say "rustup toolchain install nightly"
    rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
    say "rustup component add rust-src --toolchain nightly"
    rustup component add rust-src --toolchain nightly
fi
say "$(rustc +nightly --version)"

export RUSTFLAGS="-Zsanitizer=thread ${RUSTFLAGS:-}"
export RUSTDOCFLAGS="-Zsanitizer=thread ${RUSTDOCFLAGS:-}"
export TSAN_OPTIONS="halt_on_error=0 exitcode=66 suppressions=$PWD/scripts/tsan.supp ${TSAN_OPTIONS:-}"
cargo=(cargo +nightly test -Zbuild-std --target "$TARGET" --target-dir target/tsan --release --test concurrency)

say "build (instrumented std, dependencies and libsutra; target/tsan)"
"${cargo[@]}" --no-run
say "run tests/concurrency.rs under ThreadSanitizer"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
"${cargo[@]}" -- "$@" 2>&1 | tee "$log" || status=$?
if grep -q "WARNING: ThreadSanitizer" "$log"; then
    say "ThreadSanitizer reported $(grep -c 'WARNING: ThreadSanitizer' "$log") problem(s)"
    exit 1
fi
[ "$status" = 0 ] || { say "the test failed (status $status)"; exit "$status"; }
say "clean"
