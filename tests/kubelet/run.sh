#!/usr/bin/env bash
# Run flexwasm's reference plugins through Kubernetes v1.20.2's own
# FlexVolume code -- prober, driver-call, attacher, mounter, unmounter,
# detacher, with real exec and real mounts (realdriver_harness_test.go).
#
#   bash tests/kubelet/run.sh        # as root; in CI the same, with CI=true
#
# Builds the host, the reference plugins and the array server, sets the
# harness up (setup.sh: cached under target/kubelet-harness/), installs each
# driver with `flexwasm install` into a temp plugin dir, and runs
# TestFlexHarnessRealDriver once per scenario, all in a private mount
# namespace. Exits 1 on any "UNEXPECTED" line, any scenario that fails, any
# mount or loop device a scenario leaves behind, or a volume secret or the
# array token found in flexwasm's call logs or state. Prints a summary table
# with timings; every scenario's `go test -v` output, driver-call transcript
# and flexwasm's call logs stay in target/kubelet-harness/logs/.
#
# CARGO_TARGET_DIR is honoured for the host; the guests and the array server
# are built into $CARGO_TARGET_DIR/guests (default target/guests), as
# tests/support/mod.rs does.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
H=${FLEXWASM_KUBELET_HARNESS_DIR:-$repo/target/kubelet-harness}

if [ "$(id -u)" -ne 0 ]; then
  echo "kubelet harness: run as root (loop devices, mounts)" >&2
  exit 1
fi
if [ -z "${FLEXWASM_KUBELET_INNER:-}" ]; then
  # Mounts made here vanish with this namespace, whatever happens.
  exec env FLEXWASM_KUBELET_INNER=1 unshare --mount --propagation private bash "$0" "$@"
fi

ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { printf "%d.%02ds" $(($1 / 1000)) $((($1 % 1000) / 10)); }
t_start=$(ms)

# --- build -----------------------------------------------------------------
target=${CARGO_TARGET_DIR:-$repo/target}
case $target in /*) ;; *) target=$repo/$target ;; esac
guests=$target/guests
cd "$repo"
echo "== build: host, reference plugins (wasm32-wasip2), array server"
# CI hands over the host `cargo test --release --workspace` built
# (FLEXWASM_HOST_BIN), so wasmtime is not built a second time.
if [ -n "${FLEXWASM_HOST_BIN:-}" ]; then
  host=$FLEXWASM_HOST_BIN
else
  cargo build --release -p flexwasm
  host=$target/release/flexwasm
fi
CARGO_TARGET_DIR=$guests cargo build --release --target wasm32-wasip2 \
  -p flexwasm-plugin-loop -p flexwasm-plugin-tmpfs -p flexwasm-plugin-rest-array
CARGO_TARGET_DIR=$guests cargo build --release -p flexwasm-array-server
wasm=$guests/wasm32-wasip2/release
array_bin=$guests/release/flexwasm-array-server
t_build=$(($(ms) - t_start))

# --- harness -----------------------------------------------------------------
echo "== setup: Kubernetes v1.20.2 flexvolume test binary"
s=$(ms)
bash "$here/setup.sh"
harness=$H/flexvolume.test
t_setup=$(($(ms) - s))

# --- a temp world; cleaned up whatever happens -------------------------------
work=$(realpath "$(mktemp -d /tmp/flexwasm-kubelet.XXXXXX)")
logs=$H/logs
rm -rf "$logs"
mkdir -p "$logs"
export FLEXWASM_STATE_DIR=$work/state FLEXWASM_LOG_DIR=$work/log
array_pid=""

# Mount points under $1 in this namespace, deepest first.
mounts_under() { awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r; }
# Loop devices whose backing file is under $1 (loop devices are global:
# never touch anyone else's).
loops_under() {
  local f
  for f in /sys/block/loop*/loop/backing_file; do
    [ -r "$f" ] || continue
    case "$(cat "$f" 2>/dev/null)" in
      "$1"/*) f=${f#/sys/block/}; echo "/dev/${f%%/*}" ;;
    esac
  done
}
release_under() { # unmount and detach everything of ours under $1
  local m d
  for m in $(mounts_under "$1"); do umount -l "$m" || true; done
  for d in $(loops_under "$1"); do losetup -d "$d" || true; done
}
cleanup() {
  local rc=$?
  set +e
  if [ -n "$array_pid" ]; then
    kill "$array_pid" 2>/dev/null
    wait "$array_pid" 2>/dev/null
  fi
  exec 9>&-
  release_under "$work"
  [ -d "$work/log" ] && cp -r "$work/log" "$logs/flexwasm-log"
  [ -f "$work/array/server.log" ] && cp "$work/array/server.log" "$logs/array-server.log"
  if [ -z "$(mounts_under "$work")" ] && [ -z "$(loops_under "$work")" ]; then
    rm -rf "$work"
  else
    echo "kubelet harness: could not release everything under $work" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the array server (rest-array's backend), with a root-only token file ---
token=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
install -m 600 /dev/null "$work/array-token"
printf '%s' "$token" >"$work/array-token"
mkdir -p "$work/array/images"
mkfifo "$work/array.stdin"
"$array_bin" --listen 127.0.0.1:0 --data-dir "$work/array" --token "$token" \
  --addr-file "$work/array.addr" --exit-on-stdin-eof <"$work/array.stdin" 2>"$logs/array-server.stderr" &
array_pid=$!
exec 9>"$work/array.stdin" # the server exits when this closes (when we do)
for _ in $(seq 100); do
  [ -s "$work/array.addr" ] && break
  sleep 0.1
done
[ -s "$work/array.addr" ] || { echo "array server did not start:" >&2; cat "$logs/array-server.stderr" >&2; exit 1; }
array_url=http://$(cat "$work/array.addr")

# rest-array's shipped policy (plugins/rest-array/policy.toml) pointed at
# this server (endpoint and HTTP origin, loopback allowed), claiming its
# image dir, with the token from the root-only file.
policy=$work/rest-array-policy.toml
sed -e "s|^claim = \[\"loop-backing-dir:[^\"]*\"\]\$|claim = [\"loop-backing-dir:$work/array/images\"]|" \
  -e "s|^allow = \[[^]]*\]\$|allow = [\"$array_url\"]\nallow_loopback = true|" \
  -e "s|^endpoint = \"[^\"]*\"\$|endpoint = \"$array_url\"|" \
  -e "s|^token = { file = \"[^\"]*\", secret = true }\$|token = { file = \"$work/array-token\", secret = true }|" \
  "$repo/plugins/rest-array/policy.toml" >"$policy"
for line in "claim = [\"loop-backing-dir:$work/array/images\"]" "allow = [\"$array_url\"]" "allow_loopback = true" \
  "endpoint = \"$array_url\"" "token = { file = \"$work/array-token\", secret = true }"; do
  grep -qxF -- "$line" "$policy" || { echo "cannot adapt plugins/rest-array/policy.toml: no line $line" >&2; exit 1; }
done

# --- install each driver into its own plugin dir (the prober inits every
# driver in a plugin dir) ----------------------------------------------------
install_driver() { # NAME POLICY
  "$host" install --plugin-dir "$work/plugins-$1" --driver "flexwasm/$1" \
    --plugin "$wasm/flexwasm_plugin_${1//-/_}.wasm" --policy "$2" >>"$logs/install.log" 2>&1 ||
    { echo "flexwasm install of $1 failed:" >&2; cat "$logs/install.log" >&2; exit 1; }
}
install_driver loop "$repo/plugins/loop/policy.toml"
install_driver tmpfs "$repo/plugins/tmpfs/policy.toml"
install_driver rest-array "$policy"
cp "$policy" "$logs/"

# --- scenarios -------------------------------------------------------------
rows=()
failed=0
# run_scenario NAME DRIVER [VAR=VALUE...]: one TestFlexHarnessRealDriver run.
run_scenario() {
  local name=$1 driver=$2
  shift 2
  local root=$work/kubelet/$name out=$logs/$name.out rc=0
  mkdir -p "$root"
  echo "== scenario $name"
  local s
  s=$(ms)
  env FLEX_PLUGIN_DIR="$work/plugins-$driver" FLEX_DRIVER="flexwasm/$driver" FLEX_KUBELET_ROOT="$root" \
    FLEX_TRANSCRIPT="$logs/$name.transcript.jsonl" "$@" \
    "$harness" -test.v -test.count=1 -test.timeout=20m -test.run '^TestFlexHarnessRealDriver$' >"$out" 2>&1 || rc=$?
  local took=$(($(ms) - s))
  local verdict unexpected calls left
  verdict=$(grep -m1 -oE '^--- (PASS|FAIL|SKIP)' "$out" || echo "no verdict")
  unexpected=$(grep -c 'UNEXPECTED' "$out" || true)
  calls=$(cat "$logs/$name.transcript.jsonl" 2>/dev/null | wc -l)
  # What this scenario left: mounts under its kubelet root, loop devices of
  # any of our images (every scenario detaches what it attached).
  left=$(( $(mounts_under "$root" | wc -l) + $(loops_under "$work" | wc -l) ))
  if [ "$left" -gt 0 ]; then
    { mounts_under "$root"; loops_under "$work"; } | sed "s/^/LEFTOVER $name: /" >>"$logs/leftovers.txt"
    release_under "$root"
    release_under "$work/state"
    release_under "$work/array"
  fi
  if [ "$rc" -ne 0 ] || [ "$verdict" != "--- PASS" ] || [ "$unexpected" -gt 0 ] || [ "$left" -gt 0 ]; then
    failed=1
  fi
  rows+=("$(printf '%-18s %3s %7s %6s %10s %9s  %s' "$name" "$rc" "$(secs "$took")" "$calls" "$unexpected" "$left" "${verdict#--- }")")
}

t_scen=$(ms)
# loop: inline volume, ext4, the harness's default options and secret.
run_scenario loop-ext4 loop FLEX_VOLUME_NAME=vol-ext4 FLEX_FSTYPE=ext4 'FLEX_OPTIONS={"size":"64M","note":"a&b<c>"}'
# loop: xfs needs >= 300 MB; no secretRef.
run_scenario loop-xfs loop FLEX_VOLUME_NAME=vol-xfs FLEX_FSTYPE=xfs 'FLEX_OPTIONS={"size":"512M"}' FLEX_SECRET=none
# loop: a PV, first read-write (the host formats it), then read-only (the
# host never formats a read-only volume, so it needs the filesystem from the
# read-write run).
run_scenario loop-pv-rw loop FLEX_USE_PV=true FLEX_VOLUME_NAME=pv-0001 'FLEX_OPTIONS={"size":"64M"}'
run_scenario loop-pv-ro loop FLEX_USE_PV=true FLEX_READONLY=true FLEX_VOLUME_NAME=pv-0001 'FLEX_OPTIONS={"size":"64M"}'
# tmpfs (node-only, the host mounts it at `mount`), with and without fsGroup:
# a non-root pod must be able to write to it, as to an emptyDir.
run_scenario tmpfs tmpfs 'FLEX_OPTIONS={"size":"16Mi"}' FLEX_EXPECT_NONROOT_WRITE=true
run_scenario tmpfs-no-fsgroup tmpfs FLEX_FSGROUP=none FLEX_SECRET=none 'FLEX_OPTIONS={"size":"16Mi"}' FLEX_EXPECT_NONROOT_WRITE=true
# rest-array against the array server: a PV; the volume's secret carries the
# token (kubelet passes it to `mount` only; rest-array uses the policy's).
run_scenario rest-array rest-array FLEX_USE_PV=true FLEX_VOLUME_NAME=pv-array-0001 FLEX_FSTYPE=ext4 \
  'FLEX_OPTIONS={"size":"64Mi"}' "FLEX_SECRET={\"token\":\"$token\"}"
t_scen=$(($(ms) - t_scen))

# --- secrets must not reach flexwasm's call logs or state --------------------
leaks=()
for secret in s3cr3t "$(printf s3cr3t | base64)" "$token" "$(printf '%s' "$token" | base64)"; do
  while IFS= read -r f; do
    leaks+=("UNEXPECTED a secret (${secret:0:3}...) is in ${f#"$work"/}")
  done < <(grep -rlF --exclude-dir=images -- "$secret" "$work/log" "$work/state" 2>/dev/null || true)
done
[ ${#leaks[@]} -eq 0 ] || failed=1

# --- summary ---------------------------------------------------------------
echo
echo "== kubelet harness summary (Kubernetes v1.20.2 flexvolume code; logs: $logs)"
printf '%-18s %3s %7s %6s %10s %9s  %s\n' scenario rc time calls unexpected leftovers 'go test'
printf '%s\n' "${rows[@]}"
echo
echo "UNEXPECTED lines:"
found=0
for f in "$logs"/*.out; do
  while IFS= read -r line; do
    echo "  $(basename "$f" .out): $line"
    found=1
  done < <(grep -oE 'UNEXPECTED.*' "$f" || true)
done
for line in "${leaks[@]}"; do
  echo "  secrets: $line"
  found=1
done
[ "$found" -eq 1 ] || echo "  (none)"
if [ -s "$logs/leftovers.txt" ]; then
  echo "left behind (now released):"
  sed 's/^/  /' "$logs/leftovers.txt"
fi
echo
echo "timings: build $(secs "$t_build"), harness setup $(secs "$t_setup"), scenarios $(secs "$t_scen"), total $(secs $(($(ms) - t_start)))"
if [ "$failed" -ne 0 ]; then
  echo "kubelet harness: FAILED" >&2
  exit 1
fi
echo "kubelet harness: all scenarios passed"
