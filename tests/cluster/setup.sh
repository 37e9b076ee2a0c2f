#!/usr/bin/env bash
# Set up a real single-node Kubernetes v1.20.2 cluster's parts, for
# tests/cluster/run.sh: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kubectl, containerd + runc, and two container
# images (pause, busybox) as OCI archives. Everything is cached under
# target/cluster/ and each step is skipped when its result is already there.
#
#   bash tests/cluster/setup.sh        # root; idempotent
#
# Nothing here starts a daemon or changes the host's configuration:
# - Build tools (Go 1.19, gcc, musl-gcc, openssl, ...) are apt-installed
#   when missing, as tests/kubelet/setup.sh does.
# - containerd, runc, etcd-server, containernetworking-plugins and
#   busybox-static are fetched with `apt-get download` and unpacked with
#   `dpkg-deb -x` into target/cluster/root/, not installed: etcd-server's
#   maintainer scripts would start a system etcd on :2379 (sysvinit script),
#   and the test needs none of their system configuration.
# - The v1.20.2 source is Debian's `kubernetes` source package
#   (tests/kubelet/k8s-source.sh; the tarball tests/kubelet/setup.sh already
#   fetched is reused when it is there).
# - kube-apiserver needs pkg/generated/openapi/zz_generated.openapi.go, which
#   upstream's `make` generates: the vendored openapi-gen writes it outside
#   the tree, with the Makefile's package selection, and `go build -overlay`
#   splices it in. The five binaries are one `go build` in GOPATH mode.
# - pause is build/pause/linux/pause.c built with `musl-gcc -static`; the
#   images are written as OCI layouts by oci-image.py (no registry, no docker).
#
# Layout of $FLEXWASM_CLUSTER_DIR (default <repo>/target/cluster):
#   apt/        private apt lists + the source package (when not reused)
#   debs/       the downloaded .debs;  root/  what they unpack to
#   gopath/src/k8s.io/kubernetes   the v1.20.2 tree;  gocache/  Go build cache
#   gen/        openapi-gen output and the -overlay file
#   bin/        kubelet kube-apiserver kube-controller-manager kube-scheduler
#               kubectl openapi-gen pause
#   images/     pause.oci.tar, busybox.oci.tar (+ the rootfs they came from)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
C=${FLEXWASM_CLUSTER_DIR:-$repo/target/cluster}
GOROOT_BIN=/usr/lib/go-1.19/bin
# The daemons, unpacked (not installed) into $C/root.
DEBS=(containerd runc etcd-server containernetworking-plugins busybox-static)
CMDS=(kubelet kube-apiserver kube-controller-manager kube-scheduler kubectl)
PAUSE_IMAGE=flexwasm.invalid/pause:3.2
BUSYBOX_IMAGE=flexwasm.invalid/busybox:1.35
. "$repo/tests/kubelet/k8s-source.sh"

if [ "$(id -u)" -ne 0 ]; then
  echo "cluster setup: run as root (apt-get install)" >&2
  exit 1
fi
mkdir -p "$C"
exec 8>"$C/.setup.lock"
flock 8

ms() { echo $(($(date +%s%N) / 1000000)); }
t0=$(ms)
step_start=$t0
step() { # step NAME: how long the previous step took
  local t
  t=$(ms)
  printf 'cluster setup: %-34s %6d.%02ds\n' "$1" $(((t - step_start) / 1000)) $((((t - step_start) % 1000) / 10))
  step_start=$t
}

# --- 1. build tools ----------------------------------------------------------
need=()
[ -x "$GOROOT_BIN/go" ] || need+=(golang-1.19-go)
command -v gcc >/dev/null || need+=(gcc)
command -v musl-gcc >/dev/null || need+=(musl-tools)
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
command -v flock >/dev/null || need+=(util-linux)
command -v unshare >/dev/null || need+=(util-linux)
command -v mount >/dev/null || need+=(mount)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v dpkg-deb >/dev/null || need+=(dpkg)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi
step "build tools"

# --- 2. the daemons, unpacked -------------------------------------------------
if [ ! -f "$C/root/.unpacked" ]; then
  rm -rf "$C/debs" "$C/root"
  mkdir -p "$C/debs" "$C/root"
  (cd "$C/debs" && apt-get download -qq "${DEBS[@]}" 2>/dev/null) ||
    { apt-get update -qq && (cd "$C/debs" && apt-get download -qq "${DEBS[@]}" 2>/dev/null); }
  for deb in "$C"/debs/*.deb; do
    dpkg-deb -x "$deb" "$C/root"
  done
  (cd "$C/debs" && ls -1 *.deb) >"$C/root/.unpacked"
fi
for b in usr/bin/containerd usr/bin/containerd-shim-runc-v2 usr/bin/ctr usr/sbin/runc usr/bin/etcd \
  usr/lib/cni/loopback bin/busybox; do
  [ -x "$C/root/$b" ] || { echo "cluster setup: $C/root/$b missing (rm -rf $C/root to refetch)" >&2; exit 1; }
done
step "containerd runc etcd cni busybox"

# --- 3. the v1.20.2 source -----------------------------------------------------
src=$repo/target/kubelet-harness/apt/src/$K8S_ORIG
if ! k8s_source_ok "$src"; then
  src=$C/apt/src/$K8S_ORIG
  k8s_source_fetch "$C/apt" || { echo "cluster setup: no verified source tarball" >&2; exit 1; }
fi
step "source tarball (sha256 ok)"
K=$C/gopath/src/k8s.io/kubernetes
k8s_source_extract "$src" "$K"
step "extract"

export PATH=$GOROOT_BIN:$PATH GO111MODULE=off GOFLAGS= GOPROXY=off GOENV=off
export GOPATH=$C/gopath GOCACHE=$C/gocache
mkdir -p "$C/bin" "$C/gen"

# --- 4. zz_generated.openapi.go, outside the tree -------------------------------
gen=$C/gen/k8s.io/kubernetes/pkg/generated/openapi/zz_generated.openapi.go
gen_stamp="$K8S_ORIG_SHA256 $(go version)"
if [ ! -s "$gen" ] || [ "$(cat "$C/gen/.stamp" 2>/dev/null)" != "$gen_stamp" ]; then
  (cd "$K" && go build -o "$C/bin/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen)
  # build/root/Makefile.generated_files: every dir with Go files (staging
  # named as vendor/, ./vendor itself and _*, .* pruned), the files in them
  # with a `// +k8s:` tag, of those the ones naming `+k8s:openapi-gen=`,
  # minus code-generator's and sample-apiserver's.
  inputs=$(python3 - "$K" <<'EOF'
import os, re, sys
k = sys.argv[1]
tag = re.compile(r"^// *\+k8s:", re.M)
found = set()
for root, dirs, files in os.walk(k):
    rel = os.path.relpath(root, k)
    if rel == ".":
        dirs[:] = [d for d in dirs if not (d.startswith("_") or d.startswith(".") or d == "vendor")]
        continue
    name = "vendor" + rel[len("staging/src"):] if rel.startswith("staging/src/") else rel
    if name.startswith(("vendor/k8s.io/code-generator/", "vendor/k8s.io/sample-apiserver/")):
        continue
    for f in files:
        if f.endswith(".go"):
            text = open(os.path.join(root, f), encoding="utf-8", errors="replace").read()
            if tag.search(text) and "+k8s:openapi-gen=" in text:
                found.add(name)
                break
print(",".join("k8s.io/kubernetes/" + d for d in sorted(found)))
EOF
)
  rm -rf "$C/gen/k8s.io"
  (cd "$K" && "$C/bin/openapi-gen" --logtostderr -v 0 -i "$inputs" \
    -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
    -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
    -r "$C/gen/violations.report" -o "$C/gen") >"$C/gen/openapi-gen.log" 2>&1 ||
    { echo "cluster setup: openapi-gen failed:" >&2; tail -20 "$C/gen/openapi-gen.log" >&2; exit 1; }
  [ -s "$gen" ] || { echo "cluster setup: openapi-gen wrote no $gen" >&2; exit 1; }
  # The Makefile fails on a report that differs from the checked-in list;
  # here a difference only means our package selection drifted from it.
  if ! diff -q "$C/gen/violations.report" "$K/api/api-rules/violation_exceptions.list" >/dev/null; then
    echo "cluster setup: note: openapi-gen's API rule report differs from api/api-rules/violation_exceptions.list" >&2
  fi
  printf '{"Replace":{"%s":"%s"}}\n' "$K/pkg/generated/openapi/zz_generated.openapi.go" "$gen" >"$C/gen/overlay.json"
  echo "$gen_stamp" >"$C/gen/.stamp"
fi
step "openapi-gen"

# --- 5. the five binaries, one go build -----------------------------------------
# As upstream's hack/lib/golang.sh: version stamped, symbols and DWARF
# stripped (a third of the size, a faster link).
ldflags="-s -w"
for kv in gitVersion=v1.20.2 gitMajor=1 gitMinor=20 gitTreeState=archive buildDate=2021-01-13T13:20:00Z; do
  for p in client-go/pkg/version component-base/version; do
    ldflags+=" -X 'k8s.io/kubernetes/vendor/k8s.io/$p.$kv'"
  done
done
build_stamp="$K8S_ORIG_SHA256 $(go version) $(sha256sum <"$gen" | cut -d' ' -f1) $ldflags ${CMDS[*]}"
built=1
for c in "${CMDS[@]}"; do [ -x "$C/bin/$c" ] || built=0; done
if [ "$built" -eq 0 ] || [ "$(cat "$C/bin/.stamp" 2>/dev/null)" != "$build_stamp" ]; then
  rm -f "$C/bin/.stamp"
  pkgs=()
  for c in "${CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  (cd "$K" && go build -overlay "$C/gen/overlay.json" -ldflags "$ldflags" -o "$C/bin/" "${pkgs[@]}")
  echo "$build_stamp" >"$C/bin/.stamp"
fi
"$C/bin/kubelet" --version >/dev/null
step "go build (5 binaries)"

# --- 6. images -------------------------------------------------------------------
img_stamp="$(sha256sum "$here/oci-image.py" "$K/build/pause/linux/pause.c" "$C/root/bin/busybox" | cut -d' ' -f1 | paste -sd' ') $PAUSE_IMAGE $BUSYBOX_IMAGE"
if [ ! -s "$C/images/pause.oci.tar" ] || [ ! -s "$C/images/busybox.oci.tar" ] ||
  [ "$(cat "$C/images/.stamp" 2>/dev/null)" != "$img_stamp" ]; then
  rm -rf "$C/images"
  mkdir -p "$C/images/pause-rootfs" "$C/images/busybox-rootfs"
  musl-gcc -Os -static -DVERSION=3.2 -o "$C/bin/pause" "$K/build/pause/linux/pause.c"
  install -m 755 "$C/bin/pause" "$C/images/pause-rootfs/pause"
  python3 "$here/oci-image.py" --name "$PAUSE_IMAGE" --rootfs "$C/images/pause-rootfs" \
    --out "$C/images/pause.oci.tar" --entrypoint /pause
  r=$C/images/busybox-rootfs
  mkdir -p "$r/bin" "$r/etc" "$r/proc" "$r/sys" "$r/dev" "$r/root" "$r/tmp"
  chmod 1777 "$r/tmp"
  chmod 700 "$r/root"
  install -m 755 "$C/root/bin/busybox" "$r/bin/busybox"
  for a in $("$r/bin/busybox" --list); do
    [ "$a" = busybox ] || ln -s busybox "$r/bin/$a"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
  python3 "$here/oci-image.py" --name "$BUSYBOX_IMAGE" --rootfs "$r" \
    --out "$C/images/busybox.oci.tar" --cmd /bin/sh
  echo "$img_stamp" >"$C/images/.stamp"
fi
step "images (pause, busybox)"
printf 'cluster setup: %-34s %6d.%02ds\n' "total" $((($(ms) - t0) / 1000)) $(((($(ms) - t0) % 1000) / 10))
