#!/usr/bin/env bash
# The image under a real container runtime, as kubelet's would run it:
# a private containerd (its own root, state and socket under a temp dir;
# CRI's restrict_oom_score_adj as on these machines) imports the archive
# with `ctr -n k8s.io images import`, then runc runs, FROM scratch:
#   /flexwasm --version
#   /flexwasm install ... into a bind-mounted fake host root
# and the installed driver answers `init` on the host.
#
# Usage: runtime.sh ARCHIVE VERSION. Needs root, containerd and runc.
set -euo pipefail
archive=$(realpath "$1")
version=$2

passed=0
failed=0
ok() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }

dir=$(mktemp -d /tmp/flexwasm-runtime.XXXXXX)
containerd_pid=
cleanup() {
  if [ -n "$containerd_pid" ]; then
    kill "$containerd_pid" 2>/dev/null || true
    wait "$containerd_pid" 2>/dev/null || true
  fi
  # Snapshots are unmounted when their container is removed; never remove
  # a tree something is still mounted in.
  if grep -q " $dir/" /proc/self/mountinfo; then
    echo "runtime.sh: mounts left under $dir, not removing it" >&2
  else
    rm -rf "$dir"
  fi
}
trap cleanup EXIT

cat >"$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
[grpc]
  address = "$dir/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
EOF
containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
containerd_pid=$!
ctr=(ctr --address "$dir/containerd.sock" -n k8s.io)
for _ in $(seq 100); do
  "${ctr[@]}" version >/dev/null 2>&1 && break
  sleep 0.1
done

if "${ctr[@]}" images import "$archive" >"$dir/import.log" 2>&1; then ok; else fail "ctr images import: $(cat "$dir/import.log")"; fi
images=$("${ctr[@]}" images ls -q)
for ref in dev "$version"; do
  if grep -qx "docker.io/library/flexwasm:$ref" <<<"$images"; then ok; else fail "ctr import names docker.io/library/flexwasm:$ref: $images"; fi
done

image=docker.io/library/flexwasm:dev
out=$("${ctr[@]}" run --rm "$image" version-check /flexwasm --version 2>&1) || true
if [ "$out" = "flexwasm $version" ]; then ok; else fail "runc runs /flexwasm --version in the image: $out"; fi

# The DaemonSet's job, minus auto-detection: install from the image's own
# files into a host root bind-mounted at /host.
host=$dir/host
mkdir -p "$host/plugins"
chmod 755 "$host" "$host/plugins"
if "${ctr[@]}" run --rm --mount "type=bind,src=$host,dst=/host,options=rbind:rw" "$image" install-check \
  /flexwasm install --plugin-dir /host/plugins --driver flexwasm/tmpfs \
  --plugin /plugins/tmpfs.wasm --policy /plugins/tmpfs.policy.toml >"$dir/install.log" 2>&1; then
  ok
else
  fail "install inside the image: $(cat "$dir/install.log")"
fi
answer=$(FLEXWASM_STATE_DIR=$dir/state-dir FLEXWASM_LOG_DIR=$dir/log-dir "$host/plugins/flexwasm~tmpfs/tmpfs" init 2>&1) || true
case $answer in
  '{"status":"Success"'*'"attach":false'*) ok ;;
  *) fail "the driver installed from the image answers init: $answer" ;;
esac

echo "runtime: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
