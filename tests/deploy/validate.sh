#!/usr/bin/env bash
# Offline checks of deploy/: the manifests, the kubeadm patch and the image.
#
#   bash tests/deploy/validate.sh
#
# 1. every manifest (and kubeadm v1.20's controller-manager pod with
#    deploy/kubeadm's patch applied) against Kubernetes 1.20's schema,
#    strict (unknown fields fail), with PyPI kubernetes-validate in a venv
#    at target/deploy/venv (pinned in tests/deploy/requirements.txt); a
#    manifest with an unknown field must fail it;
# 2. what the schema cannot see (tests/deploy/check_manifests.py);
# 3. deploy/build-image.sh, twice: the same archive byte for byte; it
#    refuses a dynamically linked host or runtime-only host;
# 4. the archive's layout, files, modes, static binary, and the manifests'
#    policies and CLI arguments against that binary
#    (tests/deploy/check_image.py);
# 5. the image under containerd + runc (tests/deploy/runtime.sh), when they
#    are installed; under CI they are installed, and a skip fails.
#
# The static host: $FLEXWASM_STATIC_HOST_BIN (.ci/run exports it), else
# build-image.sh builds it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

out=target/deploy
venv=$out/venv
mkdir -p "$out"
if ! "$venv/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/deploy/requirements.txt
fi

status=0
step() { echo "== $*"; }

step "manifests: Kubernetes 1.20 schema, strict"
"$venv/bin/python" tests/deploy/check_manifests.py . "$out" || status=1
manifests=(deploy/*.yaml "$out/kube-controller-manager.patched.yaml")
"$venv/bin/kubernetes-validate" --quiet -k 1.20.0 --strict "${manifests[@]}" || status=1
echo "schema: ${#manifests[@]} files validated"
# The validator must reject what the API server would: an unknown field
# deep in the pod template.
"$venv/bin/python" - "$out/unknown-field.yaml" <<'EOF'
import sys, yaml
docs = list(yaml.safe_load_all(open("deploy/tmpfs.yaml")))
ds = next(d for d in docs if d["kind"] == "DaemonSet")
ds["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {"privileged": True}
yaml.safe_dump(ds, open(sys.argv[1], "w"))
EOF
if "$venv/bin/kubernetes-validate" --quiet -k 1.20.0 --strict "$out/unknown-field.yaml" >/dev/null 2>&1; then
  echo "FAIL kubernetes-validate --strict accepted an unknown field (securityContxt)"
  status=1
else
  echo "schema: an unknown field is rejected"
fi

step "image: build twice"
bash deploy/build-image.sh
archive=$out/flexwasm-image.tar
first=$(sha256sum <"$archive")
cp "$archive" "$out/flexwasm-image.first.tar"
bash deploy/build-image.sh >/dev/null 2>&1
if [ "$(sha256sum <"$archive")" = "$first" ]; then
  echo "image: reproducible (sha256 ${first%% *})"
else
  echo "FAIL two builds of the image differ"
  status=1
fi
rm -f "$out/flexwasm-image.first.tar"
dynamic=$(readlink -f /bin/sh)
static_host=${FLEXWASM_STATIC_HOST_BIN:-${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-musl/release/flexwasm}
# Either binary dynamically linked: refused, for that reason.
for pair in "$dynamic $static_host" "$static_host $dynamic"; do
  set -- $pair
  if python3 deploy/oci_image.py --host-bin "$1" --runtime-bin "$2" --tag t --version 0 --epoch 0 \
      --out "$out/dynamic.tar" 2>"$out/dynamic.err"; then
    echo "FAIL oci_image.py took a dynamically linked binary ($dynamic)"
    status=1
  elif ! grep -q "dynamically linked" "$out/dynamic.err"; then
    echo "FAIL oci_image.py refused ($1, $2) for another reason: $(cat "$out/dynamic.err")"
    status=1
  else
    echo "image: a dynamically linked binary is refused: $(cat "$out/dynamic.err")"
  fi
done
rm -f "$out/dynamic.tar" "$out/dynamic.err"

version=$(python3 -c '
import tomllib
with open("Cargo.toml", "rb") as f:
    print(tomllib.load(f)["workspace"]["package"]["version"])')
step "image: contents"
"$venv/bin/python" tests/deploy/check_image.py . "$archive" "$version" || status=1

step "image: containerd + runc"
if [ -n "${CI:-}" ] && ! { command -v containerd && command -v runc; } >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends containerd runc
fi
if command -v containerd >/dev/null && command -v runc >/dev/null && [ "$(id -u)" = 0 ]; then
  bash tests/deploy/runtime.sh "$archive" "$version" || status=1
elif [ -n "${CI:-}" ]; then
  echo "FAIL containerd + runc (as root) are needed under CI"
  status=1
else
  echo "SKIP containerd/runc not installed or not root"
fi

if [ "$status" -eq 0 ]; then echo "deploy: all checks passed"; else echo "deploy: FAILED"; fi
exit "$status"
