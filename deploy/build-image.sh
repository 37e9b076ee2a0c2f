#!/usr/bin/env bash
# Build the flexwasm container image as an OCI image archive, without a
# registry or a container daemon:
#
#   target/deploy/flexwasm-image.tar   flexwasm:dev and flexwasm:<version>
#
# holding the static host at /flexwasm, the static runtime-only host (no
# Cranelift; the DaemonSets install it as each driver's executable) at
# /flexwasm-runtime and every reference plugin at
# /plugins/<name>.wasm with /plugins/<name>.policy.toml (deploy/oci_image.py
# writes the layout). Load it with
#
#   ctr -n k8s.io images import target/deploy/flexwasm-image.tar   # containerd (kubelet's images)
#   podman load -i target/deploy/flexwasm-image.tar
#
# The static host: $FLEXWASM_STATIC_HOST_BIN if set (CI builds it up front),
# else built here with the musl target; the runtime-only host:
# $FLEXWASM_RUNTIME_HOST_BIN if set, else built here into
# target/runtime-only (wasmtime with other features: a target dir of its
# own, the one tests/test.sh uses). The plugins are built with cargo
# (honours CARGO_TARGET_DIR). SOURCE_DATE_EPOCH sets every mtime and the
# creation time (default: the last commit's time), so the same inputs give
# the same archive, byte for byte.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out_dir=target/deploy
out=$out_dir/flexwasm-image.tar
target_dir=${CARGO_TARGET_DIR:-target}

host_bin=${FLEXWASM_STATIC_HOST_BIN:-}
if [ -z "$host_bin" ]; then
  cargo build --release --target x86_64-unknown-linux-musl -p flexwasm
  host_bin=$target_dir/x86_64-unknown-linux-musl/release/flexwasm
fi

runtime_bin=${FLEXWASM_RUNTIME_HOST_BIN:-}
if [ -z "$runtime_bin" ]; then
  CARGO_TARGET_DIR=target/runtime-only cargo build --release --target x86_64-unknown-linux-musl \
    -p flexwasm --no-default-features
  runtime_bin=target/runtime-only/x86_64-unknown-linux-musl/release/flexwasm
fi

plugins=()
packages=()
for dir in plugins/*/; do
  name=$(basename "$dir")
  plugins+=("$name")
  packages+=(-p "flexwasm-plugin-$name")
done
cargo build --release --target wasm32-wasip2 "${packages[@]}"

version=$(python3 -c '
import sys, tomllib
with open("Cargo.toml", "rb") as f:
    print(tomllib.load(f)["workspace"]["package"]["version"])')
# The binary must be the one this tree describes (a stale static host
# would ship under the wrong version).
for bin in "$host_bin" "$runtime_bin"; do
  if bin_version=$("$bin" --version 2>/dev/null); then
    if [ "$bin_version" != "flexwasm $version" ]; then
      echo "build-image: $bin says '$bin_version', Cargo.toml says $version: rebuild it" >&2
      exit 1
    fi
  fi
done

args=()
for name in "${plugins[@]}"; do
  args+=(--plugin "$name=$target_dir/wasm32-wasip2/release/flexwasm_plugin_${name//-/_}.wasm:plugins/$name/policy.toml")
done

revision=$(git rev-parse HEAD 2>/dev/null || true)
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
mkdir -p "$out_dir"
python3 deploy/oci_image.py --host-bin "$host_bin" --runtime-bin "$runtime_bin" "${args[@]}" \
  --name flexwasm --tag dev --tag "$version" --version "$version" \
  --revision "$revision" --epoch "$epoch" --out "$out"
