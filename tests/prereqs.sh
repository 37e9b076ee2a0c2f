#!/usr/bin/env bash
# What the tests need on this machine, checked before anything builds.
# Missing pieces stop the run at once with the exact command that adds them;
# `--install` runs those commands instead (Debian/Ubuntu, as root).
set -euo pipefail

install=false
[ "${1:-}" = "--install" ] && install=true

missing_pkgs=()
need() { # need TOOL PACKAGE
  command -v "$1" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$1" >/dev/null 2>&1 ||
    missing_pkgs+=("$2")
}
need mkfs.ext4 e2fsprogs
need resize2fs e2fsprogs
need mkfs.xfs xfsprogs
need xfs_growfs xfsprogs
need mkfs.btrfs btrfs-progs
need btrfs btrfs-progs
need setsid util-linux
need blkid util-linux
need unshare util-linux
need losetup mount
need musl-gcc musl-tools
need cc gcc

missing_targets=()
if command -v rustup >/dev/null 2>&1; then
  installed=$(rustup target list --installed 2>/dev/null || true)
  for t in wasm32-wasip2 x86_64-unknown-linux-musl; do
    grep -qx "$t" <<<"$installed" || missing_targets+=("$t")
  done
else
  echo "prereqs: rustup not found: install Rust from https://rustup.rs first" >&2
  exit 1
fi

mapfile -t missing_pkgs < <(printf '%s\n' "${missing_pkgs[@]}" | sort -u | sed '/^$/d')
cmds=()
[ ${#missing_pkgs[@]} -gt 0 ] && cmds+=("apt-get install -y --no-install-recommends ${missing_pkgs[*]}")
[ ${#missing_targets[@]} -gt 0 ] && cmds+=("rustup target add ${missing_targets[*]}")
[ ${#cmds[@]} -eq 0 ] && exit 0

if $install; then
  for c in "${cmds[@]}"; do
    case $c in apt-get*) DEBIAN_FRONTEND=noninteractive apt-get update -qq ;; esac
    echo "prereqs: $c" >&2
    eval "DEBIAN_FRONTEND=noninteractive $c" >&2
  done
  exit 0
fi
echo "prereqs: the tests need what this machine lacks; run:" >&2
for c in "${cmds[@]}"; do echo "  $c" >&2; done
echo "(or: bash tests/prereqs.sh --install)" >&2
exit 1
