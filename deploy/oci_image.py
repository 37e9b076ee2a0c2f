#!/usr/bin/env python3
"""Write the flexwasm container image as an OCI image archive, by hand.

No registry, no daemon, no image tool: one uncompressed layer tar, the
image config, the manifest, `index.json` and `oci-layout`, plus a
docker-archive `manifest.json` naming the same blobs, all in one tar. Both
`ctr -n k8s.io images import` and `podman load` take it; `skopeo inspect
oci-archive:` and `umoci` read it.

Reproducible: every entry of both tars has the same mtime (SOURCE_DATE_EPOCH),
uid/gid 0 with no user or group names, fixed modes, and entries in sorted
order; JSON is written with sorted keys. The layer is not compressed, so the
digests do not depend on the zlib on the build machine.

Layer contents (FROM scratch: no shell, no libc; the host binary is static):

    /flexwasm                      0755  the static host (refused if it has an ELF interpreter or needs a shared library)
    /flexwasm-runtime              0755  the static runtime-only host (no compiler), installed as each driver's executable
    /plugins/<name>.wasm           0644  each reference plugin
    /plugins/<name>.policy.toml    0644  its reference grant policy

Used by deploy/build-image.sh; `--help` for the arguments.
"""

import argparse
import datetime
import hashlib
import io
import json
import os
import struct
import sys
import tarfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"

# ELF e_machine -> OCI architecture
ELF_ARCH = {0x3E: "amd64", 0xB7: "arm64", 0xF3: "riscv64", 0x15: "ppc64le", 0x16: "s390x"}
PT_DYNAMIC, PT_INTERP = 2, 3
DT_NULL, DT_NEEDED = 0, 1


def elf_static_arch(data: bytes, path: str) -> str:
    """The OCI architecture of a 64-bit little-endian ELF executable that
    needs no interpreter and no shared library; exits with a message
    otherwise (a dynamic host cannot run in a FROM-scratch image, nor in a
    distroless controller-manager)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        sys.exit(f"{path}: not a 64-bit little-endian ELF file")
    e_machine = struct.unpack_from("<H", data, 18)[0]
    arch = ELF_ARCH.get(e_machine)
    if arch is None:
        sys.exit(f"{path}: unknown ELF machine {e_machine:#x}")
    e_phoff = struct.unpack_from("<Q", data, 32)[0]
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    for i in range(e_phnum):
        off = e_phoff + i * e_phentsize
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", data, off)
        if p_type == PT_INTERP:
            interp = data[p_offset : p_offset + p_filesz].rstrip(b"\0").decode(errors="replace")
            sys.exit(f"{path}: dynamically linked (interpreter {interp}); the image needs the static (musl) host")
        if p_type == PT_DYNAMIC:
            for j in range(0, p_filesz, 16):
                tag = struct.unpack_from("<q", data, p_offset + j)[0]
                if tag == DT_NULL:
                    break
                if tag == DT_NEEDED:
                    sys.exit(f"{path}: needs shared libraries; the image needs the static (musl) host")
    return arch


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def tar_bytes(entries, mtime: int) -> bytes:
    """A tar of `entries` [(path, mode, bytes or None for a directory)],
    sorted by path, owned by 0:0 with no names, every mtime the same."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path, mode, data in sorted(entries, key=lambda e: e[0]):
            info = tarfile.TarInfo(path)
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = mode
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        sys.exit(f"{path}: {e.strerror}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host-bin", required=True, help="the static flexwasm binary")
    ap.add_argument(
        "--runtime-bin",
        required=True,
        help="the static runtime-only flexwasm binary (built with --no-default-features)",
    )
    ap.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="NAME=WASM:POLICY",
        help="a plugin and its policy, placed as /plugins/NAME.wasm and /plugins/NAME.policy.toml",
    )
    ap.add_argument("--name", default="flexwasm", help="repository name (default flexwasm)")
    ap.add_argument("--tag", action="append", default=[], help="a tag; repeat for several")
    ap.add_argument("--version", required=True, help="org.opencontainers.image.version")
    ap.add_argument("--revision", default="", help="org.opencontainers.image.revision (a git commit)")
    ap.add_argument("--epoch", type=int, required=True, help="mtime of every entry and the image's creation time")
    ap.add_argument("--out", required=True, help="the archive to write")
    args = ap.parse_args()
    if not args.tag:
        sys.exit("at least one --tag")

    host = read(args.host_bin)
    arch = elf_static_arch(host, args.host_bin)
    runtime = read(args.runtime_bin)
    if elf_static_arch(runtime, args.runtime_bin) != arch:
        sys.exit(f"{args.runtime_bin} is not for {arch} like {args.host_bin}")
    entries = [
        ("flexwasm", 0o755, host),
        ("flexwasm-runtime", 0o755, runtime),
        ("plugins", 0o755, None),
    ]
    for spec in args.plugin:
        name, sep, files = spec.partition("=")
        wasm, sep2, policy = files.partition(":")
        if not (sep and sep2 and name and wasm and policy) or "/" in name:
            sys.exit(f"--plugin {spec!r}: expected NAME=WASM:POLICY")
        entries.append((f"plugins/{name}.wasm", 0o644, read(wasm)))
        entries.append((f"plugins/{name}.policy.toml", 0o644, read(policy)))

    layer = tar_bytes(entries, args.epoch)
    layer_digest = sha256(layer)
    created = datetime.datetime.fromtimestamp(args.epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = {
        "org.opencontainers.image.title": "flexwasm",
        "org.opencontainers.image.description": "Kubernetes FlexVolume driver host running sandboxed WebAssembly storage plugins",
        "org.opencontainers.image.version": args.version,
        "org.opencontainers.image.licenses": "Apache-2.0",
    }
    if args.revision:
        labels["org.opencontainers.image.revision"] = args.revision
    config = canonical_json(
        {
            "created": created,
            "architecture": arch,
            "os": "linux",
            "config": {"Entrypoint": ["/flexwasm"], "Cmd": ["--help"], "WorkingDir": "/", "Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "history": [{"created": created, "created_by": "deploy/build-image.sh"}],
        }
    )
    config_digest = sha256(config)
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_TAR, "digest": layer_digest, "size": len(layer)}],
            "annotations": {"org.opencontainers.image.created": created},
        }
    )
    manifest_digest = sha256(manifest)
    refs = [f"{args.name}:{t}" for t in args.tag]
    # One index entry per tag: containerd names the image after
    # io.containerd.image.name (fully qualified, as kubelet asks for it);
    # podman and skopeo use org.opencontainers.image.ref.name.
    index = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "platform": {"architecture": arch, "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": f"docker.io/library/{ref}",
                        "org.opencontainers.image.ref.name": ref,
                    },
                }
                for ref in refs
            ],
        }
    )

    def blob(digest: str) -> str:
        return "blobs/sha256/" + digest.split(":", 1)[1]

    docker_manifest = canonical_json([{"Config": blob(config_digest), "RepoTags": refs, "Layers": [blob(layer_digest)]}])
    archive = tar_bytes(
        [
            ("blobs", 0o755, None),
            ("blobs/sha256", 0o755, None),
            (blob(layer_digest), 0o644, layer),
            (blob(config_digest), 0o644, config),
            (blob(manifest_digest), 0o644, manifest),
            ("oci-layout", 0o644, canonical_json({"imageLayoutVersion": "1.0.0"})),
            ("index.json", 0o644, index),
            ("manifest.json", 0o644, docker_manifest),
        ],
        args.epoch,
    )
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(archive)
    os.replace(tmp, args.out)
    print(f"{args.out}: {', '.join(refs)} ({arch}), manifest {manifest_digest}, {len(archive)} bytes")


if __name__ == "__main__":
    main()
