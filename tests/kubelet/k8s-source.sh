# The Kubernetes v1.20.2 source tree, vendor/ included, from the Debian
# archive: sourced by tests/kubelet/setup.sh and tests/cluster/setup.sh.
#
# Debian bookworm's `kubernetes` source package 1.20.5+really1.20.2-1.1+deb12u1
# ships the upstream GitHub archive of v1.20.2 unmodified as its orig
# tarball; newer Debian packages are kubectl-only repacks. It is fetched with
# private apt lists (deb-src entries derived from the machine's own deb
# entries, so no host is named here; the system's apt configuration is only
# read) and verified by SHA-256.

K8S_ORIG=kubernetes_1.20.5+really1.20.2.orig.tar.gz
K8S_ORIG_SHA256=b83c0780efb182d928dc63d46488a847f161f04e40a94b96bf5247dd671ecdfc

# k8s_source_ok FILE: FILE is the verified tarball.
k8s_source_ok() {
  echo "$K8S_ORIG_SHA256  $1" | sha256sum -c --status - 2>/dev/null
}

# k8s_source_fetch APTDIR: leave the verified tarball at APTDIR/src/$K8S_ORIG
# (downloaded unless it is already there).
k8s_source_fetch() {
  local A=$1
  local src=$A/src/$K8S_ORIG
  k8s_source_ok "$src" && return 0
  rm -f "$src"
  mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$A/src" "$A/sourceparts"
  rm -f "$A/sourceparts/"*
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$A/sourceparts/debian.sources"
  elif [ -f /etc/apt/sources.list ]; then
    sed -n 's/^deb /deb-src /p' /etc/apt/sources.list >"$A/sourceparts/debian.list"
  else
    echo "no Debian apt sources to derive a deb-src list from" >&2
    return 1
  fi
  local APT=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$A/sourceparts"
    -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache"
    -o "APT::Sandbox::User=root")
  apt-get "${APT[@]}" update -qq
  (cd "$A/src" && apt-get "${APT[@]}" source --download-only -qq kubernetes)
  if ! k8s_source_ok "$src"; then
    echo "$src is missing or its SHA-256 is not $K8S_ORIG_SHA256" >&2
    return 1
  fi
}

# k8s_source_extract TARBALL TREE: extract once (a stamp in TREE names the
# verified tarball).
k8s_source_extract() {
  local src=$1 tree=$2
  [ "$(cat "$tree/.flexwasm-extracted" 2>/dev/null)" = "$K8S_ORIG_SHA256" ] && return 0
  rm -rf "$tree"
  mkdir -p "$tree"
  tar -xzf "$src" -C "$tree" --strip-components=1
  echo "$K8S_ORIG_SHA256" >"$tree/.flexwasm-extracted"
}
