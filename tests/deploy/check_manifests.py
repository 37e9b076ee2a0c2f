#!/usr/bin/env python3
"""What the Kubernetes schema cannot check in deploy/*.yaml.

Run by tests/deploy/validate.sh with the venv's python (PyYAML). Checks:

- one DaemonSet + policy ConfigMap per reference plugin (plugins/*), all in
  flexwasm-system, and the three DaemonSets identical but for the driver's
  name and its config Secret (so a fix to one cannot miss the others);
- each DaemonSet is what the driver needs: every node (control-plane and
  every taint tolerated), hostPID, privileged, the host's / at /host, the
  image's entrypoint (no shell, no command), `daemon` with the driver's
  plugin, the mounted policy, --root=/host, --strict and
  --host-binary=/flexwasm-runtime, no API token;
- each ConfigMap policy is the plugin's reference policy (parsed, comments
  aside), with only the overrides listed below;
- every --config-file KEY=FILE reads FILE from a Secret volume and fills a
  `[config] KEY = { file = ..., secret = true }` entry under
  /etc/flexwasm/<vendor>~<name>/; no manifest carries a Secret or a value;
- deploy/kubeadm's patch, applied to kubeadm v1.20's controller-manager pod
  (with Kubernetes' merge keys: containers and volumes by name,
  volumeMounts by mountPath), keeps kubeadm's mounts and adds the plugin
  dir, /var/lib/flexwasm, /var/log/flexwasm and /etc/flexwasm (read-only);
  the result is written to OUT_DIR for the schema check, and compared with
  `kubectl patch --local` when kubectl is installed.

Usage: check_manifests.py REPO_ROOT OUT_DIR. Prints one line per failure
and "manifests: N passed, N failed".
"""

import copy
import json
import os
import shutil
import subprocess
import sys
import tomllib

import yaml

REPO, OUT_DIR = sys.argv[1], sys.argv[2]
NAMESPACE = "flexwasm-system"
VENDOR = "flexwasm"
PLUGIN_DIR = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec"
# Where a policy's [config] differs from the plugin's reference policy, and why.
POLICY_OVERRIDES = {
    # The installer writes the Secret's token to the host under the driver's
    # own /etc/flexwasm dir (--config-file), not to the shared example path.
    "rest-array": {("config", "token", "file"): "/etc/flexwasm/flexwasm~rest-array/token"},
}

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


def load(path: str) -> list:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def find(docs: list, kind: str, name: str):
    hits = [d for d in docs if d.get("kind") == kind and d["metadata"]["name"] == name]
    return hits[0] if len(hits) == 1 else None


plugins = sorted(n for n in os.listdir(os.path.join(REPO, "plugins")) if os.path.isdir(os.path.join(REPO, "plugins", n)))
deploy = os.path.join(REPO, "deploy")
all_docs = {}
for f in sorted(os.listdir(deploy)):
    if f.endswith(".yaml"):
        all_docs[f] = load(os.path.join(deploy, f))

# Namespace and service account.
ns_docs = all_docs.get("namespace.yaml", [])
ns = find(ns_docs, "Namespace", NAMESPACE)
check(ns is not None, f"deploy/namespace.yaml: Namespace {NAMESPACE}")
sa = find(ns_docs, "ServiceAccount", "flexwasm")
check(sa is not None and sa["metadata"].get("namespace") == NAMESPACE and sa.get("automountServiceAccountToken") is False,
      "deploy/namespace.yaml: ServiceAccount flexwasm in flexwasm-system, automountServiceAccountToken: false")

for f, docs in all_docs.items():
    for d in docs:
        kind, name = d.get("kind"), d["metadata"]["name"]
        if kind != "Namespace":
            check(d["metadata"].get("namespace") == NAMESPACE, f"deploy/{f}: {kind}/{name} is in {NAMESPACE}")
        # Secrets are created by the operator (kubectl create secret): a
        # Secret in a manifest is either a real value in git or a
        # placeholder that a re-apply writes over the real one.
        check(kind != "Secret", f"deploy/{f}: {kind}/{name}: no Secret objects in manifests")


def env_free(container: dict) -> bool:
    return not container.get("env") and not container.get("envFrom")


def normalized(ds: dict, name: str) -> str:
    """The DaemonSet with its driver's name replaced and its config Secret
    (volume, mount, --config-file args) removed: equal for every driver."""
    ds = copy.deepcopy(ds)
    pod = ds["spec"]["template"]["spec"]
    c = pod["containers"][0]
    c["args"] = [a for a in c.get("args", []) if not a.startswith("--config-file=")]
    c["volumeMounts"] = [m for m in c.get("volumeMounts", []) if m["name"] != "config"]
    pod["volumes"] = [v for v in pod.get("volumes", []) if v["name"] != "config"]
    return json.dumps(ds, sort_keys=True).replace(name, "NAME")


def get_path(obj, path):
    for p in path:
        obj = obj[p]
    return obj


def set_path(obj, path, value):
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = value


shapes = {}
for name in plugins:
    f = f"{name}.yaml"
    docs = all_docs.get(f)
    if not check(docs is not None, f"deploy/{f} exists for plugins/{name}"):
        continue
    cm = find(docs, "ConfigMap", f"{VENDOR}-{name}-policy")
    ds = find(docs, "DaemonSet", f"{VENDOR}-{name}")
    if not (check(cm is not None, f"deploy/{f}: ConfigMap {VENDOR}-{name}-policy")
            and check(ds is not None, f"deploy/{f}: DaemonSet {VENDOR}-{name}")):
        continue
    shapes[name] = normalized(ds, name)

    # The policy: the reference one, parsed, with only the listed overrides.
    text = cm.get("data", {}).get("policy.toml")
    if not check(text is not None, f"deploy/{f}: ConfigMap has policy.toml"):
        continue
    try:
        policy = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        check(False, f"deploy/{f}: policy.toml parses: {e}")
        continue
    with open(os.path.join(REPO, "plugins", name, "policy.toml"), "rb") as pf:
        expected = tomllib.load(pf)
    for path, value in POLICY_OVERRIDES.get(name, {}).items():
        set_path(expected, path, value)
    check(policy == expected,
          f"deploy/{f}: policy.toml is plugins/{name}/policy.toml (overrides: {POLICY_OVERRIDES.get(name, {})})")

    pod = ds["spec"]["template"]["spec"]
    what = f"deploy/{f}: DaemonSet"
    check(pod.get("hostPID") is True, f"{what}: hostPID: true (kubelet's command line)")
    check(pod.get("hostNetwork") is True,
          f"{what}: hostNetwork: true (runs before the node's CNI is up; needs no pod network)")
    check(pod.get("serviceAccountName") == "flexwasm" and pod.get("automountServiceAccountToken") is False,
          f"{what}: service account flexwasm, no API token mounted")
    tol = pod.get("tolerations", [])
    check({"operator": "Exists"} in tol, f"{what}: tolerates every taint")
    for key in ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"):
        check(any(t.get("key") == key and t.get("operator") == "Exists" for t in tol), f"{what}: tolerates {key}")
    check(ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items(),
          f"{what}: selector matches the pod labels")
    if not check(len(pod.get("containers", [])) == 1 and not pod.get("initContainers"), f"{what}: one container"):
        continue
    c = pod["containers"][0]
    check(c.get("image") == "flexwasm:dev", f"{what}: image flexwasm:dev")
    check("command" not in c, f"{what}: the image's entrypoint (/flexwasm), no command or shell")
    check(c.get("securityContext", {}).get("privileged") is True, f"{what}: privileged")
    check(env_free(c), f"{what}: no environment (config comes from files)")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    host = mounts.get("/host")
    check(host is not None and volumes.get(host["name"], {}).get("hostPath", {}).get("path") == "/"
          and not host.get("readOnly", False), f"{what}: the host's / mounted read-write at /host")
    args = c.get("args", [])
    check(args[:1] == ["daemon"], f"{what}: runs `flexwasm daemon`")
    flags = {}
    for a in args[1:]:
        if check(a.startswith("--"), f"{what}: argument {a!r} is --flag=value or --switch"):
            k, eq, v = a[2:].partition("=")
            flags.setdefault(k, []).append(v if eq else True)
    check(flags.get("driver") == [f"{VENDOR}/{name}"], f"{what}: --driver={VENDOR}/{name}")
    check(flags.get("plugin") == [f"/plugins/{name}.wasm"], f"{what}: --plugin=/plugins/{name}.wasm (in the image)")
    check(flags.get("root") == ["/host"], f"{what}: --root=/host")
    check(flags.get("strict") == [True], f"{what}: --strict (a grant that does not cover the plugin fails the pod, not every call)")
    check(flags.get("host-binary") == ["/flexwasm-runtime"],
          f"{what}: --host-binary=/flexwasm-runtime (kubelet and the controller-manager run the runtime-only host)")

    def mounted_from(path: str):
        """The volume a container path is read from, or None."""
        for mp, m in mounts.items():
            if path.startswith(mp.rstrip("/") + "/"):
                return volumes.get(m["name"])
        return None

    pol = flags.get("policy", [""])[0]
    src = mounted_from(pol)
    check(src is not None and src.get("configMap", {}).get("name") == cm["metadata"]["name"]
          and os.path.basename(pol) == "policy.toml", f"{what}: --policy reads policy.toml from the ConfigMap")
    for spec in flags.get("config-file", []):
        key, _, path = spec.partition("=")
        src = mounted_from(path)
        check(src is not None and "secret" in src, f"{what}: --config-file {key}: {path} is from a Secret volume")
        entry = policy.get("config", {}).get(key)
        ok = isinstance(entry, dict) and entry.get("secret") is True and isinstance(entry.get("file"), str)
        check(ok, f"{what}: --config-file {key}: the policy has [config] {key} = {{ file = ..., secret = true }}")
        if ok:
            check(entry["file"].startswith(f"/etc/flexwasm/{VENDOR}~{name}/"),
                  f"{what}: --config-file {key}: written under /etc/flexwasm/{VENDOR}~{name}/ (mounted into the controller-manager)")

if shapes:
    first = sorted(shapes)[0]
    for name, shape in shapes.items():
        check(shape == shapes[first], f"deploy/{name}.yaml: DaemonSet matches deploy/{first}.yaml but for the driver's name and config Secret")


# deploy/kubeadm: the controller-manager patch.
MERGE_KEYS = {"containers": "name", "volumes": "name", "volumeMounts": "mountPath"}


def strategic_merge(base, patch, field=None):
    """Kubernetes' strategic merge for what the patch uses: maps merge, the
    lists in MERGE_KEYS merge by their key, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = strategic_merge(base[k], v, k) if k in base else v
        return out
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        out = list(base)
        for item in patch:
            idx = [i for i, b in enumerate(out) if b.get(key) == item.get(key)]
            if idx:
                out[idx[0]] = strategic_merge(out[idx[0]], item)
            else:
                out.append(item)
        return out
    return patch


def canonical(obj, field=None):
    """obj with the merged lists sorted by their merge key."""
    if isinstance(obj, dict):
        return {k: canonical(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        items = [canonical(v) for v in obj]
        return sorted(items, key=lambda i: i[MERGE_KEYS[field]]) if field in MERGE_KEYS else items
    return obj


patch_file = os.path.join(deploy, "kubeadm", "kube-controller-manager+strategic.yaml")
fixture = os.path.join(REPO, "tests", "deploy", "kube-controller-manager-v1.20.yaml")
base = load(fixture)[0]
patch = load(patch_file)[0]
merged = strategic_merge(base, patch)
os.makedirs(OUT_DIR, exist_ok=True)
merged_path = os.path.join(OUT_DIR, "kube-controller-manager.patched.yaml")
with open(merged_path, "w") as f:
    yaml.safe_dump(merged, f, sort_keys=True)
what = "deploy/kubeadm patch"
kcm = [c for c in merged["spec"]["containers"] if c["name"] == "kube-controller-manager"]
check(len(merged["spec"]["containers"]) == 1 and len(kcm) == 1, f"{what}: patches kubeadm's one container, adds none")
mounts = {m["mountPath"]: m for m in kcm[0]["volumeMounts"]}
vols = {v["name"]: v for v in merged["spec"]["volumes"]}
for m in base["spec"]["containers"][0]["volumeMounts"]:
    check(m["mountPath"] in mounts, f"{what}: keeps kubeadm's mount {m['mountPath']}")
for path, writable in ((PLUGIN_DIR, True), ("/var/lib/flexwasm", True), ("/var/log/flexwasm", True), ("/etc/flexwasm", False)):
    m = mounts.get(path)
    ok = m is not None and vols.get(m["name"], {}).get("hostPath", {}).get("path") == path
    ok = ok and bool(m.get("readOnly", False)) != writable
    check(ok, f"{what}: the host's {path} at the same path, {'read-write' if writable else 'read-only'}")
check(len(vols) == len(merged["spec"]["volumes"]) and len(mounts) == len(kcm[0]["volumeMounts"]),
      f"{what}: no duplicate volume names or mount paths")
check(all(m["name"] in vols for m in mounts.values()), f"{what}: every mount has its volume")
kubectl = shutil.which("kubectl")
if kubectl:
    r = subprocess.run([kubectl, "patch", "--local", "-f", fixture, "--type", "strategic", "--patch-file", patch_file, "-o", "json"],
                       capture_output=True, text=True, env={**os.environ, "KUBECONFIG": os.devnull}, timeout=60)
    if check(r.returncode == 0, f"{what}: kubectl patch --local applies it: {r.stderr.strip()}"):
        check(canonical(json.loads(r.stdout)) == canonical(merged),
              f"{what}: kubectl's strategic merge gives the same pod as ours (merged lists in any order)")
else:
    print("SKIP kubectl not installed: the patch is merged by check_manifests.py only")

print(f"manifests: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
