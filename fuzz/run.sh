#!/usr/bin/env bash
# Builds every fuzz target (cargo fuzz, AddressSanitizer, debug assertions) and runs each for
# SECONDS_PER_TARGET seconds (default 30) from its seeds, copied to a scratch corpus outside
# the repository. Prints, per target, the executions and the coverage of libFuzzer's final
# stats; exits non-zero if any target found something (crash, panic, ASan report, timeout,
# allocation over the RSS limit). Findings are kept under fuzz/artifacts/<target>/.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Needs rustup (a nightly toolchain is installed if missing) and installs cargo-fuzz if it is
# missing. CARGO_BUILD_JOBS is honoured.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-30}
shift || true
case $seconds in '' | *[!0-9]*) echo "usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2 ;; esac

# The largest input of each target (bytes), sized to its seeds, and its dictionary.
declare -A max_len=(
    [model]=131072 [model_shapes]=65 [model_config]=131072 [tokenizer_json]=131072 [world_vocab]=65536
    [state]=4096 [state_fixed]=70000 [adapter]=100000 [tokenize]=4096 [gguf]=300000 [pth]=65536
)
declare -A dict=(
    [model]=safetensors [model_config]=model_config [tokenizer_json]=tokenizer_json
    [world_vocab]=world_vocab [adapter]=adapter [gguf]=gguf [pth]=pth
)
# Extra flags: model_shapes inputs are short edit lists, worth trying at full length at once.
declare -A extra=([model_shapes]=-len_control=0)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(model model_shapes model_config tokenizer_json world_vocab state state_fixed adapter tokenize gguf pth)
fi
for t in "${targets[@]}"; do
    [ -n "${max_len[$t]:-}" ] || { echo "unknown target '$t' (known: ${!max_len[*]})" >&2; exit 2; }
done

# Tools, installed only when missing.
rustup run nightly rustc --version >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

echo "== building the fuzz targets (nightly, ASan, debug assertions)"
cargo +nightly fuzz build --debug-assertions
host=$(rustc +nightly -vV | sed -n 's/^host: //p')
bin=target/$host/release

scratch=$(mktemp -d "${TMPDIR:-/tmp}/sutra-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
# The adapter target writes its files under $TMPDIR: keep them in the scratch directory.
export TMPDIR=$scratch

failed=()
summary=()
for t in "${targets[@]}"; do
    corpus=$scratch/corpus/$t
    mkdir -p "$corpus" "artifacts/$t"
    cp seeds/"$t"/* "$corpus"/
    args=(-max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len="${max_len[$t]}"
          -print_final_stats=1 -artifact_prefix="artifacts/$t/")
    if [ -n "${dict[$t]:-}" ]; then
        args+=(-dict="dicts/${dict[$t]}.dict")
    fi
    if [ -n "${extra[$t]:-}" ]; then
        args+=("${extra[$t]}")
    fi
    log=$scratch/$t.log
    echo "== $t: ${seconds}s"
    status=ok
    "$bin/$t" "${args[@]}" "$corpus" >"$log" 2>&1 || status="FINDING (exit $?)"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
    caught=$(grep -m1 '^==sutra-fuzz== [0-9]* panics caught' "$log" || true)
    if [ "$status" != ok ]; then
        failed+=("$t")
        echo "---- $t: the end of its log ($log):"
        tail -n 60 "$log"
        echo "---- artifacts:" artifacts/"$t"/*
    fi
    [ -n "$caught" ] && echo "   $caught"
    summary+=("$(printf '%-15s %10s %8s %8s %6s  %s' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$status")")
done

printf '\n%-15s %10s %8s %8s %6s  %s\n' target execs cov ft corpus result
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "findings in: ${failed[*]} (inputs under fuzz/artifacts/; see fuzz/README.md to reproduce and minimize)" >&2
    exit 1
fi
