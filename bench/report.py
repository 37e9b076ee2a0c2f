#!/usr/bin/env python3
"""Turn bench.py's report.json into a table (stdout), docs/benchmarks.svg
and docs/benchmarks.md. Usage: report.py REPORT.json OUT_DIR"""
import json
import sys

rep = json.load(open(sys.argv[1]))
out = sys.argv[2]
m = rep["machine"]
lines = []
def p(s=""):
    lines.append(s)

p("# flexwasm benchmarks")
p()
p(f"Measured {rep['date']} with `bash bench/run.sh`{' --quick' if rep['quick'] else ''} on "
  f"{m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, Linux {m['kernel']}, {m['rustc']}; "
  f"load average {m['load_before']:.2f} before, {rep['load_after']:.2f} after. "
  "Commands of a table run interleaved, round by round (bench/src/main.rs), so "
  "load lands on both sides of a ratio; wall time is spawn to reap, peak RSS is "
  "the child's own (`wait4`).")
p()
p("![per-call medians](benchmarks.svg)")
p()
p("## Per call (an installed driver, as kubelet execs it)")
p()
p("| call | median ms | min | max | vs native | peak RSS MiB | failures |")
p("|---|---:|---:|---:|---:|---:|---:|")
for r in rep["per_call"]:
    p(f"| {r['name']} | {r['median']:.2f} | {r['min']:.2f} | {r['max']:.2f} | {r['ratio']:.2f}x | "
      f"{r['maxrss_kib']/1024:.1f} | {r['failures']} |")
p()
ph = rep.get("phases_isattached", {})
if ph:
    p("In-process phases of `isattached` (host timers, call log; the rest of the wall time is "
      "exec, dynamic loading and exit): " +
      ", ".join(f"{k} {v:.2f} ms" for k, v in ph.items()) + ".")
    p()
p("## Cold compile vs precompiled (`init`)")
p()
p("| | median ms | min | max | ratio | peak RSS MiB |")
p("|---|---:|---:|---:|---:|---:|")
for r in rep["cold"]:
    p(f"| {r['name']} | {r['median']:.1f} | {r['min']:.1f} | {r['max']:.1f} | {r['ratio']:.1f}x | {r['maxrss_kib']/1024:.1f} |")
p()
p("## State store (a plugin doing one `state::update` per call)")
p()
p("| call | median ms | min | max | failures |")
p("|---|---:|---:|---:|---:|")
for r in rep["state"]:
    p(f"| {r['name']} | {r['median']:.2f} | {r['min']:.2f} | {r['max']:.2f} | {r['failures']} |")
if rep.get("state_call_phase"):
    p()
    p("Median time inside the plugin's call (call log `call` phase): " +
      ", ".join(f"{k} {v:.2f} ms" for k, v in rep["state_call_phase"].items()) + ".")
p()
if rep.get("backend"):
    p("## A backend call: `rest-array` against the array server")
    p()
    p("`isattached` of the rest-array plugin is one GET to the array's REST API (plain HTTP on "
      "127.0.0.1; the test array server has no TLS, so TLS is not in these figures). The same "
      "request made by curl in a fresh process — a new connection per call, as any per-call "
      "driver makes — is the baseline.")
    p()
    p("| call | median ms | min | max | vs curl | peak RSS MiB | failures |")
    p("|---|---:|---:|---:|---:|---:|---:|")
    for r in rep["backend"]:
        p(f"| {r['name']} | {r['median']:.2f} | {r['min']:.2f} | {r['max']:.2f} | {r['ratio']:.2f}x | "
          f"{r['maxrss_kib']/1024:.1f} | {r['failures']} |")
    inside = {k: v for k, v in rep.get("backend_inside", {}).items() if v is not None}
    if inside:
        p()
        p("Inside the rest-array call (call log, medians): " +
          ", ".join(f"{k} {v:.2f} ms" for k, v in inside.items()) + ".")
    p()
p("## `isattached` sweep over 1,000 volumes (sequential, one process per call)")
p()
p("| driver | total s | failures |")
p("|---|---:|---:|")
for k, v in rep["sweep"].items():
    p(f"| {k} | {v['total_s']:.2f} | {v['failures']} |")
p()
p("## Lifecycle of a 1 GiB loop volume (median of rounds)")
p()
p("flexwasm: each call as kubelet makes it. Native: the same node work by hand "
  "(truncate + losetup; test -b; blkid + mkfs.ext4 + mount; bind mount; umount; umount; "
  "losetup -d) — the floor any driver pays. The difference is flexwasm's overhead.")
p()
p("| op | flexwasm ms | native ms | overhead ms |")
p("|---|---:|---:|---:|")
tf = tn = 0
for r in rep["lifecycle"]:
    tf += r["flexwasm_ms"]; tn += r["native_ms"]
    p(f"| {r['op']} | {r['flexwasm_ms']:.1f} | {r['native_ms']:.1f} | {r['flexwasm_ms']-r['native_ms']:.1f} |")
p(f"| **total** | **{tf:.1f}** | **{tn:.1f}** | **{tf-tn:.1f}** |")
p()
p("## Build facts")
p()
p("| artifact | bytes |")
p("|---|---:|")
for k, v in rep["sizes"].items():
    p(f"| {k} | {v:,} |")
p()
if rep.get("clean_build_s") is not None:
    p(f"Clean release build of the host (`cargo build --release -p flexwasm`, fresh target dir): "
      f"{rep['clean_build_s']} s.")
else:
    p("Clean build time: not measured in this run (`bash bench/run.sh --clean-build`).")
p()
md = "\n".join(lines) + "\n"
open(f"{out}/benchmarks.md", "w").write(md)

# The plot: per-call medians with min-max whiskers, log-free linear bars.
rows = rep["per_call"]
W, bar_h, gap, left, top = 760, 18, 8, 230, 40
H = top + len(rows) * (bar_h + gap) + 40
vmax = max(r["median"] for r in rows) * 1.15
def x(v):
    return left + (W - left - 80) * min(v, vmax) / vmax
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="10" y="20" font-size="14" font-weight="bold">Per-call wall time, median (ms), whiskers min-max clipped — {rep["date"]}</text>']
for i, r in enumerate(rows):
    y = top + i * (bar_h + gap)
    colour = "#888" if r["name"].startswith("native") else "#c66" if r["name"].startswith("bash") else "#4a7"
    svg.append(f'<text x="{left-6}" y="{y+bar_h-5}" text-anchor="end">{r["name"]}</text>')
    svg.append(f'<rect x="{left}" y="{y}" width="{x(r["median"])-left:.1f}" height="{bar_h}" fill="{colour}"/>')
    svg.append(f'<line x1="{x(r["min"]):.1f}" x2="{x(r["max"]):.1f}" y1="{y+bar_h/2}" y2="{y+bar_h/2}" stroke="black"/>')
    svg.append(f'<text x="{x(r["median"])+4:.1f}" y="{y+bar_h-5}">{r["median"]:.2f} ({r["ratio"]:.1f}x)</text>')
for t in range(0, int(vmax) + 1, max(1, int(vmax // 8) or 1)):
    svg.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{H-35}" y2="{H-30}" stroke="black"/>')
    svg.append(f'<text x="{x(t):.1f}" y="{H-18}" text-anchor="middle">{t}</text>')
svg.append("</svg>")
open(f"{out}/benchmarks.svg", "w").write("\n".join(svg) + "\n")
print(md)
print(f"wrote {out}/benchmarks.md and {out}/benchmarks.svg")
