#!/usr/bin/env bash
# Coverage-guided fuzzing of the host's input handling, on stable Rust.
#
#   bash fuzz/run.sh TARGET [SECONDS]   fuzz one target (default 600 s), corpus kept
#   bash fuzz/run.sh --ci [SECONDS]     replay fuzz/regressions/, then fuzz every
#                                       target SECONDS (default 45) each; non-zero
#                                       on any crash
#   bash fuzz/run.sh --build            build the targets only
#   bash fuzz/run.sh --list             the targets
#
# Targets: argv, options, policy, plans (fuzz/README.md says what each checks).
# Builds with cargo + libfuzzer-sys, no cargo-fuzz: rustc-wrapper.sh adds the
# sanitizer-coverage flags cargo-fuzz would, to the host library and the
# targets only, into target/fuzz (never the main build's target dir).
# Needs a C++ compiler (libfuzzer-sys builds libFuzzer). Extra libFuzzer
# flags: FUZZ_ARGS="-max_len=4096 ...". Runs under `nice -n 10`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_FUZZ:-$root/target/fuzz}"
export RUSTC_WRAPPER="$here/rustc-wrapper.sh"
targets=(argv options policy plans)
bin_dir="$CARGO_TARGET_DIR/release"

build() {
    (cd "$here" && nice -n 10 cargo build --release --locked --bins)
}

# Fuzz target $1 for $2 seconds: new inputs go to target/fuzz/corpus/$1,
# the seeds in fuzz/corpus/$1 are read too; a crash lands in
# target/fuzz/artifacts/$1/.
fuzz() {
    local t="$1" secs="$2"
    local work="$CARGO_TARGET_DIR/corpus/$t" artifacts="$CARGO_TARGET_DIR/artifacts/$t"
    mkdir -p "$work" "$artifacts"
    local dict=()
    [[ -f "$here/dict/$t.dict" ]] && dict=("-dict=$here/dict/$t.dict")
    # shellcheck disable=SC2086
    nice -n 10 "$bin_dir/$t" "$work" "$here/corpus/$t" \
        -max_total_time="$secs" -artifact_prefix="$artifacts/" \
        -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        "${dict[@]}" ${FUZZ_ARGS:-}
}

# Run every file of fuzz/regressions/<target>/ once (no fuzzing).
replay() {
    local t status=0
    for t in "${targets[@]}"; do
        local dir="$here/regressions/$t"
        [[ -d "$dir" ]] || continue
        local files=("$dir"/*)
        [[ -e "${files[0]}" ]] || continue
        echo "== replay $t: ${#files[@]} regression input(s)"
        "$bin_dir/$t" -runs=1 "${files[@]}" >/dev/null 2>&1 || {
            echo "regression input of $t crashes again:" >&2
            "$bin_dir/$t" -runs=1 "${files[@]}" 2>&1 | tail -40 >&2
            status=1
        }
    done
    return $status
}

case "${1:-}" in
    --list) printf '%s\n' "${targets[@]}" ;;
    --build) build ;;
    --ci)
        secs="${2:-45}"
        start=$(date +%s)
        build
        echo "build: $(($(date +%s) - start)) s"
        failed=()
        replay || failed+=(regressions)
        for t in "${targets[@]}"; do
            echo "== fuzz $t for ${secs} s"
            log="$CARGO_TARGET_DIR/fuzz-$t.log"
            if fuzz "$t" "$secs" >"$log" 2>&1; then
                grep -E '^(#[0-9]+ +DONE|Done [0-9]+ runs|stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" || true
            else
                failed+=("$t")
                tail -60 "$log" >&2
            fi
        done
        echo "total: $(($(date +%s) - start)) s"
        if ((${#failed[@]})); then
            echo "FAILED: ${failed[*]} (crash inputs: $CARGO_TARGET_DIR/artifacts/)" >&2
            exit 1
        fi
        ;;
    "" | -h | --help) sed -n '2,16p' "$0"; exit 2 ;;
    *)
        t="$1"
        [[ " ${targets[*]} " == *" $t "* ]] || { echo "unknown target $t (${targets[*]})" >&2; exit 2; }
        build
        fuzz "$t" "${2:-600}"
        ;;
esac
