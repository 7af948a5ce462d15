#!/usr/bin/env bash
# Network-mode benchmark (docs/network.md): one Llama-3.1-70B TP8 x PP2 replica across two HGX H100 nodes of
# topologies/clusters/h100-4node-leafspine.yaml serving the same 1,000 Poisson requests in analytic mode and in network
# mode (every collective and pipeline send as SimGrid flows). Prints per mode: process wall and CPU time, simulated
# iterations, flows and flows per wall second, TTFT / TPOT / E2E p50 and p99, and the relative difference of network
# vs analytic for each latency. Also writes netbench.csv/.svg for the shipped DGX H100 (the curve in the note).
#   scripts/bench-network.sh [OUT_DIR]        (default /tmp/parasol-bench-network)
# Options (environment): PARASOL=build/parasol  REQUESTS=1000  RATE=2.0 (req/s)  CORE=0 (empty: no pinning)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${PARASOL:-$here/build/parasol}"
out="${1:-/tmp/parasol-bench-network}"
requests="${REQUESTS:-1000}"
rate="${RATE:-2.0}"
core="${CORE-0}"
[[ -x "$bin" ]] || { echo "bench-network: $bin not found (build it: cmake --build build --target parasol)" >&2; exit 2; }
command -v python3 > /dev/null || { echo "bench-network: python3 is required (JSON summaries)" >&2; exit 2; }
pin=()
[[ -n "$core" ]] && command -v taskset > /dev/null && pin=(taskset -c "$core")
mkdir -p "$out"

scen="$out/llama70b-tp8pp2-2node.yaml"
cat > "$scen" << EOF
schema: parasol.scenario/1
name: llama70b-tp8pp2-2node
description: Llama-3.1-70B, one TP8 x PP2 replica over two HGX H100 nodes, ${requests} Poisson requests
model: $here/scenarios/models/llama-3.1-70b.yaml
cluster: $here/topologies/clusters/h100-4node-leafspine.yaml
workload:
  kind: synthetic
  requests: ${requests}
  arrival: {process: poisson, rate: ${rate}}
  input: {dist: lognormal, mean: 1155, cv: 1.0, min: 16, max: 4096}
  output: {dist: lognormal, mean: 211, cv: 1.0, min: 4, max: 1024}
  seed: 42
slo:
  ttft_p99: 2 s
  tpot_p99: 100 ms
search:
  gpus: 16
  tp: [8]
  pp: [2]
  disaggregation: off
sim:
  fidelity: analytic
EOF

for mode in analytic network; do
  start_ns=$(date +%s%N)
  /usr/bin/time -f "%e %U %S %M" -o "$out/$mode.time" "${pin[@]}" "$bin" sim "$scen" --fidelity "$mode" \
    --out "$out/$mode" > "$out/$mode.txt"
  end_ns=$(date +%s%N)
  echo "$(( (end_ns - start_ns) / 1000000 ))" > "$out/$mode.wall_ms"
done

"$bin" netbench "$here/topologies/clusters/dgx-h100.yaml" --out "$out/netbench" -q \
  --ref "nccl-tests ring=370" --ref "nccl-tests NVLS=480"

python3 - "$out" << 'EOF'
import json, sys, os
out = sys.argv[1]
res = {}
for mode in ("analytic", "network"):
    s = json.load(open(f"{out}/{mode}/summary.json"))
    import re
    m = re.search(r"(\d+) iterations, (\d+) flows", open(f"{out}/{mode}.txt").read())
    s["_iters"], s["_flows"] = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    wall, user, sys_, rss = open(f"{out}/{mode}.time").read().split()
    res[mode] = (s, float(wall), float(user) + float(sys_), int(rss) / 1024)

def pick(s, *path):
    for p in path:
        if not isinstance(s, dict) or p not in s:
            return None
        s = s[p]
    return s

def lat(s, metric, q):
    for path in (("latency_s", metric, q),):
        v = pick(s, *path)
        if v is not None:
            return v
    return None

print(f"{'mode':9} {'wall s':>7} {'cpu s':>7} {'RSS MB':>7} {'iters':>8} {'flows':>10} {'flows/cpu-s':>11}  "
      f"{'TTFT p50':>9} {'TTFT p99':>9} {'TPOT p50':>9} {'TPOT p99':>9}")
for mode, (s, wall, cpu, rss) in res.items():
    flows, iters = s["_flows"], s["_iters"]
    row = [lat(s, m, q) for m in ("ttft", "tpot") for q in ("p50", "p99")]
    print(f"{mode:9} {wall:7.2f} {cpu:7.2f} {rss:7.0f} {iters:8} {flows:10} {flows / cpu if cpu else 0:11.0f}  " +
          " ".join(f"{(v or 0) * 1e3:7.2f}ms" for v in row))
a, n = res["analytic"][0], res["network"][0]
for m in ("ttft", "tpot", "e2e"):
    for q in ("p50", "p99"):
        va, vn = lat(a, m, q), lat(n, m, q)
        if va and vn:
            print(f"{m.upper()} {q}: analytic {va * 1e3:.3f} ms, network {vn * 1e3:.3f} ms ({(vn / va - 1) * 100:+.2f} %)")
EOF
