#!/bin/sh
# RUSTC_WRAPPER for fuzz/run.sh: adds the sanitizer-coverage flags cargo-fuzz
# would put in RUSTFLAGS, but only to the crates worth instrumenting — the
# host library (flexwasm), the fuzz targets, and FUZZ_INSTRUMENT_EXTRA
# (space-separated crate names, e.g. "serde_json toml_parser"). wasmtime,
# cranelift, tokio, rustls… are compiled as plain release code: no target
# runs them, and instrumenting them would only slow the build.
# Called as: rustc-wrapper.sh <rustc> <args…>
rustc="$1"
shift
crate=""
prev=""
for a in "$@"; do
    if [ "$prev" = "--crate-name" ]; then crate="$a"; fi
    prev="$a"
done
instrument=no
case "$crate" in
    flexwasm | flexwasm_fuzz) instrument=yes ;;
esac
for c in $FUZZ_INSTRUMENT_EXTRA; do
    [ "$crate" = "$c" ] && instrument=yes
done
# The fuzz targets (bins of this package, named after their file).
case " $* " in
    *" fuzz_targets/"*) instrument=yes ;;
esac
if [ "$instrument" = yes ]; then
    exec "$rustc" "$@" \
        -Cpasses=sancov-module \
        -Cllvm-args=-sanitizer-coverage-level=4 \
        -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
        -Cllvm-args=-sanitizer-coverage-pc-table \
        -Cllvm-args=-sanitizer-coverage-trace-compares \
        --cfg fuzzing --check-cfg 'cfg(fuzzing)'
fi
exec "$rustc" "$@"
