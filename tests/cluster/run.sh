#!/usr/bin/env bash
# A real single-node Kubernetes v1.20.2 cluster running flexwasm drivers.
#
#   bash tests/cluster/run.sh                # root; the whole cluster
#   bash tests/cluster/run.sh --standalone   # kubelet + containerd only, static pods
#
# Cluster mode starts etcd, kube-apiserver, kube-controller-manager (with
# --flex-volume-plugin-dir), kube-scheduler, containerd and kubelet, all on
# test-only certificates in a temp dir, installs the flexwasm drivers
# acme/loop and acme/tmpfs (install_drivers), and shows from the cluster's own
# objects and logs that:
#   - both processes load the drivers ("Loaded volume plugin");
#   - a pod (hostNetwork) with an inline `acme/loop` flexVolume runs: the
#     controller-manager attaches it (Node status.volumesAttached, its log,
#     the pod's SuccessfulAttachVolume event; no VolumeAttachment object, no
#     attach in kubelet's log), kubelet runs mountdevice and mount;
#   - the pod writes a token; deleting it unmounts, unmounts the device and
#     detaches (no mount, no loop device left, the Node lists nothing);
#     recreating it finds the token; deleting it again cleans up again;
#   - a pod with a `acme/tmpfs` (node-only) flexVolume runs, writes, and its
#     tmpfs is gone after delete.
# --standalone runs the same loop and tmpfs sequences as static pods with
# inline flexVolumes: kubelet attaches and detaches itself (no API server).
#
# Everything runs in a private mount namespace; the teardown (trap, always)
# stops every process started here (by PID), unmounts and detaches what is
# left under the temp dir, removes kubelet's cgroups, restores the sysctls
# kubelet sets, and removes the host paths kubelet and containerd create
# whatever their flags say (only those that did not exist before). It never
# touches iptables (kubelet: makeIPTablesUtilChains false; no kube-proxy;
# loopback-only CNI; hostNetwork pods).
#
# Inputs (environment):
#   FLEXWASM_HOST_BIN   the host binary to install (default: the static host
#                       $FLEXWASM_STATIC_HOST_BIN, else
#                       $CARGO_TARGET_DIR/guests/x86_64-unknown-linux-musl/release/flexwasm,
#                       built when missing, as .ci/run does)
#   CARGO_TARGET_DIR    the plugins are built into $CARGO_TARGET_DIR/guests
#   FLEXWASM_CLUSTER_DIR  setup.sh's cache (default target/cluster); logs of
#                       the last run go to $FLEXWASM_CLUSTER_DIR/logs/<mode>/
#
# Exit status 0 only if every expectation held and the host was restored;
# a summary lists each check with PASS/FAIL and the timings.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
C=${FLEXWASM_CLUSTER_DIR:-$repo/target/cluster}
R=$C/root
PAUSE_IMAGE=flexwasm.invalid/pause:3.2
BUSYBOX_IMAGE=flexwasm.invalid/busybox:1.35
NODE=flexwasm-node
LOOP_VOLUME=flexwasm-cluster-data
TMPFS_VOLUME=flexwasm-cluster-scratch
# What kubelet sets (pkg/kubelet/cm/container_manager_linux.go,
# setupKernelTunables); restored at teardown.
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
# Host paths kubelet and containerd use whatever their flags say.
GLOBAL_PATHS=(/var/lib/kubelet /var/log/pods /var/log/containers /run/containerd
  /var/lib/containerd /opt/containerd /etc/kubernetes /var/lib/cni /run/netns
  /var/lib/dockershim)

mode=cluster
case "${1:-}" in
  "") ;;
  --standalone) mode=standalone ;;
  *) echo "usage: $0 [--standalone]" >&2; exit 2 ;;
esac

if [ "$(id -u)" -ne 0 ]; then
  echo "cluster test: run as root" >&2
  exit 1
fi
if [ -z "${FLEXWASM_CLUSTER_INNER:-}" ]; then
  # Every mount made below lives in this namespace and dies with it.
  exec env FLEXWASM_CLUSTER_INNER=1 unshare --mount --propagation private bash "$0" "$@"
fi

ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { printf "%d.%01ds" $(($1 / 1000)) $((($1 % 1000) / 100)); }
say() { echo "== [$(secs $(($(ms) - t_start)))] $*"; }
t_start=$(ms)
timings=()
timing() { timings+=("$(printf '%-44s %8s' "$1" "$(secs "$2")")"); }

# --- checks: every expectation is one line of the summary ---------------------
results=()
failed=0
pass() { results+=("PASS  $1"); echo "   ok: $1"; }
fail() {
  results+=("FAIL  $1${2:+ -- $2}")
  echo "   FAIL: $1${2:+ -- $2}" >&2
  failed=1
}
check() { # check DESCRIPTION CMD...: pass when CMD succeeds
  local what=$1
  shift
  if "$@" >/dev/null 2>&1; then pass "$what"; else fail "$what"; fi
}
wait_for() { # wait_for SECONDS CMD...: poll every 0.5 s
  local deadline=$(($(ms) + $1 * 1000))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$(ms)" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

# --- build: the plugins (and the static host if none is given) ------------------
target=${CARGO_TARGET_DIR:-$repo/target}
case $target in /*) ;; *) target=$repo/$target ;; esac
guests=$target/guests
cd "$repo"
say "build: loop and tmpfs plugins (wasm32-wasip2)"
s=$(ms)
host=${FLEXWASM_HOST_BIN:-${FLEXWASM_STATIC_HOST_BIN:-}}
if [ -z "$host" ]; then
  host=$guests/x86_64-unknown-linux-musl/release/flexwasm
  [ -x "$host" ] || CARGO_TARGET_DIR=$guests cargo build --release --target x86_64-unknown-linux-musl -p flexwasm
fi
[ -x "$host" ] || { echo "cluster test: no host binary at $host" >&2; exit 1; }
CARGO_TARGET_DIR=$guests cargo build -q --release --target wasm32-wasip2 -p flexwasm-plugin-loop -p flexwasm-plugin-tmpfs
wasm=$guests/wasm32-wasip2/release
timing "build plugins" $(($(ms) - s))

say "setup: tests/cluster/setup.sh (cached in ${C#"$repo"/})"
s=$(ms)
bash "$here/setup.sh"
timing "setup.sh" $(($(ms) - s))
B=$C/bin

# --- one cluster per machine: kubelet's fixed paths are global ------------------
exec 7>/run/lock/flexwasm-cluster.lock
if ! flock -n 7; then
  say "waiting for another tests/cluster run on this machine"
  flock -w 1800 7 || { echo "cluster test: another run holds /run/lock/flexwasm-cluster.lock" >&2; exit 1; }
fi
for p in kubelet containerd etcd kube-apiserver; do
  if pgrep -x "$p" >/dev/null; then
    echo "cluster test: a $p process is already running on this machine; not starting a second one" >&2
    exit 1
  fi
done
for d in /sys/fs/cgroup/*/kubepods; do
  if [ -d "$d" ]; then
    echo "cluster test: $d exists (another kubelet's pods?); not starting" >&2
    exit 1
  fi
done

# --- the temp world, and what to restore ------------------------------------------
work=$(realpath "$(mktemp -d /tmp/flexwasm-cluster.XXXXXX)")
chmod 755 "$work"
logs=$C/logs/$mode
rm -rf "$logs"
mkdir -p "$logs"
pki=$work/pki
sock=$work/containerd/containerd.sock
kroot=$work/kubelet
kubelet_plugins=$work/kubelet-plugins
cm_plugins=$work/cm-plugins
manifests=$work/manifests
export FLEXWASM_STATE_DIR=$work/flexwasm/state FLEXWASM_LOG_DIR=$work/flexwasm/log
mkdir -p "$pki" "$work/containerd" "$work/cni/net.d" "$kroot" "$kubelet_plugins" "$cm_plugins" \
  "$manifests" "$FLEXWASM_STATE_DIR" "$FLEXWASM_LOG_DIR"

declare -A sysctl_before=()
for k in "${SYSCTLS[@]}"; do sysctl_before[$k]=$(sysctl -n "$k"); done
declare -A existed=()
for p in "${GLOBAL_PATHS[@]}"; do [ -e "$p" ] && existed[$p]=1; done

declare -A pids=()
order=() # start order; stopped in reverse
start() { # start NAME [ENV=V...] CMD...: a daemon, its output in $logs/NAME.log
  local name=$1
  shift
  # fd 7 (the machine-wide lock) is not theirs: a shim that outlived us
  # would hold it.
  env "$@" >"$logs/$name.log" 2>&1 7>&- &
  pids[$name]=$!
  order+=("$name")
}
stop() { # stop NAME: SIGTERM, up to 15 s, then SIGKILL
  local name=$1 pid=${pids[$1]:-} i
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  unset "pids[$name]"
}
alive() { [ -n "${pids[$1]:-}" ] && kill -0 "${pids[$1]}" 2>/dev/null; }

# Mount points under $1 in this namespace, deepest first.
mounts_under() { awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r; }
is_mount() { awk -v d="$1" '$5 == d { f = 1 } END { exit !f }' /proc/self/mountinfo; }
# Loop devices whose backing file is under $1 (never anyone else's).
loops_under() {
  local f
  for f in /sys/block/loop*/loop/backing_file; do
    [ -r "$f" ] || continue
    case "$(cat "$f" 2>/dev/null)" in
      "$1"/*) f=${f#/sys/block/}; echo "/dev/${f%%/*}" ;;
    esac
  done
}
# containerd shims serving our socket (they outlive containerd).
shim_pids() {
  local p c
  for p in /proc/[0-9]*; do
    c=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    case $c in *containerd-shim*"$sock"*) echo "${p#/proc/}" ;; esac
  done
}
# Processes in kubelet's pod cgroups.
pod_pids() { cat /sys/fs/cgroup/pids/kubepods/cgroup.procs /sys/fs/cgroup/pids/kubepods/*/cgroup.procs \
  /sys/fs/cgroup/pids/kubepods/*/*/cgroup.procs /sys/fs/cgroup/pids/kubepods/*/*/*/cgroup.procs 2>/dev/null | sort -u; }

ctr_() { "$R/usr/bin/ctr" --address "$sock" -n k8s.io "$@"; }
k() { "$B/kubectl" --kubeconfig "$pki/admin.kubeconfig" --request-timeout=20s "$@"; }
api_up=0

t_teardown=0
teardown_done=0
teardown() {
  local rc=$? s name m d p left=() t
  set +e
  [ "$teardown_done" -eq 1 ] && return
  teardown_done=1
  trap '' INT TERM
  s=$(ms)
  echo
  say "teardown"
  # Pods still there (a failed run): let kubelet and the controller-manager
  # unmount and detach them the normal way first.
  if [ "$mode" = cluster ] && [ "$api_up" -eq 1 ] && alive kubelet 2>/dev/null; then
    if [ -n "$(k get pods -o name 2>/dev/null)" ]; then
      k delete pods --all --wait --timeout=60s >/dev/null 2>&1
      wait_for 60 nothing_attached
    fi
  elif [ "$mode" = standalone ] && alive kubelet 2>/dev/null && [ -n "$(ls -A "$manifests")" ]; then
    rm -f "$manifests"/*
    wait_for 60 no_pod_volumes
  fi
  for ((i = ${#order[@]} - 1; i >= 0; i--)); do
    name=${order[$i]}
    [ "$name" = containerd ] || [ "$name" = etcd ] || stop "$name"
    if [ "$name" = containerd ] && [ -n "${pids[containerd]:-}" ]; then
      # Stop the pods' containers through containerd, so the shims exit.
      for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -a -s SIGKILL "$t" >/dev/null 2>&1; done
      sleep 1
      for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$t" >/dev/null 2>&1; done
      for t in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$t" >/dev/null 2>&1; done
      stop containerd
    fi
  done
  stop etcd
  # Whatever survived: pod processes and shims, by PID.
  for p in $(pod_pids) $(shim_pids); do
    left+=("process $p: $(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | cut -c1-100)")
    kill -KILL "$p" 2>/dev/null
  done
  sleep 0.5
  # Mounts under the temp dir: kubelet's root bind, containerd's rootfs and
  # shm mounts (expected once containers are killed), and any volume mount
  # left behind (not expected: the checks above would have failed).
  for m in $(mounts_under "$work"); do
    case $m in
      "$kroot"/pods/*/volumes/* | "$kroot"/plugins/kubernetes.io/flexvolume/*) left+=("mount $m") ;;
    esac
    umount "$m" 2>/dev/null || umount -l "$m"
  done
  for d in $(loops_under "$work"); do
    left+=("loop device $d")
    losetup -d "$d"
  done
  # kubelet's cgroups (cgroupfs driver), deepest first, in every hierarchy.
  for d in /sys/fs/cgroup/*/kubepods; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
    [ -d "$d" ] && left+=("cgroup $d")
  done
  for k_ in "${SYSCTLS[@]}"; do
    [ "$(sysctl -n "$k_")" = "${sysctl_before[$k_]}" ] || sysctl -q -w "$k_=${sysctl_before[$k_]}" >/dev/null
    [ "$(sysctl -n "$k_")" = "${sysctl_before[$k_]}" ] || left+=("sysctl $k_ is $(sysctl -n "$k_"), was ${sysctl_before[$k_]}")
  done
  [ -d /var/log/pods ] && [ -z "${existed[/var/log/pods]:-}" ] && cp -r /var/log/pods "$logs/pods"
  for p in "${GLOBAL_PATHS[@]}"; do
    if [ -z "${existed[$p]:-}" ] && [ -e "$p" ]; then
      if [ -n "$(mounts_under "$p")" ]; then
        left+=("mounts under $p")
      else
        rm -rf "$p"
      fi
    fi
  done
  [ -d "$FLEXWASM_LOG_DIR" ] && cp -r "$FLEXWASM_LOG_DIR" "$logs/flexwasm-log"
  if [ -z "$(mounts_under "$work")" ]; then
    rm -rf "$work"
  else
    left+=("could not unmount everything under $work")
  fi
  # Nothing of ours in the host's own mount namespace (pid 1's) either.
  if grep -qF "$work" /proc/1/mountinfo 2>/dev/null; then left+=("host mount namespace has mounts under $work"); fi
  t_teardown=$(($(ms) - s))
  timing "teardown" "$t_teardown"
  if [ ${#left[@]} -gt 0 ]; then
    for m in "${left[@]}"; do fail "teardown found and released: $m"; done
  else
    pass "teardown: no process, mount, loop device, cgroup or host path left; sysctls restored"
  fi
  [ "$rc" -eq 0 ] || [ "$failed" -ne 0 ] || fail "the run stopped early (exit status $rc)"
  summary
  if [ "$failed" -ne 0 ] || [ "$rc" -ne 0 ]; then
    echo "cluster test ($mode): FAILED (logs: $logs)" >&2
    exit 1
  fi
  echo "cluster test ($mode): all expectations held (logs: $logs)"
  exit 0
}
summary() {
  echo
  echo "== cluster test summary ($mode; Kubernetes v1.20.2; logs: $logs)"
  printf '%s\n' "${results[@]}"
  echo
  echo "timings:"
  printf '  %s\n' "${timings[@]}"
  printf '  %-44s %8s\n' "total" "$(secs $(($(ms) - t_start)))"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# --- addresses ----------------------------------------------------------------------
# kubelet refuses a loopback node IP: the address of the default route's device.
node_ip=$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{ for (i = 1; i < NF; i++) if ($i == "src") { print $(i + 1); exit } }')
[ -n "$node_ip" ] || node_ip=$(hostname -I | awk '{ print $1 }')
[ -n "$node_ip" ] || { echo "cluster test: no non-loopback IPv4 address for the node" >&2; exit 1; }
free_port() { # a TCP port nobody listens on at $1
  python3 -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$1"
}
p_etcd=$(free_port 127.0.0.1)
p_peer=$(free_port 127.0.0.1)
p_api=$(free_port 127.0.0.1)
p_kubelet=$(free_port "$node_ip")
p_healthz=$(free_port 127.0.0.1)
kubelet_addr=$node_ip
[ "$mode" = standalone ] && kubelet_addr=127.0.0.1

# --- test-only PKI: one CA, EC P-256 keys, valid 2 days -----------------------------------
s=$(ms)
say "pki: test-only CA and certificates in $pki"
openssl ecparam -name prime256v1 -genkey -noout -out "$pki/ca.key" 2>/dev/null
openssl req -x509 -new -key "$pki/ca.key" -subj /CN=flexwasm-test-ca -days 2 -sha256 \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign -out "$pki/ca.crt" 2>/dev/null
cert() { # cert NAME SUBJECT EKU [SAN]
  local name=$1 subj=$2 eku=$3 san=${4:-}
  openssl ecparam -name prime256v1 -genkey -noout -out "$pki/$name.key" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -z "$san" ] || echo "subjectAltName=$san"
  } >"$pki/$name.ext"
  openssl req -new -key "$pki/$name.key" -subj "$subj" 2>/dev/null |
    openssl x509 -req -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -set_serial "0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" \
      -days 2 -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
}
cert etcd /CN=flexwasm-etcd serverAuth,clientAuth IP:127.0.0.1
cert apiserver-etcd-client /CN=kube-apiserver-etcd-client clientAuth
cert apiserver /CN=kube-apiserver serverAuth \
  "IP:127.0.0.1,IP:$node_ip,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
cert admin "/O=system:masters/CN=flexwasm-test-admin" clientAuth
cert kubelet-client "/O=system:nodes/CN=system:node:$NODE" clientAuth
cert kubelet /CN=$NODE serverAuth "IP:$node_ip,IP:127.0.0.1,DNS:$NODE"
openssl ecparam -name prime256v1 -genkey -noout -out "$pki/sa.key" 2>/dev/null
openssl ec -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
kubeconfig() { # kubeconfig NAME CERT: $pki/NAME.kubeconfig
  cat >"$pki/$1.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: flexwasm-test
  cluster:
    server: https://127.0.0.1:$p_api
    certificate-authority: $pki/ca.crt
users:
- name: $1
  user:
    client-certificate: $pki/$2.crt
    client-key: $pki/$2.key
contexts:
- name: $1
  context: {cluster: flexwasm-test, user: $1}
current-context: $1
KC
}
kubeconfig admin admin
kubeconfig kubelet kubelet-client
chmod 600 "$pki"/*.key
timing "pki" $(($(ms) - s))

# --- containerd ------------------------------------------------------------------------
cat >"$work/cni/net.d/10-loopback.conflist" <<CNI
{"cniVersion": "0.4.0", "name": "flexwasm-loopback-only", "plugins": [{"type": "loopback"}]}
CNI
cat >"$work/containerd/config.toml" <<TOML
version = 2
root = "$work/containerd/root"
state = "$work/containerd/state"
# Plugins that would look for or create things outside the temp dir.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$sock"
[plugins."io.containerd.runtime.v1.linux"]
  runtime_root = "$work/containerd/runc-v1"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This machine's capability bounding set lacks CAP_SYS_RESOURCE: no
  # process may lower its oom_score_adj, and CRI asks -998 for pause.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$R/usr/sbin/runc"
        Root = "$work/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$R/usr/lib/cni"
    conf_dir = "$work/cni/net.d"
TOML
s=$(ms)
say "start: containerd"
start containerd PATH="$R/usr/bin:$R/usr/sbin:$PATH" "$R/usr/bin/containerd" --config "$work/containerd/config.toml"
wait_for 30 ctr_ version || { fail "containerd answers on its socket" "see $logs/containerd.log"; exit 1; }
for img in pause busybox; do
  ctr_ images import "$C/images/$img.oci.tar" >>"$logs/images.log" 2>&1 ||
    { fail "ctr images import $img.oci.tar" "see $logs/images.log"; exit 1; }
done
has_image() { ctr_ images ls -q | grep >/dev/null -xF "$1"; }
check "containerd has $PAUSE_IMAGE and $BUSYBOX_IMAGE (imported from OCI archives)" \
  eval 'has_image "$PAUSE_IMAGE" && has_image "$BUSYBOX_IMAGE"'
timing "containerd ready + images imported" $(($(ms) - s))

# --- how the drivers get installed -----------------------------------------------------
# Today: `flexwasm install` on the host, into kubelet's plugin dir and the
# controller-manager's. Once the DaemonSet exists -- deploy/loop.yaml and its
# image as an OCI archive in target/deploy/*.tar -- it is applied instead
# (install_drivers). Its plugin dir is then one node dir shared by kubelet and
# the controller-manager, as on a control-plane node where the
# controller-manager's hostPath mount is the node's plugin dir.
# FLEXWASM_CLUSTER_INSTALL=host|daemonset forces one way.
# FLEXWASM_CLUSTER_DEPLOY_YAML / _IMAGES point elsewhere (another worktree).
deploy_yaml=${FLEXWASM_CLUSTER_DEPLOY_YAML:-$repo/deploy/loop.yaml}
deploy_image_dir=${FLEXWASM_CLUSTER_DEPLOY_IMAGES:-$repo/target/deploy}
deploy_images=()
for f in "$deploy_image_dir"/*.tar; do [ -f "$f" ] && deploy_images+=("$f"); done
install_via=host
if [ "$mode" = cluster ] && [ -f "$deploy_yaml" ] && [ ${#deploy_images[@]} -gt 0 ]; then
  install_via=daemonset
fi
install_via=${FLEXWASM_CLUSTER_INSTALL:-$install_via}
if [ "$install_via" = daemonset ]; then
  [ "$mode" = cluster ] || { echo "cluster test: the DaemonSet needs the API server (not --standalone)" >&2; exit 1; }
  [ -f "$deploy_yaml" ] && [ ${#deploy_images[@]} -gt 0 ] ||
    { echo "cluster test: FLEXWASM_CLUSTER_INSTALL=daemonset needs $deploy_yaml and $deploy_image_dir/*.tar" >&2; exit 1; }
  cm_plugins=$kubelet_plugins
  # The DaemonSet mounts the host's / with HostToContainer propagation,
  # which needs / to be a shared mount (systemd's default; deploy/README.md).
  # Shared within this private namespace only: the host's mounts are not
  # peers of these copies.
  mount --make-rshared /
fi
LOOP_DRIVER=acme/loop
TMPFS_DRIVER=acme/tmpfs
deploy_dir=$(dirname "$deploy_yaml")

host_install() { # host_install NAME DIR...
  local name=$1 dir
  shift
  for dir in "$@"; do
    "$host" install --plugin-dir "$dir" --driver "acme/$name" --plugin "$wasm/flexwasm_plugin_$name.wasm" \
      --policy "$repo/plugins/$name/policy.toml" >>"$logs/install.log" 2>&1 ||
      { fail "flexwasm install acme/$name into $dir" "see $logs/install.log"; return 1; }
  done
}
install_drivers() {
  local dirs=("$kubelet_plugins") img d
  [ "$mode" = cluster ] && [ "$cm_plugins" != "$kubelet_plugins" ] && dirs+=("$cm_plugins")
  if [ "$install_via" = daemonset ]; then
    for img in "${deploy_images[@]}"; do
      ctr_ images import "$img" >>"$logs/images.log" 2>&1 || { fail "ctr images import $img" "see $logs/images.log"; return 1; }
    done
    # deploy/loop.yaml as shipped, plus one change: this run's kubelet and
    # controller-manager keep flexwasm's state and logs in the temp dir
    # (FLEXWASM_STATE_DIR/_LOG_DIR in their environment), so the installer
    # is told the same (it reads them under --root=/host). The plugin dir is
    # not given: the installer finds it on kubelet's command line.
    python3 - "$deploy_yaml" "$FLEXWASM_STATE_DIR" "$FLEXWASM_LOG_DIR" >"$work/deploy-loop.yaml" <<'PY' ||
import sys
text = open(sys.argv[1]).read()
marker = "          args:\n"
assert text.count(marker) == 1, "deploy/loop.yaml: one container with args"
env = ("          env:\n"
       f"            - {{name: FLEXWASM_STATE_DIR, value: \"{sys.argv[2]}\"}}\n"
       f"            - {{name: FLEXWASM_LOG_DIR, value: \"{sys.argv[3]}\"}}\n")
sys.stdout.write(text.replace(marker, env + marker))
PY
      { fail "deploy/loop.yaml has one container with args"; return 1; }
    k apply -f "$deploy_dir/namespace.yaml" -f "$work/deploy-loop.yaml" >>"$logs/install.log" 2>&1 ||
      { fail "kubectl apply -f deploy/namespace.yaml -f deploy/loop.yaml" "see $logs/install.log"; return 1; }
    k -n flexwasm-system rollout status daemonset/flexwasm-loop --timeout=180s >>"$logs/install.log" 2>&1 ||
      { fail "the deploy/loop.yaml DaemonSet rolls out" "see $logs/install.log"; return 1; }
    wait_for 60 compgen -G "$kubelet_plugins/*~loop/loop" ||
      { fail "the DaemonSet installs <vendor>~loop/loop into kubelet's plugin dir" "$(k -n flexwasm-system logs ds/flexwasm-loop 2>&1 | tail -5)"; return 1; }
    d=$(cd "$kubelet_plugins" && compgen -G "*~loop" | head -1)
    LOOP_DRIVER=${d%~loop}/loop
    pass "${deploy_yaml#"$repo"/} DaemonSet rolled out and installed $d into kubelet's --volume-plugin-dir, found on its command line (kubectl apply)"
    # The executable kubelet and the controller-manager run is the image's
    # runtime-only host (--host-binary=/flexwasm-runtime): it has no
    # compiler, which `inspect` (it compiles) says. Run under the name
    # flexwasm: under its driver's name it is that driver.
    mkdir -p "$work/installed-host" && cp "$kubelet_plugins/$d/loop" "$work/installed-host/flexwasm"
    local said
    said=$("$work/installed-host/flexwasm" inspect "$kubelet_plugins/$d" 2>&1 || true)
    if [[ $said == *"runtime-only build (no compiler)"* ]]; then
      pass "the installed driver executable is the runtime-only host (no compiler)"
    else
      fail "the installed driver executable is the runtime-only host (no compiler)" "$(tail -2 <<<"$said" | paste -sd'|')"
    fi

    host_install tmpfs "${dirs[@]}" || return 1
  else
    host_install loop "${dirs[@]}" || return 1
    host_install tmpfs "${dirs[@]}" || return 1
  fi
  for d in "${dirs[@]}"; do
    check "driver files in ${d#"$work"/}/${LOOP_DRIVER/\//\~}/ and acme~tmpfs/" \
      test -x "$d/${LOOP_DRIVER/\//\~}/${LOOP_DRIVER#*/}" -a -x "$d/acme~tmpfs/tmpfs"
  done
}

# --- control plane (cluster mode) --------------------------------------------------------
etcd_healthy() {
  curl -sf --cacert "$pki/ca.crt" --cert "$pki/apiserver-etcd-client.crt" --key "$pki/apiserver-etcd-client.key" \
    "https://127.0.0.1:$p_etcd/health" | grep >/dev/null '"health":"true"'
}
if [ "$mode" = cluster ]; then
  s=$(ms)
  say "start: etcd"
  start etcd "$R/usr/bin/etcd" --name flexwasm-test --data-dir "$work/etcd" --logger zap --log-level warn \
    --listen-client-urls "https://127.0.0.1:$p_etcd" --advertise-client-urls "https://127.0.0.1:$p_etcd" \
    --listen-peer-urls "https://127.0.0.1:$p_peer" --initial-advertise-peer-urls "https://127.0.0.1:$p_peer" \
    --initial-cluster "flexwasm-test=https://127.0.0.1:$p_peer" \
    --cert-file "$pki/etcd.crt" --key-file "$pki/etcd.key" --client-cert-auth --trusted-ca-file "$pki/ca.crt" \
    --peer-cert-file "$pki/etcd.crt" --peer-key-file "$pki/etcd.key" --peer-client-cert-auth --peer-trusted-ca-file "$pki/ca.crt"
  wait_for 30 etcd_healthy || { fail "etcd healthy" "see $logs/etcd.log"; exit 1; }
  timing "etcd healthy" $(($(ms) - s))

  s=$(ms)
  say "start: kube-apiserver"
  start kube-apiserver "$B/kube-apiserver" --v=1 \
    --etcd-servers "https://127.0.0.1:$p_etcd" --etcd-cafile "$pki/ca.crt" \
    --etcd-certfile "$pki/apiserver-etcd-client.crt" --etcd-keyfile "$pki/apiserver-etcd-client.key" \
    --bind-address 127.0.0.1 --secure-port "$p_api" --insecure-port 0 --advertise-address "$node_ip" \
    --cert-dir "$work/apiserver" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --anonymous-auth=false --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction --allow-privileged=true \
    --service-cluster-ip-range 10.0.0.0/24 \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$pki/ca.crt" --kubelet-preferred-address-types InternalIP \
    --profiling=false
  wait_for 90 k get --raw /readyz || { fail "kube-apiserver ready (/readyz)" "see $logs/kube-apiserver.log"; exit 1; }
  api_up=1
  timing "kube-apiserver ready" $(($(ms) - s))

  say "start: kube-controller-manager (--flex-volume-plugin-dir ${cm_plugins#"$work"/}), kube-scheduler"
  start kube-controller-manager FLEXWASM_STATE_DIR="$FLEXWASM_STATE_DIR" FLEXWASM_LOG_DIR="$FLEXWASM_LOG_DIR" \
    "$B/kube-controller-manager" --v=2 --kubeconfig "$pki/admin.kubeconfig" --leader-elect=false \
    --port 0 --secure-port 0 --flex-volume-plugin-dir "$cm_plugins" --attach-detach-reconcile-sync-period 2s \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" --profiling=false
  start kube-scheduler "$B/kube-scheduler" --v=1 --kubeconfig "$pki/admin.kubeconfig" --leader-elect=false \
    --port 0 --secure-port 0 --profiling=false
fi

# --- kubelet --------------------------------------------------------------------------------
if [ "$mode" = cluster ]; then
  authn_webhook=true authz=Webhook cm_attach=true
else
  authn_webhook=false authz=AlwaysAllow cm_attach=false
fi
cat >"$work/kubelet.yaml" <<KCFG
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $kubelet_addr
port: $p_kubelet
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $p_healthz
tlsCertFile: $pki/kubelet.crt
tlsPrivateKeyFile: $pki/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: $authn_webhook}
  x509: {clientCAFile: $pki/ca.crt}
authorization:
  mode: $authz
cgroupDriver: cgroupfs
makeIPTablesUtilChains: false
# Cluster: the attach/detach controller attaches. Standalone: kubelet does.
enableControllerAttachDetach: $cm_attach
staticPodPath: $manifests
fileCheckFrequency: 2s
nodeStatusUpdateFrequency: 2s
failSwapOn: false
serializeImagePulls: false
# A busy CI disk must not evict the test pods or collect the imported images.
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
KCFG
kubelet_args=(--config "$work/kubelet.yaml" --root-dir "$kroot" --volume-plugin-dir "$kubelet_plugins"
  --container-runtime remote --container-runtime-endpoint "unix://$sock" --pod-infra-container-image "$PAUSE_IMAGE"
  --hostname-override "$NODE" --node-ip "$node_ip" --v=2)
[ "$mode" = cluster ] && kubelet_args+=(--kubeconfig "$pki/kubelet.kubeconfig")
s=$(ms)
say "start: kubelet (root ${kroot#"$work"/}, --volume-plugin-dir ${kubelet_plugins#"$work"/})"
start kubelet FLEXWASM_STATE_DIR="$FLEXWASM_STATE_DIR" FLEXWASM_LOG_DIR="$FLEXWASM_LOG_DIR" "$B/kubelet" "${kubelet_args[@]}"
node_ready() { [ "$(k get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
kubelet_healthy() { curl -sf "http://127.0.0.1:$p_healthz/healthz" | grep >/dev/null -x ok; }
if [ "$mode" = cluster ]; then
  wait_for 120 node_ready || { fail "node $NODE Ready" "see $logs/kubelet.log"; exit 1; }
  pass "node $NODE Ready (loopback-only CNI)"
  timing "kubelet start -> node Ready" $(($(ms) - s))
  wait_for 60 k get serviceaccount default || { fail "controller-manager created serviceaccount default"; exit 1; }
else
  wait_for 60 kubelet_healthy || { fail "kubelet healthy" "see $logs/kubelet.log"; exit 1; }
  pass "kubelet healthy (standalone, no API server)"
  timing "kubelet start -> healthy" $(($(ms) - s))
fi

s=$(ms)
say "install: drivers via $install_via"
install_drivers || exit 1
timing "install drivers ($install_via)" $(($(ms) - s))

# --- pods ---------------------------------------------------------------------------------------
token=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
vendor_dir() { echo "${1/\//\~}"; } # acme/loop -> acme~loop
pod_manifest() { # pod_manifest NAME CYCLE VOLUME_YAML SCRIPT VOLUME_NAME
  cat <<POD
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: default
  labels: {app: flexwasm-cluster-test}
  annotations: {flexwasm.test/cycle: "$2"}
spec:
  hostNetwork: true
  automountServiceAccountToken: false
  restartPolicy: Never
  terminationGracePeriodSeconds: 10
  containers:
  - name: main
    image: $BUSYBOX_IMAGE
    imagePullPolicy: Never
    env: [{name: TOKEN, value: "$token"}]
    command: [/bin/sh, -c, '$4']
    volumeMounts: [{name: $5, mountPath: /vol}]
  volumes:
$3
POD
}
# A single-quoted YAML scalar: no ' inside.
LOOP_SCRIPT='set -e; echo "mounted: $(grep " /vol " /proc/mounts)"; if [ -f /vol/token ]; then echo "FOUND $(cat /vol/token)"; else echo "$TOKEN" >/vol/token; sync; echo "WROTE $(cat /vol/token)"; fi; trap "exit 0" TERM; while true; do sleep 1; done'
TMPFS_SCRIPT='set -e; echo "mounted: $(grep " /vol " /proc/mounts)"; echo hello >/vol/file; [ "$(cat /vol/file)" = hello ]; echo "TMPFS-OK $TOKEN"; trap "exit 0" TERM; while true; do sleep 1; done'
loop_volume_yaml() {
  printf '  - name: %s\n    flexVolume:\n      driver: %s\n      fsType: ext4\n      options: {size: "64Mi"}\n' "$LOOP_VOLUME" "$LOOP_DRIVER"
}
tmpfs_volume_yaml() {
  printf '  - name: %s\n    flexVolume:\n      driver: %s\n      options: {size: "16Mi"}\n' "$TMPFS_VOLUME" "$TMPFS_DRIVER"
}

# Mode-independent pod operations: the API server (cluster), or static pod
# manifests and kubelet's own API (standalone).
kubelet_api() { curl -sSf --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "https://$kubelet_addr:$p_kubelet$1"; }
static_name() { echo "$1-$NODE"; }
apply_pod() { # apply_pod NAME FILE
  if [ "$mode" = cluster ]; then k apply -f "$2" >>"$logs/kubectl.log" 2>&1; else cp "$2" "$manifests/$1.yaml"; fi
}
delete_pod() {
  if [ "$mode" = cluster ]; then k delete pod "$1" --wait --timeout=120s >>"$logs/kubectl.log" 2>&1; else rm -f "$manifests/$1.yaml"; fi
}
pod_field() { # pod_field NAME uid|phase
  if [ "$mode" = cluster ]; then
    case $2 in uid) k get pod "$1" -o jsonpath='{.metadata.uid}' ;; phase) k get pod "$1" -o jsonpath='{.status.phase}' ;; esac
  else
    kubelet_api /pods | python3 -c '
import json, sys
try:
    pods = json.load(sys.stdin)["items"] or []
except ValueError:
    sys.exit(1)
for p in pods:
    if p["metadata"]["name"] == sys.argv[1]:
        print(p["metadata"]["uid"] if sys.argv[2] == "uid" else p.get("status", {}).get("phase", ""))' "$(static_name "$1")" "$2"
  fi
}
pod_log() {
  if [ "$mode" = cluster ]; then
    k logs "$1"
  else
    cat /var/log/pods/default_"$(static_name "$1")_$(pod_field "$1" uid)"/main/*.log
  fi
}
pod_log_has() { pod_log "$1" 2>/dev/null | grep >/dev/null -F -- "$2"; }
pod_running() { [ "$(pod_field "$1" phase)" = Running ]; }
pod_up() { pod_log_has "$1" "$2" && pod_running "$1"; } # pod_up NAME LOG_TEXT
pod_debug() { # where to look when a pod did not come up
  if [ "$mode" = cluster ]; then
    k describe pod "$1" >"$logs/describe-$1.txt" 2>&1
    echo "see $logs/describe-$1.txt and kubelet.log"
  else
    kubelet_api /pods >"$logs/kubelet-pods-$1.json" 2>&1
    echo "see $logs/kubelet-pods-$1.json and kubelet.log"
  fi
}
count() { grep -cE -- "$2" "$logs/$1.log" || true; } # count LOG REGEX
at_least() { [ "$(count "$1" "$2")" -ge "$3" ]; } # at_least LOG REGEX N
node_attached() { k get node "$NODE" -o jsonpath='{range .status.volumesAttached[*]}{.name} {.devicePath}{"\n"}{end}'; }
node_in_use() { k get node "$NODE" -o jsonpath='{range .status.volumesInUse[*]}{@}{"\n"}{end}'; }
nothing_attached() { [ -z "$(node_attached)" ] && [ -z "$(node_in_use)" ]; }
volume_mounts() { mounts_under "$kroot/pods"; mounts_under "$kroot/plugins/kubernetes.io/flexvolume"; }
no_pod_volumes() { [ -z "$(volume_mounts)" ] && [ -z "$(loops_under "$FLEXWASM_STATE_DIR")" ]; }
mount_fstype() { awk -v d="$1" '$5 == d { for (i = 7; i <= NF; i++) if ($i == "-") { print $(i + 1); exit } }' /proc/self/mountinfo; }
pod_gone() {
  if [ "$mode" = cluster ]; then
    ! k get pod "$1" >/dev/null 2>&1
  else
    local pods
    pods=$(kubelet_api /pods) || return 1
    ! grep -qF "\"name\":\"$(static_name "$1")\"" <<<"$pods"
  fi
}
loop_released() {
  pod_gone loop-data && no_pod_volumes || return 1
  if [ "$mode" = cluster ]; then ! node_attached | grep >/dev/null -F "$LOOP_DRIVER/"; fi
}
called() { # called OP N: the loop driver's call log has at least N OP calls
  [ "$(grep -c "\"op\":\"$1\"" "$FLEXWASM_LOG_DIR/$(vendor_dir "$LOOP_DRIVER").log" 2>/dev/null)" -ge "$2" ]
}
# The unique volume name of a flexVolume is <driver>/<volume name>.
loop_on_node() { node_attached | grep >/dev/null -E "^$LOOP_DRIVER/\S+ /dev/loop[0-9]+$"; }
loop_in_use() { node_in_use | grep >/dev/null -F "$LOOP_DRIVER/"; }
no_tmpfs_on_node() { ! node_attached | grep >/dev/null -F "$TMPFS_DRIVER"; }
no_failed_calls() { ! grep -q ' Failure x' "$work/calls.txt"; }
tmpfs_released() { pod_gone tmpfs-scratch && [ -z "$(volume_mounts)" ]; }

# One loop cycle: the pod comes up with its volume attached and mounted, the
# token is written (#1) or found (#2); deleting the pod releases everything.
loop_cycle() { # loop_cycle N WROTE|FOUND
  local n=$1 want=$2 s uid dm pm devs
  local v=$LOOP_VOLUME vd
  vd=$(vendor_dir "$LOOP_DRIVER")
  pod_manifest loop-data "$n" "$(loop_volume_yaml)" "$LOOP_SCRIPT" "$v" >"$work/loop-data-$n.yaml"
  say "loop #$n: pod loop-data with an inline $LOOP_DRIVER flexVolume $v; expect '$want <token>'"
  s=$(ms)
  apply_pod loop-data "$work/loop-data-$n.yaml" || { fail "loop #$n: apply the pod" "see $logs/kubectl.log"; return 1; }
  if ! wait_for 180 pod_up loop-data "$want $token"; then
    fail "loop #$n: pod Running and its log says '$want <token>'" "$(pod_debug loop-data)"
    return 1
  fi
  timing "loop #$n: apply -> Running, '$want <token>'" $(($(ms) - s))
  pass "loop #$n: pod Running; its log: $(pod_log loop-data | grep -oE "(WROTE|FOUND) .*" | head -1)"
  check "loop #$n: in the pod, /vol is $(pod_log loop-data | grep -oE '/dev/loop[0-9]+ /vol ext4' | head -1) (an ext4 loop device)" \
    pod_log_has loop-data "mounted: /dev/loop"
  uid=$(pod_field loop-data uid)
  dm=$kroot/plugins/kubernetes.io/flexvolume/${LOOP_DRIVER%/*}/${LOOP_DRIVER#*/}/mounts/$v
  pm=$kroot/pods/$uid/volumes/$vd/$v
  check "loop #$n: kubelet's device mount ${dm#"$work"/} is mounted ($(mount_fstype "$dm"))" is_mount "$dm"
  check "loop #$n: the pod volume dir ${pm#"$work"/} is mounted" is_mount "$pm"
  devs=$(loops_under "$FLEXWASM_STATE_DIR" | paste -sd' ')
  check "loop #$n: one loop device ($devs) backs an image in the flexwasm state dir" test "$(echo "$devs" | wc -w)" -eq 1
  if [ "$mode" = cluster ]; then
    check "loop #$n: Node status.volumesAttached: $(node_attached | paste -sd';')" \
      loop_on_node
    check "loop #$n: Node status.volumesInUse lists it (kubelet)" loop_in_use
    check "loop #$n: Node is annotated controller-managed-attach-detach=true" \
      test "$(k get node "$NODE" -o jsonpath='{.metadata.annotations.volumes\.kubernetes\.io/controller-managed-attach-detach}')" = true
    check "loop #$n: no VolumeAttachment objects (flexVolume attach is not CSI)" test -z "$(k get volumeattachments -o name 2>&1)"
    check "loop #$n: the pod has a SuccessfulAttachVolume event (attach/detach controller)" \
      test -n "$(k get events --field-selector "involvedObject.uid=$uid,reason=SuccessfulAttachVolume" -o name)"
    check "loop #$n: controller-manager log: AttachVolume.Attach succeeded for volume \"$v\" (x$(count kube-controller-manager "AttachVolume.Attach succeeded for volume \"$v\""))" \
      at_least kube-controller-manager "AttachVolume.Attach succeeded for volume \"$v\"" "$n"
    check "loop #$n: kubelet log: no AttachVolume (kubelet does not attach)" test "$(count kubelet "AttachVolume.Attach")" -eq 0
    # The controller-manager checks attached volumes every
    # --attach-detach-reconcile-sync-period (2 s here, 1 min by default).
    check "loop #$n: the controller-manager verifies the attachment (isattached in flexwasm's call log)" \
      wait_for 30 called isattached "$n"
    check "loop #$n: kubelet log: MountVolume.WaitForAttach succeeded (x$(count kubelet "MountVolume.WaitForAttach succeeded for volume \"$v\""))" \
      at_least kubelet "MountVolume.WaitForAttach succeeded for volume \"$v\"" "$n"
  else
    check "loop #$n: kubelet log: AttachVolume.Attach succeeded for volume \"$v\" (standalone kubelet attaches)" \
      at_least kubelet "AttachVolume.Attach succeeded for volume \"$v\"" "$n"
  fi
  check "loop #$n: kubelet log: MountVolume.MountDevice succeeded for volume \"$v\" (x$(count kubelet "MountVolume.MountDevice succeeded for volume \"$v\""))" \
    at_least kubelet "MountVolume.MountDevice succeeded for volume \"$v\"" "$n"
  check "loop #$n: kubelet log: MountVolume.SetUp succeeded for volume \"$v\"" \
    at_least kubelet "MountVolume.SetUp succeeded for volume \"$v\"" "$n"

  say "loop #$n: delete the pod; expect unmount, unmountdevice, detach"
  s=$(ms)
  delete_pod loop-data
  if ! wait_for 180 loop_released; then
    fail "loop #$n: after delete, no mount, no loop device, nothing attached" \
      "mounts: $(volume_mounts | paste -sd' '); loops: $(loops_under "$FLEXWASM_STATE_DIR" | paste -sd' ')$([ "$mode" = cluster ] && echo "; attached: $(node_attached | paste -sd' ')")"
    return 1
  fi
  timing "loop #$n: delete -> unmounted + detached" $(($(ms) - s))
  pass "loop #$n: pod gone; no volume mount and no loop device left$([ "$mode" = cluster ] && echo "; Node status.volumesAttached empty")"
  check "loop #$n: kubelet log: UnmountVolume.TearDown succeeded" \
    at_least kubelet "UnmountVolume.TearDown succeeded for volume \"[^\"]*$v\"" "$n"
  check "loop #$n: kubelet log: UnmountDevice succeeded" \
    at_least kubelet "UnmountDevice succeeded for volume \"[^\"]*$v\"" "$n"
  if [ "$mode" = cluster ]; then
    check "loop #$n: controller-manager log: DetachVolume.Detach succeeded for volume \"$v\"" \
      at_least kube-controller-manager "DetachVolume.Detach succeeded for volume \"[^\"]*$v\"" "$n"
    check "loop #$n: Node status.volumesInUse empty" test -z "$(node_in_use)"
  else
    check "loop #$n: kubelet log: DetachVolume.Detach succeeded for volume \"$v\"" \
      at_least kubelet "DetachVolume.Detach succeeded for volume \"[^\"]*$v\"" "$n"
  fi
  check "loop #$n: the volume's image (its data) is kept: $(cd "$FLEXWASM_STATE_DIR" && find . -name '*.img' | paste -sd' ')" \
    test -n "$(find "$FLEXWASM_STATE_DIR" -name "$v.img")"
}

tmpfs_cycle() {
  local s uid pm v=$TMPFS_VOLUME
  pod_manifest tmpfs-scratch 1 "$(tmpfs_volume_yaml)" "$TMPFS_SCRIPT" "$v" >"$work/tmpfs-scratch.yaml"
  say "tmpfs: pod tmpfs-scratch with an inline $TMPFS_DRIVER (node-only) flexVolume"
  s=$(ms)
  apply_pod tmpfs-scratch "$work/tmpfs-scratch.yaml" || { fail "tmpfs: apply the pod" "see $logs/kubectl.log"; return 1; }
  if ! wait_for 180 pod_up tmpfs-scratch "TMPFS-OK $token"; then
    fail "tmpfs: pod Running and its log says 'TMPFS-OK'" "$(pod_debug tmpfs-scratch)"
    return 1
  fi
  timing "tmpfs: apply -> Running" $(($(ms) - s))
  pass "tmpfs: pod Running, wrote and read back a file"
  check "tmpfs: in the pod, /vol is $(pod_log tmpfs-scratch | grep -oE 'flexwasm-tmpfs /vol tmpfs \S+' | head -1)" \
    pod_log_has tmpfs-scratch 'mounted: flexwasm-tmpfs /vol tmpfs'
  uid=$(pod_field tmpfs-scratch uid)
  pm=$kroot/pods/$uid/volumes/$(vendor_dir "$TMPFS_DRIVER")/$v
  check "tmpfs: the pod volume dir is a tmpfs mount ($(mount_fstype "$pm"))" test "$(mount_fstype "$pm")" = tmpfs
  check "tmpfs: kubelet log: MountVolume.SetUp succeeded for volume \"$v\"" at_least kubelet "MountVolume.SetUp succeeded for volume \"$v\"" 1
  check "tmpfs: kubelet log: no MountDevice (node-only driver)" test "$(count kubelet "MountDevice succeeded for volume \"$v\"")" -eq 0
  if [ "$mode" = cluster ]; then
    check "tmpfs: nothing attached for it (Node status.volumesAttached has no $TMPFS_DRIVER)" no_tmpfs_on_node
    check "tmpfs: controller-manager log: no attach of it" test "$(count kube-controller-manager "Attach succeeded for volume \"$v\"")" -eq 0
  fi
  say "tmpfs: delete the pod; expect unmount"
  s=$(ms)
  delete_pod tmpfs-scratch
  wait_for 120 tmpfs_released || { fail "tmpfs: after delete, no mount left" "mounts: $(volume_mounts | paste -sd' ')"; return 1; }
  timing "tmpfs: delete -> unmounted" $(($(ms) - s))
  pass "tmpfs: pod gone, its tmpfs unmounted"
  check "tmpfs: kubelet log: UnmountVolume.TearDown succeeded" at_least kubelet "UnmountVolume.TearDown succeeded for volume \"[^\"]*$v\"" 1
}

# --- the run ----------------------------------------------------------------------------------
if loop_cycle 1 WROTE; then
  if [ "$mode" = cluster ]; then
    check "kubelet log: Loaded volume plugin \"$LOOP_DRIVER\"" at_least kubelet "Loaded volume plugin \"$LOOP_DRIVER\"" 1
    check "controller-manager log: Loaded volume plugin \"$LOOP_DRIVER\"" \
      at_least kube-controller-manager "Loaded volume plugin \"$LOOP_DRIVER\"" 1
  else
    check "kubelet log: Loaded volume plugin \"$LOOP_DRIVER\"" at_least kubelet "Loaded volume plugin \"$LOOP_DRIVER\"" 1
  fi
  loop_cycle 2 FOUND || true
fi
tmpfs_cycle || true

# Uninstall through the DaemonSet: deleting it stops the installer (SIGTERM),
# which removes the driver (nothing of it is attached or mounted now).
uninstall_daemonset() {
  local s
  s=$(ms)
  say "uninstall: kubectl delete the DaemonSet"
  # The container's log as containerd writes it (CRI format). kubelet removes
  # the file with the pod, possibly within a poll interval of the installer's
  # last line, so hold it open from before the delete and read it through
  # that descriptor (an unlinked file stays readable while open).
  local f
  f=$(compgen -G "/var/log/pods/flexwasm-system_flexwasm-loop-*/driver/*.log" | head -1)
  [ -n "$f" ] && exec 9<"$f" ||
    { fail "the installer's container log exists under /var/log/pods" "$(ls -R /var/log/pods 2>&1 | head -20)"; return 1; }
  k delete -f "$work/deploy-loop.yaml" --wait=false >>"$logs/install.log" 2>&1 ||
    { fail "kubectl delete -f deploy/loop.yaml" "see $logs/install.log"; exec 9<&-; return 1; }
  installer_log() { cat /proc/$$/fd/9 2>/dev/null; }
  wait_for 60 eval 'installer_log | grep -q "stopping;"'
  installer_log >"$logs/daemonset.log"
  exec 9<&-
  wait_for 60 eval '! compgen -G "$kubelet_plugins/$(vendor_dir "$LOOP_DRIVER")" >/dev/null' ||
    { fail "deleting the DaemonSet uninstalls $LOOP_DRIVER from the plugin dir" "see $logs/daemonset.log"; return 1; }
  pass "deleting the DaemonSet uninstalled $LOOP_DRIVER: $(vendor_dir "$LOOP_DRIVER")/ is gone from kubelet's plugin dir"
  local what="the installer's log: it followed the call log, then 'stopping; uninstalled $LOOP_DRIVER' on SIGTERM"
  if grep -q "detach *Success" "$logs/daemonset.log" && grep -q "stopping; uninstalled $LOOP_DRIVER" "$logs/daemonset.log"; then
    pass "$what"
  else
    fail "$what" "its last lines: $(tail -5 "$logs/daemonset.log" | paste -sd'|')"
  fi
  check "the installer's log holds no policy or config content" eval '! grep -q "plugin_sha256\|quota_kib" "$logs/daemonset.log"'
  wait_for 60 eval '[ -z "$(k -n flexwasm-system get pods -o name)" ]' ||
    fail "the DaemonSet's pods are gone" "$(k -n flexwasm-system get pods 2>&1)"
  timing "uninstall via the DaemonSet" $(($(ms) - s))
}
[ "$install_via" = daemonset ] && { uninstall_daemonset || true; }

# flexwasm's own call logs: every call, by op and status.
if compgen -G "$FLEXWASM_LOG_DIR/*.log" >/dev/null; then
  echo
  echo "flexwasm call log ($FLEXWASM_LOG_DIR):"
  python3 - "$FLEXWASM_LOG_DIR"/*.log >"$work/calls.txt" <<'PY'
import collections, json, sys
for path in sys.argv[1:]:
    counts = collections.Counter()
    for line in open(path):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        counts[(r.get("op"), r.get("status"))] += 1
    print(path.rsplit("/", 1)[-1] + ": " + ", ".join(f"{op} {st} x{n}" for (op, st), n in sorted(counts.items())))
PY
  sed 's/^/  /' "$work/calls.txt"
  check "flexwasm call logs: no call answered Failure" no_failed_calls
  ops=(attach waitforattach mountdevice mount unmount unmountdevice detach)
  [ "$mode" = cluster ] && ops+=(isattached)
  for op in "${ops[@]}"; do
    check "flexwasm call log: $LOOP_DRIVER $op answered Success" grep -qE "^$(vendor_dir "$LOOP_DRIVER")\.log: .*\b$op Success x" "$work/calls.txt"
  done
else
  fail "flexwasm wrote call logs to $FLEXWASM_LOG_DIR"
fi
