#!/usr/bin/env bash
# Per-call cost of an installed flexwasm driver against a native floor, side
# by side: a native no-op driver (prints one JSON object, exits) run the
# same way. Prints medians, the ratio to the floor, peak RSS and sizes.
# Needs hyperfine (apt-get install hyperfine) and /usr/bin/time (apt-get
# install time). Run as root so the precompiled code is trusted.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo test --release --workspace --no-run >/dev/null 2>&1
CARGO_TARGET_DIR=target/guests cargo build --release --target wasm32-wasip2 \
  -p flexwasm-plugin-loop -p flexwasm-plugin-tmpfs >/dev/null 2>&1
# The static (musl) host, side by side with the dynamic one, when it builds.
static=target/guests/x86_64-unknown-linux-musl/release/flexwasm
CARGO_TARGET_DIR=target/guests cargo build --release --target x86_64-unknown-linux-musl \
  -p flexwasm >/dev/null 2>&1 || static=

work=$(mktemp -d /tmp/flexwasm-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
export FLEXWASM_STATE_DIR=$work/state FLEXWASM_LOG_DIR=$work/log

# The native floor: a driver that does nothing but answer.
mkdir -p "$work/native~noop"
cat > "$work/noop.rs" <<'RS'
fn main() { println!("{{\"status\":\"Success\",\"capabilities\":{{\"attach\":false}}}}"); }
RS
rustc -O -o "$work/native~noop/noop" "$work/noop.rs"

target/release/flexwasm install --plugin-dir "$work/plugins" --driver flexwasm/loop \
  --plugin target/guests/wasm32-wasip2/release/flexwasm_plugin_loop.wasm --policy plugins/loop/policy.toml >/dev/null
drv=$work/plugins/flexwasm~loop/loop
rows=()
if [ -n "$static" ]; then
  target/release/flexwasm install --plugin-dir "$work/plugins" --driver flexwasm/loopstatic \
    --plugin target/guests/wasm32-wasip2/release/flexwasm_plugin_loop.wasm --policy plugins/loop/policy.toml \
    --host-binary "$static" >/dev/null
  sdrv=$work/plugins/flexwasm~loopstatic/loopstatic
  rows=(-n flexwasm-static-init "$sdrv init")
else
  echo "(no static host: rustup target add x86_64-unknown-linux-musl and musl-tools to compare it)"
fi
# kubelet's getvolumename options for a volume with no options of its own:
# fsType, readwrite and pvOrVolumeName, keys sorted (pod keys and secrets go
# to mount only).
opts='{"kubernetes.io/fsType":"ext4","kubernetes.io/pvOrVolumeName":"pv-bench","kubernetes.io/readwrite":"rw"}'

hyperfine -N --warmup 20 --runs 300 --export-json "$work/h.json" \
  -n native-noop "$work/native~noop/noop init" \
  -n flexwasm-init "$drv init" \
  -n flexwasm-getvolumename "$drv getvolumename '$opts'" "${rows[@]}" >/dev/null

python3 - "$work/h.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
floor = r["native-noop"]["median"]
print(f"{'call':<26}{'median ms':>10}{'mean ms':>10}{'vs native':>11}")
for name, x in r.items():
    print(f"{name:<26}{x['median']*1000:>10.2f}{x['mean']*1000:>10.2f}{x['median']/floor:>10.1f}x")
PY

rss() { /usr/bin/time -f '%M' "$@" 2>&1 >/dev/null | tail -1; }
echo
echo "peak RSS (KiB): native-noop $(rss "$work/native~noop/noop" init), flexwasm init $(rss "$drv" init), getvolumename $(rss "$drv" getvolumename "$opts")${static:+, static init $(rss "$sdrv" init)}"
echo "sizes (bytes): host $(stat -c %s target/release/flexwasm)${static:+, static host $(stat -c %s "$static")}, loop.wasm $(stat -c %s target/guests/wasm32-wasip2/release/flexwasm_plugin_loop.wasm), tmpfs.wasm $(stat -c %s target/guests/wasm32-wasip2/release/flexwasm_plugin_tmpfs.wasm), loop .plugin.cwasm $(stat -c %s "$work/plugins/flexwasm~loop/.plugin.cwasm")"
# Where a call's time goes, from the call log's phase timings.
"$drv" init >/dev/null
echo "phases of one init call (ms): $(tail -1 "$FLEXWASM_LOG_DIR/flexwasm~loop.log" | python3 -c 'import json,sys; l=json.load(sys.stdin); print(", ".join(f"{k} {v:.2f}" for k,v in l["phases"]), "| total", round(l["duration_ms"],2))')"
