#!/usr/bin/env bash
# The README's test command: every test of the workspace (release profile:
# the one build the demo and CI share), then the tests that were skipped,
# by name and reason. libtest reports a test that returned early as `ok`;
# skipping tests append to $FLEXWASM_SKIP_LOG (host/src/test_skip.rs), and
# the summary below names them. Under CI=true a skip fails its test instead.
# Extra arguments go to cargo test (e.g. a filter: bash tests/test.sh mount).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

skip_log=$(mktemp /tmp/flexwasm-skipped.XXXXXX)
trap 'rm -f "$skip_log"' EXIT
export FLEXWASM_SKIP_LOG=$skip_log

# The runtime-only host (no Cranelift), for the test that installs it as a
# driver executable: its own target dir, as wasmtime is built with other
# features there (tests/admin.rs, runtime_only_host_...).
CARGO_TARGET_DIR=target/runtime-only cargo build --release --target x86_64-unknown-linux-musl \
  -p flexwasm --no-default-features || exit $?
export FLEXWASM_RUNTIME_ONLY_BIN=$PWD/target/runtime-only/x86_64-unknown-linux-musl/release/flexwasm

cargo test --release --workspace "$@"
rc=$?

echo
if [ -s "$skip_log" ]; then
  echo "SKIPPED: $(sort -u "$skip_log" | wc -l) test(s) did not run here (cargo counted them as passed):"
  sort -u "$skip_log" | sed 's/^/  /'
  [ "$(id -u)" -ne 0 ] && echo "  (run as root to run the privileged ones)"
else
  echo "skipped: none"
fi
exit $rc
