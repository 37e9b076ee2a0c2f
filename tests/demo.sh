#!/usr/bin/env bash
# The main job, for a newcomer: build the host and the `loop` reference
# plugin, install it into a temporary plugin dir, and drive a real volume
# through it exactly as kubelet would, printing each call and its JSON:
#   init → attach → waitforattach → mountdevice → mount (pod) → write →
#   unmount → unmountdevice → mountdevice → read → unmountdevice → detach →
#   isattached
# Needs root (loop devices, mount). Everything happens in a private mount
# namespace and a temp dir; the loop device is detached at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (it attaches a loop device and mounts it)" >&2
  exit 1
fi

if [ -z "${FLEXWASM_DEMO_INNER:-}" ]; then
  # Same build as the README's test command, so the two share one build.
  cargo test --release --workspace --no-run
  CARGO_TARGET_DIR=target/guests cargo build --release --target wasm32-wasip2 -p flexwasm-plugin-loop
  # Re-run ourselves in a private mount namespace: mounts vanish with it.
  exec env FLEXWASM_DEMO_INNER=1 unshare --mount --propagation private bash "$0" "$@"
fi

work=$(mktemp -d /tmp/flexwasm-demo.XXXXXX)
export FLEXWASM_STATE_DIR=$work/state FLEXWASM_LOG_DIR=$work/log
plugin_dir=$work/volume-plugins
driver=$plugin_dir/flexwasm~loop/loop
vol=pv-demo
dmp=$work/kubelet/plugins/kubernetes.io/flexvolume/flexwasm/loop/mounts/$vol
uid=6f1c-demo-pod
pod_dir=$work/kubelet/pods/$uid/volumes/flexwasm~loop/$vol
dev=""

cleanup() {
  umount "$pod_dir" 2>/dev/null || true
  umount "$dmp" 2>/dev/null || true
  [ -n "$dev" ] && losetup -d "$dev" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"${CARGO_TARGET_DIR:-target}/release/flexwasm" install --plugin-dir "$plugin_dir" --driver flexwasm/loop \
  --plugin target/guests/wasm32-wasip2/release/flexwasm_plugin_loop.wasm --policy plugins/loop/policy.toml

# The options JSON kubelet sends (keys sorted): every op that takes options
# gets fsType, readwrite and pvOrVolumeName, then the volume's own options
# (here "size"); mount, and only mount, also gets the pod's keys (and the
# volume's secret, when it has a secretRef). detach, unmountdevice and
# unmount get none.
opts='{"kubernetes.io/fsType":"ext4","kubernetes.io/pvOrVolumeName":"'$vol'","kubernetes.io/readwrite":"rw","size":"256Mi"}'
mount_opts='{"kubernetes.io/fsType":"ext4","kubernetes.io/pod.name":"demo-0","kubernetes.io/pod.namespace":"default","kubernetes.io/pod.uid":"'$uid'","kubernetes.io/pvOrVolumeName":"'$vol'","kubernetes.io/readwrite":"rw","kubernetes.io/serviceAccount.name":"default","size":"256Mi"}'

call() {
  local out
  out=$("$driver" "$@") || true
  printf '\n$ %s %s\n%s\n' "$(basename "$driver")" "$*" "$out" >&2
  printf '%s' "$out"
}

call init >/dev/null
dev=$(call attach "$opts" node-1 | sed -n 's/.*"device":"\([^"]*\)".*/\1/p')
call waitforattach "$dev" "$opts" >/dev/null
mkdir -p "$dmp"
call mountdevice "$dmp" "$dev" "$opts" >/dev/null
# The pod's view: the loop plugin leaves mount to the host, which binds the
# device mount into the pod volume dir (kubelet creates that dir first).
mkdir -p "$pod_dir"
call mount "$pod_dir" "$mount_opts" >/dev/null
echo "hello from flexwasm" > "$pod_dir/hello.txt"
echo "  (wrote $pod_dir/hello.txt)" >&2
call unmount "$pod_dir" >/dev/null
call unmountdevice "$dmp" >/dev/null
call mountdevice "$dmp" "$dev" "$opts" >/dev/null
echo "  (read back: $(cat "$dmp/hello.txt"))" >&2
df -h "$dmp" >&2
call unmountdevice "$dmp" >/dev/null
call detach "$vol" node-1 >/dev/null
call isattached "$opts" node-1 >/dev/null
dev=""
echo >&2
echo "call log ($FLEXWASM_LOG_DIR/flexwasm~loop.log): $(wc -l < "$FLEXWASM_LOG_DIR/flexwasm~loop.log") lines" >&2
