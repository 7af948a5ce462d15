#!/usr/bin/env bash
# The simulator's benchmarks (docs/benchmarks.md), one command per case, analytic mode, pinned to one core:
#   scripts/bench-sim.sh azure-conv-1gpu     (1) Llama-2-7B, 1 x A100, TP1, Azure conversation trace (19,366 requests)
#   scripts/bench-sim.sh poisson-8replica    (2) Llama-2-7B, 8 x TP1 on a DGX A100, 100,000 Poisson requests
#   scripts/bench-sim.sh fleet-512replica    (3) Llama-3.1-70B, 512 x TP8 (4,096 A100), 1,000,000 Poisson requests
#   scripts/bench-sim.sh scaling             (4) the scaling curve: 1k -> 1M requests at 512 replicas; 8 -> 512
#                                            replicas at 100k requests and the same load per replica
#   scripts/bench-sim.sh all                 (1) to (4)
# Every case runs `parasol sim SCENARIO --policy prefill_first --timing -q` (vLLM-like scheduling) under
# /usr/bin/time -v and `taskset -c 0`, prints one line per run and appends it to a CSV (default bench-sim.csv; columns
# below). Figures: process wall and CPU time, the simulation's own wall / CPU time (from --timing: without process
# start-up, scenario loading and the plan search), simulated steps (scheduler iterations over all replicas) per CPU
# second of simulation, peak RSS.
# Options (environment): PARASOL=build/parasol  CSV=bench-sim.csv  CORE=0 (empty: no pinning)  REPEAT=1
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${PARASOL:-$here/build/parasol}"
csv="${CSV:-bench-sim.csv}"
core="${CORE-0}"
repeat="${REPEAT:-1}"
[[ -x "$bin" ]] || { echo "bench-sim: $bin not found (build it: cmake --build build --target parasol)" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "bench-sim: /usr/bin/time is required (apt-get install time)" >&2; exit 2; }
header="date,case,requests,replicas,gpus,process_wall_s,process_cpu_s,sim_wall_s,sim_cpu_s,steps,steps_per_sim_cpu_s,peak_rss_mb,simulated_s,memo_hits,memo_misses"
[[ -s "$csv" ]] || echo "$header" > "$csv"
pin=()
[[ -n "$core" ]] && command -v taskset > /dev/null && pin=(taskset -c "$core")

# run CASE SCENARIO [extra parasol args...]
run() {
  local name="$1" scen="$2"
  shift 2
  local err
  err="$(mktemp)"
  for ((k = 0; k < repeat; ++k)); do
    "${pin[@]}" /usr/bin/time -v "$bin" sim "$scen" --policy prefill_first --timing -q "$@" 2> "$err" || {
      cat "$err" >&2
      rm -f "$err"
      return 1
    }
    local t wall user sys rss
    t="$(grep '^timing:' "$err")"
    wall="$(grep 'Elapsed (wall clock)' "$err" | awk -F': ' '{print $2}' |
      awk -F: '{s=0; for (i=1;i<=NF;i++) s=s*60+$i; print s}')"
    user="$(grep 'User time' "$err" | awk -F': ' '{print $2}')"
    sys="$(grep 'System time' "$err" | awk -F': ' '{print $2}')"
    rss="$(grep 'Maximum resident set size' "$err" | awk -F': ' '{printf "%.1f", $2 / 1024}')"
    get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<< " $t"; }
    local line
    line="$(date -u +%Y-%m-%dT%H:%M:%SZ),$name,$(get requests),$(get replicas),$(get gpus),$wall,$(awk "BEGIN{print $user+$sys}"),$(get sim_wall_s),$(get sim_cpu_s),$(get steps),$(get steps_per_cpu_s),$rss,$(get sim_time_s),$(get memo_hits),$(get memo_misses)"
    echo "$line" >> "$csv"
    printf '%-22s requests %8s replicas %4s | process wall %7.3f s cpu %7.3f s | sim wall %7.3f s cpu %7.3f s | %9s steps, %9s steps/s (sim cpu) | peak RSS %7s MB\n' \
      "$name" "$(get requests)" "$(get replicas)" "$wall" "$(awk "BEGIN{print $user+$sys}")" "$(get sim_wall_s)" \
      "$(get sim_cpu_s)" "$(get steps)" "$(get steps_per_cpu_s)" "$rss"
  done
  rm -f "$err"
}

# The fleet scenario with `replicas` TP8 replicas (search.gpus = 8 x replicas) at the same load per replica.
fleet_variant() {
  local replicas="$1" out="$2"
  sed -e "s|^model: \.\./models/|model: scenarios/models/|" \
      -e "s|rate: 3072}|rate: $(awk "BEGIN{print 3072 * $replicas / 512}")}|" \
      -e "s|^  tp: \[8\]|  gpus: $((8 * replicas))\n  tp: [8]|" \
      "$here/scenarios/bench/sim-fleet-512replica.yaml" > "$out"
}

case="${1:-}"
scen="$here/scenarios/bench"
case "$case" in
  azure-conv-1gpu) run azure-conv-1gpu "$scen/sim-azure-conv-1gpu.yaml" ;;
  poisson-8replica) run poisson-8replica "$scen/sim-poisson-8replica.yaml" ;;
  fleet-512replica) run fleet-512replica "$scen/sim-fleet-512replica.yaml" ;;
  scaling-requests)  # one point of the curve: scripts/bench-sim.sh scaling-requests N (512 replicas)
    run "scaling-requests" "$scen/sim-fleet-512replica.yaml" --requests "$2"
    ;;
  scaling-replicas)  # one point of the curve: scripts/bench-sim.sh scaling-replicas R (100k requests)
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    fleet_variant "$2" "$tmp/fleet-$2.yaml"
    run "scaling-replicas" "$tmp/fleet-$2.yaml" --requests 100000
    ;;
  scaling)
    for n in 1000 10000 100000 1000000; do "$0" scaling-requests "$n"; done
    for r in 8 64 512; do "$0" scaling-replicas "$r"; done
    ;;
  all)
    "$0" azure-conv-1gpu
    "$0" poisson-8replica
    "$0" fleet-512replica
    "$0" scaling
    ;;
  *)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
