#!/usr/bin/env python3
"""The flexwasm benchmark suite (bench/run.sh runs it; bench/README.md).

Every figure is measured side by side in one run: commands interleaved round
by round by the bench runner (bench/src/main.rs), medians with min/max, and
the ratio to a baseline measured in the same rounds.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

HOST = os.environ["FLEXWASM_BENCH_HOST"]
RUNNER = os.environ["FLEXWASM_BENCH_RUNNER"]
STATIC = os.environ["FLEXWASM_BENCH_STATIC"]
# The static host built without Cranelift (`--no-default-features`): the
# per-call binary; the full host precompiles at install.
RUNTIME = os.environ["FLEXWASM_BENCH_RUNTIME_ONLY"]
WASM = os.environ["FLEXWASM_BENCH_WASM"]
ARRAY_SERVER = os.environ["FLEXWASM_BENCH_ARRAY_SERVER"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ap = argparse.ArgumentParser()
ap.add_argument("--work", required=True)
ap.add_argument("--quick", action="store_true")
ap.add_argument("--out", default=os.path.join(REPO, "docs"))
ap.add_argument("--clean-build", action="store_true", help="timed by run.sh before measuring")
args = ap.parse_args()
W = args.work
RUNS = 50 if args.quick else 300
LIFECYCLE_ROUNDS = 2 if args.quick else 5
SWEEP = 1000

os.environ["FLEXWASM_STATE_DIR"] = f"{W}/state"
os.environ["FLEXWASM_LOG_DIR"] = f"{W}/log"
PLUGINS = f"{W}/plugins"
os.makedirs(PLUGINS)

# Options exactly as kubelet sends them (keys sorted; no pod keys or
# secrets outside mount: ../shared/docs/flexvolume-contract.md).
def opts(vol, **extra):
    o = {"kubernetes.io/fsType": "ext4", "kubernetes.io/pvOrVolumeName": vol,
         "kubernetes.io/readwrite": "rw"}
    o.update(extra)
    return json.dumps(o, sort_keys=True, separators=(",", ":"))


def sh(*argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw).stdout


def install(driver, wasm, policy, host_binary=None):
    cmd = [HOST, "install", "--plugin-dir", PLUGINS, "--driver", driver,
           "--plugin", wasm, "--policy", policy]
    if host_binary:
        cmd += ["--host-binary", host_binary]
    sh(*cmd)
    vendor, name = driver.split("/")
    return f"{PLUGINS}/{vendor}~{name}/{name}"


def bench(spec, runs, warmup):
    """spec: [(name, argv)] plus ('@setup NAME', argv) entries."""
    text = "\n".join("\t".join([n] + a) for n, a in spec) + "\n"
    out = subprocess.run([RUNNER, "--runs", str(runs), "--warmup", str(warmup)],
                         input=text, capture_output=True, text=True, check=True).stdout
    return {r["name"]: r for r in json.loads(out)["results"]}


def summary(samples):
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


report = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
          "quick": args.quick}

# --- the machine -------------------------------------------------------------
def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()
report["machine"] = {
    "cpu": cpu_model(), "cores": os.cpu_count(),
    "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    "kernel": platform.release(), "load_before": os.getloadavg()[0],
    "rustc": sh("rustc", "--version").strip(),
}

# --- drivers ---------------------------------------------------------------------
os.makedirs(f"{PLUGINS}/native~noop")
with open(f"{W}/noop.rs", "w") as f:
    f.write('fn main() { println!("{{\\"status\\":\\"Success\\",\\"capabilities\\":{{\\"attach\\":false}}}}"); }\n')
sh("rustc", "-O", "-o", f"{PLUGINS}/native~noop/noop", f"{W}/noop.rs")
NATIVE = f"{PLUGINS}/native~noop/noop"

# The classic FlexVolume driver shape: bash, jq for the options JSON.
os.makedirs(f"{PLUGINS}/bash~jq")
JQ = f"{PLUGINS}/bash~jq/jq"
with open(JQ, "w") as f:
    f.write(r'''#!/bin/bash
# A FlexVolume driver of the shape most shipped ones have: bash + jq.
op=$1; shift
case $op in
  init) echo '{"status":"Success","capabilities":{"attach":false}}' ;;
  getvolumename)
    name=$(echo "$1" | jq -r '."kubernetes.io/pvOrVolumeName"')
    jq -cn --arg n "$name" '{status:"Success",volumeName:$n}' ;;
  isattached)
    name=$(echo "$1" | jq -r '."kubernetes.io/pvOrVolumeName"')
    [ -e "/tmp/flexwasm-bench-jq-$name" ] && a=true || a=false
    jq -cn --argjson a $a '{status:"Success",attached:$a}' ;;
  *) echo '{"status":"Not supported"}' ;;
esac
''')
os.chmod(JQ, 0o755)

loop_wasm = f"{WASM}/flexwasm_plugin_loop.wasm"
loop_policy = f"{REPO}/plugins/loop/policy.toml"
LOOP = install("flexwasm/loop", loop_wasm, loop_policy)
LOOP_STATIC = install("flexwasm/loopstatic", loop_wasm, loop_policy, STATIC)
LOOP_RUNTIME = install("flexwasm/looprt", loop_wasm, loop_policy, RUNTIME)
LOOP_COLD = install("flexwasm/loopcold", loop_wasm, loop_policy)
with open(f"{W}/state-probe.toml", "w") as f:
    f.write('plugin_sha256 = "auto"\n[limits]\ndeadline_seconds = 30\n[state]\nquota_kib = 1024\n[config]\n')
PROBE = install("bench/stateprobe", f"{WASM}/flexwasm_state_probe.wasm", f"{W}/state-probe.toml")

# --- 1. per call ------------------------------------------------------------------
o = opts("pv-bench")
percall = [
    ("native no-op: init", [NATIVE, "init"]),
    ("bash+jq: init", [JQ, "init"]),
    ("bash+jq: getvolumename", [JQ, "getvolumename", o]),
    ("bash+jq: isattached", [JQ, "isattached", o, "node-1"]),
    ("flexwasm: init", [LOOP, "init"]),
    ("flexwasm: getvolumename", [LOOP, "getvolumename", o]),
    ("flexwasm: isattached", [LOOP, "isattached", o, "node-1"]),
    ("flexwasm static: init", [LOOP_STATIC, "init"]),
    ("flexwasm static: getvolumename", [LOOP_STATIC, "getvolumename", o]),
    ("flexwasm static: isattached", [LOOP_STATIC, "isattached", o, "node-1"]),
    ("flexwasm runtime-only: init", [LOOP_RUNTIME, "init"]),
    ("flexwasm runtime-only: getvolumename", [LOOP_RUNTIME, "getvolumename", o]),
    ("flexwasm runtime-only: isattached", [LOOP_RUNTIME, "isattached", o, "node-1"]),
]
print(f"per call: {len(percall)} commands x {RUNS} rounds, interleaved ...", file=sys.stderr)
r = bench(percall, RUNS, 20)
floor = statistics.median(r["native no-op: init"]["wall_ms"])
report["per_call"] = [dict(name=n, **summary(r[n]["wall_ms"]),
                           ratio=statistics.median(r[n]["wall_ms"]) / floor,
                           maxrss_kib=max(r[n]["maxrss_kib"]), failures=r[n]["failures"])
                      for n, _ in percall]

# Where an init's time goes, from the call log's phases (the host's own timers).
def phases(driver_dir_name, n=50):
    lines = open(f"{W}/log/{driver_dir_name}.log").read().splitlines()[-n:]
    acc = {}
    for line in lines:
        rec = json.loads(line)
        for k, v in rec.get("phases", []):
            if isinstance(v, (int, float)):
                acc.setdefault(k, []).append(v)
        acc.setdefault("in-process total", []).append(rec.get("duration_ms", 0))
    return {k: statistics.median(v) for k, v in acc.items()}
report["phases_isattached"] = phases("flexwasm~loop")

# --- 2. cold compile vs precompiled -------------------------------------------------
cold_driver_dir = f"{PLUGINS}/flexwasm~loopcold"
cold_state = f"{W}/state/flexwasm~loopcold"
cold = [
    ("precompiled (installed)", [LOOP, "init"]),
    ("compiled at call (no precompiled code)", [LOOP_COLD, "init"]),
    ("@setup compiled at call (no precompiled code)",
     ["/bin/rm", "-rf", f"{cold_driver_dir}/.plugin.cwasm", f"{cold_state}/cache"]),
]
print("cold compile vs precompiled ...", file=sys.stderr)
runs_cold = 5 if args.quick else 15
r = bench(cold, runs_cold, 1)
base = statistics.median(r["precompiled (installed)"]["wall_ms"])
report["cold"] = [dict(name=n, **summary(r[n]["wall_ms"]),
                       ratio=statistics.median(r[n]["wall_ms"]) / base,
                       maxrss_kib=max(r[n]["maxrss_kib"]))
                  for n in ("precompiled (installed)", "compiled at call (no precompiled code)")]

# --- 3. state store ------------------------------------------------------------------
state = [
    ("getvolumename, no state", [PROBE, "getvolumename", json.dumps({"op": "config", "key": "absent"})]),
    ("getvolumename, one state update", [PROBE, "getvolumename", json.dumps({"op": "increment", "key": "counter"})]),
]
print("state store ...", file=sys.stderr)
r = bench(state, 100 if not args.quick else 30, 5)
report["state"] = [dict(name=n, **summary(r[n]["wall_ms"]), failures=r[n]["failures"]) for n, _ in state]
report["state_call_phase"] = {}
lines = [json.loads(l) for l in open(f"{W}/log/bench~stateprobe.log").read().splitlines()]
for label, key in (("no state", "absent"), ("one state update", "counter")):
    calls = [dict(l["phases"]).get("call") for l in lines if key in json.dumps(l.get("options", l))]
    calls = [c for c in calls if isinstance(c, (int, float))]
    if calls:
        report["state_call_phase"][label] = statistics.median(calls)

# --- 3b. a backend call: rest-array against the array server ---------------------------
# `isattached` of rest-array is one GET to the array's REST API. The same
# request made natively, with curl in a fresh process (a new connection, as
# every per-call driver makes), is the floor; the difference is what the
# host adds around a plugin's HTTP (wasi:http, the allowlist, address
# checks). The array server speaks plain HTTP: TLS is not in this figure.
print("backend call (rest-array vs curl against the array server) ...", file=sys.stderr)
array_dir = f"{W}/array"
os.makedirs(f"{array_dir}/data")
TOKEN = "bench-token-0123456789"
server = subprocess.Popen([ARRAY_SERVER, "--listen", "127.0.0.1:0", "--data-dir", f"{array_dir}/data",
                           "--token", TOKEN, "--addr-file", f"{array_dir}/addr", "--exit-on-stdin-eof"],
                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
for _ in range(200):
    if os.path.exists(f"{array_dir}/addr"):
        break
    time.sleep(0.05)
url = "http://" + open(f"{array_dir}/addr").read().strip()
with open(f"{W}/rest-array.toml", "w") as f:
    f.write(f'plugin_sha256 = "auto"\n[limits]\ndeadline_seconds = 60\n[state]\nquota_kib = 2048\n'
            f'[devices]\nclaim = ["loop-backing-dir:{array_dir}/data"]\n'
            f'[http]\nallow = ["{url}"]\nallow_loopback = true\n'
            f'[config]\nendpoint = "{url}"\ntoken = {{ value = "{TOKEN}", secret = true }}\n')
REST = install("flexwasm/restarray", f"{WASM}/flexwasm_plugin_rest_array.wasm", f"{W}/rest-array.toml")
backend = [
    ("native no-op: init", [NATIVE, "init"]),
    ("curl: GET /api/v1/volumes?name=pv-bench", ["curl", "-sf", "-H", f"Authorization: Bearer {TOKEN}",
                                                  f"{url}/api/v1/volumes?name=pv-bench"]),
    ("flexwasm rest-array: isattached", [REST, "isattached", o, "node-1"]),
    ("flexwasm loop: isattached (no backend)", [LOOP, "isattached", o, "node-1"]),
]
r = bench(backend, 100 if not args.quick else 30, 5)
base = statistics.median(r["curl: GET /api/v1/volumes?name=pv-bench"]["wall_ms"])
report["backend"] = [dict(name=n, **summary(r[n]["wall_ms"]),
                          ratio=statistics.median(r[n]["wall_ms"]) / base,
                          maxrss_kib=max(r[n]["maxrss_kib"]), failures=r[n]["failures"])
                     for n, _ in backend]
# The plugin's HTTP as the host timed it (call log), request to response.
lines = [json.loads(l) for l in open(f"{W}/log/flexwasm~restarray.log").read().splitlines()]
http_ms = [h.get("duration_ms") for l in lines for h in l.get("http", []) if h.get("duration_ms") is not None]
call_ms = [dict(l["phases"]).get("call") for l in lines if l.get("op") == "isattached"]
report["backend_inside"] = {
    "call phase (plugin, incl. its HTTP)": statistics.median([c for c in call_ms if c is not None]) if call_ms else None,
    "HTTP request (host-timed)": statistics.median(http_ms) if http_ms else None,
}
server.stdin.close()
server.wait(timeout=10)

# --- 4. isattached sweep -----------------------------------------------------------------
print(f"isattached sweep over {SWEEP} volumes ...", file=sys.stderr)
sweep = {}
for label, drv in (("native no-op", NATIVE), ("bash+jq", JQ), ("flexwasm", LOOP), ("flexwasm static", LOOP_STATIC),
                   ("flexwasm runtime-only", LOOP_RUNTIME)):
    spec = [(f"v{i}", [drv, "isattached", opts(f"pv-{i:04d}"), "node-1"]) for i in range(SWEEP)]
    t = time.perf_counter()
    res = bench(spec, 1, 0)
    total = time.perf_counter() - t
    sweep[label] = {"total_s": total, "failures": sum(x["failures"] for x in res.values())}
report["sweep"] = sweep

# --- 5. lifecycle on a 1 GiB loop volume ---------------------------------------------------
OPS = ["attach", "waitforattach", "mountdevice", "mount", "unmount", "unmountdevice", "detach"]
def timed(argv):
    t = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True)
    return (time.perf_counter() - t) * 1000, p

def flexwasm_lifecycle(i):
    vol = f"pv-life-{i}"
    o = opts(vol, size="1Gi")
    kroot = f"{W}/kubelet"
    dmp = f"{kroot}/plugins/kubernetes.io/flexvolume/flexwasm/loop/mounts/{vol}"
    pod = f"{kroot}/pods/uid-{i}/volumes/flexwasm~loop/{vol}"
    os.makedirs(dmp); os.makedirs(pod)
    mo = opts(vol, size="1Gi", **{"kubernetes.io/pod.name": "p", "kubernetes.io/pod.namespace": "default",
                                   "kubernetes.io/pod.uid": f"uid-{i}", "kubernetes.io/serviceAccount.name": "default"})
    t = {}
    ms, p = timed([LOOP, "attach", o, "node-1"]); t["attach"] = ms
    dev = json.loads(p.stdout).get("device")
    if not dev:
        raise SystemExit(f"attach failed: {p.stdout}")
    steps = [("waitforattach", [LOOP, "waitforattach", dev, o]),
             ("mountdevice", [LOOP, "mountdevice", dmp, dev, o]),
             ("mount", [LOOP, "mount", pod, mo]),
             ("unmount", [LOOP, "unmount", pod]),
             ("unmountdevice", [LOOP, "unmountdevice", dmp]),
             ("detach", [LOOP, "detach", vol, "node-1"])]
    for name, argv in steps:
        ms, p = timed(argv)
        if json.loads(p.stdout).get("status") != "Success":
            raise SystemExit(f"{name} failed: {p.stdout}")
        t[name] = ms
    return t

def native_lifecycle(i):
    """The same node work done directly: what any driver must spend."""
    img = f"{W}/native/img-{i}"; dmp = f"{W}/native/dmp-{i}"; pod = f"{W}/native/pod-{i}"
    os.makedirs(dmp); os.makedirs(pod)
    t = {}
    t["attach"], _ = timed(["truncate", "-s", "1G", img])
    ms, p = timed(["losetup", "-f", "--show", img]); t["attach"] += ms
    dev = p.stdout.strip()
    t["waitforattach"], _ = timed(["test", "-b", dev])
    t["mountdevice"], _ = timed(["blkid", "-p", dev])
    ms, _ = timed(["mkfs.ext4", "-q", "-F", dev]); t["mountdevice"] += ms
    ms, _ = timed(["mount", "-o", "nosuid,nodev", dev, dmp]); t["mountdevice"] += ms
    t["mount"], _ = timed(["mount", "--bind", "-o", "nosuid,nodev", dmp, pod])
    t["unmount"], _ = timed(["umount", pod])
    t["unmountdevice"], _ = timed(["umount", dmp])
    t["detach"], _ = timed(["losetup", "-d", dev])
    return t

print(f"lifecycle on a 1 GiB loop volume x {LIFECYCLE_ROUNDS} (interleaved with the same work done natively) ...",
      file=sys.stderr)
os.makedirs(f"{W}/native")
fl, nat = [], []
for i in range(LIFECYCLE_ROUNDS):
    fl.append(flexwasm_lifecycle(i))
    nat.append(native_lifecycle(i))
report["lifecycle"] = [{"op": op,
                        "flexwasm_ms": statistics.median(x[op] for x in fl),
                        "native_ms": statistics.median(x[op] for x in nat)} for op in OPS]

# --- build facts ---------------------------------------------------------------------------
def size(p):
    return os.stat(p).st_size
report["sizes"] = {
    "host (dynamic, release)": size(HOST), "host (static musl)": size(STATIC),
    "host (static musl, runtime-only)": size(RUNTIME),
    "loop.wasm": size(loop_wasm), "loop .plugin.cwasm": size(f"{PLUGINS}/flexwasm~loop/.plugin.cwasm"),
    "native no-op": size(NATIVE),
}
report["clean_build_s"] = int(os.environ["FLEXWASM_BENCH_CLEAN_BUILD_S"]) if os.environ.get("FLEXWASM_BENCH_CLEAN_BUILD_S") else None
report["load_after"] = os.getloadavg()[0]

os.makedirs(args.out, exist_ok=True)
with open(f"{W}/report.json", "w") as f:
    json.dump(report, f, indent=1)
subprocess.run([sys.executable, os.path.join(REPO, "bench", "report.py"), f"{W}/report.json", args.out], check=True)
