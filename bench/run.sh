#!/usr/bin/env bash
# The benchmark suite: one command, side by side figures, a table on stdout,
# a plot (docs/benchmarks.svg) and docs/benchmarks.md with date and machine.
#
#   bash bench/run.sh            # root (loop devices, mount); ~3 min warm
#   bash bench/run.sh --quick    # fewer rounds, for a look
#   bash bench/run.sh --clean-build  # also time a clean release build of
#                                    # the host (~9-10 min on 2 cores)
#
# What and how: bench/README.md. Builds what it measures first (release
# host, static host, reference plugins, bench runner); measuring needs a
# quiet machine — the ratios are taken side by side, interleaved, so load
# hits both sides, but absolute numbers drift with it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "bench: run as root (installed drivers' precompiled code is trusted only when root-owned; the lifecycle attaches loop devices)" >&2
  exit 1
fi
for tool in jq python3 losetup mkfs.ext4; do
  command -v "$tool" >/dev/null || { echo "bench: needs $tool (apt-get install jq python3 mount e2fsprogs)" >&2; exit 1; }
done

if [ -z "${FLEXWASM_BENCH_INNER:-}" ]; then
  target=${CARGO_TARGET_DIR:-target}
  echo "bench: building (release host, bench runner, static host, plugins)" >&2
  build_start=$(date +%s%N)
  # The same build as the README's test command (features unify as there:
  # `cargo build -p flexwasm` alone would rebuild wasmtime).
  cargo test --release --workspace --no-run >&2
  cargo build --release -p flexwasm-bench >&2
  CARGO_TARGET_DIR=target/guests cargo build --release --target x86_64-unknown-linux-musl -p flexwasm >&2
  # The per-call host without Cranelift: wasmtime with other features, so
  # a target dir of its own (it would rebuild the full one's otherwise).
  CARGO_TARGET_DIR=target/runtime-only cargo build --release --target x86_64-unknown-linux-musl \
    -p flexwasm --no-default-features >&2
  CARGO_TARGET_DIR=target/guests cargo build --release --target wasm32-wasip2 \
    -p flexwasm-plugin-loop -p flexwasm-plugin-tmpfs -p flexwasm-plugin-rest-array -p flexwasm-state-probe >&2
  echo "bench: build (incremental) took $(( ($(date +%s%N) - build_start) / 1000000 )) ms" >&2
  case " $* " in *" --clean-build "*)
    clean_target=$(mktemp -d /tmp/flexwasm-clean-build.XXXXXX)
    echo "bench: clean release build of the host into $clean_target" >&2
    t0=$(date +%s%N)
    CARGO_TARGET_DIR=$clean_target cargo build --release -p flexwasm >&2
    export FLEXWASM_BENCH_CLEAN_BUILD_S=$(( ($(date +%s%N) - t0) / 1000000000 ))
    rm -rf "$clean_target"
    ;;
  esac
  export FLEXWASM_BENCH_HOST=$PWD/$target/release/flexwasm
  export FLEXWASM_BENCH_RUNNER=$PWD/$target/release/flexwasm-bench
  export FLEXWASM_BENCH_STATIC=$PWD/target/guests/x86_64-unknown-linux-musl/release/flexwasm
  export FLEXWASM_BENCH_RUNTIME_ONLY=$PWD/target/runtime-only/x86_64-unknown-linux-musl/release/flexwasm
  export FLEXWASM_BENCH_WASM=$PWD/target/guests/wasm32-wasip2/release
  export FLEXWASM_BENCH_ARRAY_SERVER=$PWD/$target/release/flexwasm-array-server
  # Mounts made while measuring live in a private mount namespace.
  exec env FLEXWASM_BENCH_INNER=1 unshare --mount --propagation private bash "$0" "$@"
fi

work=$(mktemp -d /tmp/flexwasm-bench.XXXXXX)
cleanup() {
  # Whatever a failed run left: mounts under the work dir, loop devices of
  # its images.
  { grep -o " $work[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  { losetup -a | grep -F "$work" || true; } | cut -d: -f1 | while read -r d; do losetup -d "$d" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
python3 bench/bench.py --work "$work" "$@"
cleanup
trap - EXIT
