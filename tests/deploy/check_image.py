#!/usr/bin/env python3
"""Check the image archive deploy/build-image.sh wrote, and that it fits
the manifests.

Usage: check_image.py REPO_ROOT ARCHIVE VERSION. Run by
tests/deploy/validate.sh with the venv's python (PyYAML). Checks:

- the archive: an OCI layout (oci-layout, index.json, blobs named by their
  sha256, sizes as described) whose index names flexwasm:dev and
  flexwasm:VERSION (containerd's io.containerd.image.name fully qualified),
  and a docker-archive manifest.json naming the same config and layer;
- the config: linux, the binary's architecture, entrypoint /flexwasm, the
  layer's diff_id;
- the layer: exactly /flexwasm (0755), /flexwasm-runtime (0755),
  /plugins/ (0755) and, per reference
  plugin, /plugins/NAME.wasm (a component) and /plugins/NAME.policy.toml
  (the repo's, byte for byte), all 0644 regular files owned by 0:0, none
  setuid, one mtime;
- /flexwasm and /flexwasm-runtime are static: `readelf` finds no INTERP
  and no NEEDED, `file` says statically linked; each prints
  `flexwasm VERSION`; /flexwasm-runtime has no compiler (`inspect`, which
  compiles, says so);
- with that binary, every DaemonSet's ConfigMap policy grants everything
  its plugin imports (`flexwasm inspect` exits 0);
- the CLI contract the DaemonSets rely on, once the binary has `daemon`
  (skipped before): every flag they pass is in `flexwasm daemon --help`;
  `install --dry-run` with their arguments, under a temporary --root,
  writes nothing and does not print the config Secret's value; `install`
  puts the driver in the plugin dir and each --config-file value at the
  policy's path under the root, 0600; the driver executable is
  /flexwasm-runtime and answers `init` from the code /flexwasm precompiled;
  `uninstall` removes the driver.

Prints one line per failure and "image: N passed, N failed".
"""

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import tomllib

import yaml

REPO, ARCHIVE, VERSION = sys.argv[1], sys.argv[2], sys.argv[3]
REFS = ["flexwasm:dev", f"flexwasm:{VERSION}"]
PLUGIN_DIR = "usr/libexec/kubernetes/kubelet-plugins/volume/exec"
COMPONENT_HEADER = b"\0asm\x0d\x00\x01\x00"  # wasm magic, component-model layer 1

passed = 0
failed = 0


def check(ok: bool, what: str) -> bool:
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {what}")
    return ok


def finish():
    print(f"image: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def members(data: bytes):
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return [(m, t.extractfile(m).read() if m.isreg() else None) for m in t.getmembers()]


def check_entries(entries, what: str):
    mtimes = {m.mtime for m, _ in entries}
    check(len(mtimes) == 1, f"{what}: one mtime for every entry ({sorted(mtimes)[:3]})")
    names = [m.name for m, _ in entries]
    check(names == sorted(names), f"{what}: entries in sorted order")
    for m, _ in entries:
        check(m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "", f"{what}: {m.name} owned by 0:0, no names")
        check(m.isreg() or m.isdir(), f"{what}: {m.name} is a regular file or a directory")
        check(not m.mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX), f"{what}: {m.name} has no setuid/setgid/sticky bit")


with open(ARCHIVE, "rb") as f:
    outer = members(f.read())
check_entries(outer, "archive")
files = {m.name.rstrip("/"): data for m, data in outer}

blobs = {}
for name, data in files.items():
    if name.startswith("blobs/sha256/"):
        check(hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1], f"archive: {name} holds what its name says")
        blobs["sha256:" + name.rsplit("/", 1)[1]] = data


def blob(desc: dict, what: str) -> bytes:
    data = blobs.get(desc["digest"])
    if not check(data is not None and len(data) == desc["size"], f"{what}: blob {desc['digest']} present, {desc['size']} bytes"):
        finish()
    return data


check(json.loads(files.get("oci-layout", b"{}")).get("imageLayoutVersion") == "1.0.0", "archive: oci-layout 1.0.0")
index = json.loads(files["index.json"])
check([m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == REFS,
      f"index.json: names {REFS}")
check([m["annotations"]["io.containerd.image.name"] for m in index["manifests"]] == [f"docker.io/library/{r}" for r in REFS],
      "index.json: containerd names, fully qualified as kubelet asks for them")
check(len({m["digest"] for m in index["manifests"]}) == 1, "index.json: every name is the same manifest")
manifest = json.loads(blob(index["manifests"][0], "index.json"))
config_bytes = blob(manifest["config"], "manifest")
config = json.loads(config_bytes)
check(len(manifest["layers"]) == 1 and manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar",
      "manifest: one uncompressed layer")
layer = blob(manifest["layers"][0], "manifest")
check(config["rootfs"]["diff_ids"] == [manifest["layers"][0]["digest"]], "config: diff_id is the layer's digest")
check(config["os"] == "linux" and config["config"].get("Entrypoint") == ["/flexwasm"], "config: linux, entrypoint /flexwasm")
docker = json.loads(files["manifest.json"])
check(len(docker) == 1 and docker[0]["RepoTags"] == REFS
      and docker[0]["Config"] == "blobs/sha256/" + manifest["config"]["digest"].split(":")[1]
      and docker[0]["Layers"] == ["blobs/sha256/" + manifest["layers"][0]["digest"].split(":")[1]],
      "manifest.json (docker-archive): same names, config and layer")

entries = members(layer)
check_entries(entries, "layer")
plugins = sorted(n for n in os.listdir(os.path.join(REPO, "plugins")) if os.path.isdir(os.path.join(REPO, "plugins", n)))
expected = {"flexwasm": 0o755, "flexwasm-runtime": 0o755, "plugins": 0o755}
for name in plugins:
    expected[f"plugins/{name}.wasm"] = 0o644
    expected[f"plugins/{name}.policy.toml"] = 0o644
got = {m.name.rstrip("/"): stat.S_IMODE(m.mode) for m, _ in entries}
check(got == expected, f"layer: exactly {sorted(expected)} with their modes (got {got})")
content = {m.name.rstrip("/"): data for m, data in entries}
for name in plugins:
    with open(os.path.join(REPO, "plugins", name, "policy.toml"), "rb") as f:
        check(content.get(f"plugins/{name}.policy.toml") == f.read(), f"layer: plugins/{name}.policy.toml is the repo's")
    check((content.get(f"plugins/{name}.wasm") or b"")[:8] == COMPONENT_HEADER, f"layer: plugins/{name}.wasm is a wasm component")
for binary in ("flexwasm", "flexwasm-runtime"):
    check(any(m.name == binary and m.isreg() for m, _ in entries), f"layer: /{binary} is a regular file")

work = tempfile.mkdtemp(prefix="check-image.", dir=os.path.dirname(os.path.abspath(ARCHIVE)))
os.chmod(work, 0o700)
try:
    for name, data in content.items():
        path = os.path.join(work, "image", name)
        if data is None:
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
            os.chmod(path, expected.get(name, 0o644))
    host = os.path.join(work, "image", "flexwasm")
    runtime_host = os.path.join(work, "image", "flexwasm-runtime")

    for binary in (host, runtime_host):
        shown = "/" + os.path.basename(binary)
        program = subprocess.run(["readelf", "-lW", binary], capture_output=True, text=True).stdout
        dynamic = subprocess.run(["readelf", "-dW", binary], capture_output=True, text=True).stdout
        check("Program Headers" in program and "INTERP" not in program, f"{shown}: no ELF interpreter (readelf -l)")
        check("(NEEDED)" not in dynamic, f"{shown}: needs no shared library (readelf -d)")
        described = subprocess.run(["file", "-b", binary], capture_output=True, text=True).stdout
        check("statically linked" in described or "static-pie linked" in described, f"{shown}: file says static ({described.strip()})")
    arch = {"x86-64": "amd64", "aarch64": "arm64"}
    elf_arch = next((v for k, v in arch.items() if k in described), None)
    check(config["architecture"] == elf_arch, f"config: architecture {config['architecture']} is the binary's ({elf_arch})")
    runnable = elf_arch == {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine)
    if not runnable:
        print(f"SKIP running /flexwasm: it is {elf_arch}, this machine {os.uname().machine}")
        finish()

    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "FLEXWASM_STATE_DIR": os.path.join(work, "state"),
        "FLEXWASM_LOG_DIR": os.path.join(work, "log"),
    }

    def run(*args, timeout=120):
        return subprocess.run([host, *args], capture_output=True, text=True, env=env, timeout=timeout)

    r = run("--version")
    check(r.stdout.strip() == f"flexwasm {VERSION}", f"/flexwasm --version: flexwasm {VERSION} (got {r.stdout.strip()!r})")
    r = subprocess.run([runtime_host, "--version"], capture_output=True, text=True, env=env, timeout=60)
    check(r.stdout.strip() == f"flexwasm {VERSION}", f"/flexwasm-runtime --version: flexwasm {VERSION} (got {r.stdout.strip()!r})")
    r = subprocess.run([runtime_host, "inspect", os.path.join(work, "image", "plugins", f"{plugins[0]}.wasm")],
                       capture_output=True, text=True, env=env, timeout=60)
    check(r.returncode != 0 and "runtime-only build (no compiler)" in r.stdout + r.stderr,
          f"/flexwasm-runtime has no compiler: inspect says so (exit {r.returncode}: {(r.stdout + r.stderr).strip()[-200:]})")

    # Every DaemonSet's policy grants what its plugin imports.
    daemonsets = {}
    for name in plugins:
        with open(os.path.join(REPO, "deploy", f"{name}.yaml")) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        cm = next(d for d in docs if d["kind"] == "ConfigMap")
        ds = next(d for d in docs if d["kind"] == "DaemonSet")
        daemonsets[name] = (cm, ds)
        policy = os.path.join(work, f"{name}.policy.toml")
        with open(policy, "w") as f:
            f.write(cm["data"]["policy.toml"])
        r = run("inspect", os.path.join(work, "image", "plugins", f"{name}.wasm"), "--policy", policy)
        check(r.returncode == 0, f"deploy/{name}.yaml: flexwasm inspect: the ConfigMap policy grants every import "
              f"(exit {r.returncode}: {r.stderr.strip() or r.stdout.strip()[-300:]})")

    # The CLI contract the DaemonSets are written against.
    if run("daemon", "--help").returncode != 0:
        print("SKIP CLI contract: this flexwasm has no `daemon` subcommand yet (deploy/README.md, 'CLI contract')")
        finish()
    daemon_help = run("daemon", "--help").stdout
    for name, (cm, ds) in daemonsets.items():
        what = f"deploy/{name}.yaml"
        args = ds["spec"]["template"]["spec"]["containers"][0]["args"]
        for a in args[1:]:
            flag = a.split("=", 1)[0]
            check(flag in daemon_help, f"{what}: `flexwasm daemon --help` documents {flag}")
        root = os.path.join(work, f"root-{name}")
        os.makedirs(os.path.join(root, PLUGIN_DIR), mode=0o755)
        secret_value = f"s3cr3t-{name}-{os.getpid()}-value"
        translated = []
        for a in args[1:]:
            flag, eq, value = a.partition("=")
            if flag == "--root":
                value = root
            elif flag in ("--plugin", "--host-binary"):
                value = os.path.join(work, "image", value.lstrip("/"))
            elif flag == "--policy":
                value = os.path.join(work, f"{name}.policy.toml")
            elif flag == "--config-file":
                key, _, _src = value.partition("=")
                src = os.path.join(work, f"{name}.{key}")
                with open(src, "w") as f:
                    f.write(secret_value)
                os.chmod(src, 0o600)
                value = f"{key}={src}"
            translated.append(f"{flag}={value}" if eq else flag)
        translated.append("--plugin-dir=/" + PLUGIN_DIR)
        driver = f"flexwasm/{name}"
        driver_dir = os.path.join(root, PLUGIN_DIR, f"flexwasm~{name}")

        def tree(path):
            return sorted(os.path.relpath(os.path.join(d, f), path) for d, ds_, fs in os.walk(path) for f in ds_ + fs)

        before = tree(root)
        r = run("install", *translated, "--dry-run")
        check(r.returncode == 0, f"{what}: install --dry-run with the DaemonSet's arguments (exit {r.returncode}: {r.stderr.strip()[-300:]})")
        check(tree(root) == before, f"{what}: install --dry-run writes nothing under --root")
        check(secret_value not in r.stdout + r.stderr, f"{what}: install --dry-run does not print a --config-file value")
        r = run("install", *translated)
        check(r.returncode == 0, f"{what}: install with the DaemonSet's arguments (exit {r.returncode}: {r.stderr.strip()[-300:]})")
        check(secret_value not in r.stdout + r.stderr, f"{what}: install does not print a --config-file value")
        executable = os.path.join(driver_dir, name)
        check(os.access(executable, os.X_OK), f"{what}: install puts the driver at <root>/<plugin-dir>/flexwasm~{name}/{name}")
        if os.path.exists(executable):
            with open(executable, "rb") as f, open(runtime_host, "rb") as g:
                check(f.read() == g.read(), f"{what}: the driver executable is /flexwasm-runtime")
            r = subprocess.run([executable, "init"], capture_output=True, text=True, env=env, timeout=60)
            answer = r.stdout.strip()
            check(r.returncode == 0 and answer.startswith('{"status":"Success"') and not r.stderr,
                  f"{what}: the runtime-only driver answers init from the installed code (exit {r.returncode}: {answer[-300:]} {r.stderr[-200:]})")
        config = tomllib.loads(cm["data"]["policy.toml"]).get("config", {})
        for a in args:
            if a.startswith("--config-file="):
                key = a.split("=", 2)[1]
                dest = os.path.join(root, config[key]["file"].lstrip("/"))
                st = os.stat(dest) if os.path.exists(dest) else None
                check(st is not None and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0,
                      f"{what}: --config-file {key} written to <root>{config[key]['file']}, 0600, root")
                if st is not None:
                    with open(dest) as f:
                        check(f.read() == secret_value, f"{what}: --config-file {key}: the file holds the Secret's value")
        r = run("uninstall", f"--driver={driver}", f"--root={root}", "--plugin-dir=/" + PLUGIN_DIR)
        check(r.returncode == 0 and not os.path.exists(driver_dir),
              f"{what}: uninstall removes the driver (exit {r.returncode}: {r.stderr.strip()[-300:]})")
finally:
    shutil.rmtree(work, ignore_errors=True)
finish()
