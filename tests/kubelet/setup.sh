#!/usr/bin/env bash
# Set up the "real kubelet client" FlexVolume harness: Kubernetes v1.20.2's
# own pkg/volume/flexvolume code, built as a Go test binary that drives a
# driver executable (see realdriver_harness_test.go).
#
# Derived from the project's shared harness (/work/shared/harness/kubelet/:
# setup.sh and env.sh, documented in its RUN.md). Differences: everything is
# cached under target/kubelet-harness/ and each step is skipped when its
# result is already there, and the test binary is built once (`go test -c`).
#
#   bash tests/kubelet/setup.sh      # root; prints the test binary's path last
#
# Idempotent. Needs the machine's Debian archive (packages, and the source
# package `kubernetes` through a private deb-src list: the system's apt
# configuration is only read, never changed). No Go module proxy: GOPATH mode
# compiles the tarball's vendor/ tree.
#
# Layout of $FLEXWASM_KUBELET_HARNESS_DIR (default <repo>/target/kubelet-harness):
#   apt/              private apt lists, cache and the downloaded source package
#   k8s/              the extracted v1.20.2 tree (+ our harness test file)
#   gopath/src/k8s.io/kubernetes -> ../../../k8s
#   gocache/          Go build cache
#   flexvolume.test   the built test binary
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
H=${FLEXWASM_KUBELET_HARNESS_DIR:-$repo/target/kubelet-harness}
# K8S_ORIG, K8S_ORIG_SHA256, k8s_source_fetch, k8s_source_extract
. "$here/k8s-source.sh"
GOROOT_BIN=/usr/lib/go-1.19/bin
TEST_FILE=realdriver_harness_test.go

if [ "$(id -u)" -ne 0 ]; then
  echo "kubelet harness setup: run as root (apt-get install)" >&2
  exit 1
fi
mkdir -p "$H"
# One setup at a time (two CI jobs sharing a target dir).
exec 8>"$H/.setup.lock"
flock 8

now() { date +%s%N; }
step_start=$(now)
step() { # step NAME: print how long the previous step took
  local t=$(now)
  printf 'kubelet harness setup: %-32s %6.1fs\n' "$1" "$(( (t - step_start) / 1000000 ))e-3"
  step_start=$t
}

# --- 1. packages: Go 1.19 (what the harness was written and run with), the
# tools kubelet's mounter and our host call.
need=()
[ -x "$GOROOT_BIN/go" ] || need+=(golang-1.19-go)
command -v gcc >/dev/null || need+=(gcc) # cgo, as in a stock `go test`
command -v mount >/dev/null || need+=(mount)
command -v losetup >/dev/null || need+=(mount)
command -v unshare >/dev/null || need+=(util-linux)
command -v blkid >/dev/null || need+=(util-linux)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v mkfs.xfs >/dev/null || need+=(xfsprogs)
command -v sha256sum >/dev/null || need+=(coreutils)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # The system's package lists may be missing in a fresh container: refresh
  # them (as .ci/run does) only when the install cannot find a package.
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi
step "packages"

# --- 2. the Kubernetes v1.20.2 source: Debian's `kubernetes` source package,
# fetched with private apt lists, verified by SHA-256 (k8s-source.sh).
src=$H/apt/src/$K8S_ORIG
k8s_source_fetch "$H/apt" || { echo "kubelet harness setup: no verified source tarball" >&2; exit 1; }
step "source tarball (sha256 ok)"

# --- 3. extract once, and expose the tree as $GOPATH/src/k8s.io/kubernetes.
k8s_source_extract "$src" "$H/k8s"
mkdir -p "$H/gopath/src/k8s.io"
ln -sfn "$H/k8s" "$H/gopath/src/k8s.io/kubernetes"
step "extract"

# --- 4. install our harness file and build the test binary, unless the
# binary was built from exactly this file with this Go.
# GOPATH mode: v1.20's vendor/modules.txt was written by Go 1.15 and Go 1.19
# rejects it in -mod=vendor mode ("updates to go.mod needed"); GOPATH mode
# compiles the same vendored sources without touching the tree.
export PATH=$GOROOT_BIN:$PATH GO111MODULE=off GOFLAGS= GOPROXY=off GOENV=off
export GOPATH=$H/gopath GOCACHE=$H/gocache
pkg=$H/k8s/pkg/volume/flexvolume
cmp -s "$here/$TEST_FILE" "$pkg/$TEST_FILE" || install -m 644 "$here/$TEST_FILE" "$pkg/$TEST_FILE"
stamp="$(sha256sum <"$here/$TEST_FILE" | cut -d' ' -f1) $(go version)"
if [ ! -x "$H/flexvolume.test" ] || [ "$(cat "$H/flexvolume.test.stamp" 2>/dev/null)" != "$stamp" ]; then
  (cd "$H/gopath/src/k8s.io/kubernetes" && go test -c -o "$H/flexvolume.test.tmp" ./pkg/volume/flexvolume/)
  mv -f "$H/flexvolume.test.tmp" "$H/flexvolume.test"
  echo "$stamp" >"$H/flexvolume.test.stamp"
fi
step "test binary"
echo "$H/flexvolume.test"
