#!/usr/bin/env bash
# Compares search strategies at an equal trial budget over several seeds, on one store (so the
# sensitivity analysis and repeated evaluations are shared), and prints each run's hypervolume.
#
#   scripts/compare-strategies.sh STORE TRIALS "SEEDS" -- [search options…]
#   e.g. scripts/compare-strategies.sh /tmp/cmp 200 "0 1 2" -- --model demo --objective size
#
# Uses the release binary (cargo build --release first) and python3 to read `runs --json`.
set -euo pipefail
store=$1 trials=$2 seeds=$3
shift 3
[[ ${1:-} == -- ]] && shift
bin=${MPSEARCH:-target/release/mpsearch}
for seed in $seeds; do
  for strategy in evolution bayes random exact; do
    name="$strategy-s$seed"
    if ! "$bin" runs --store "$store" --json | python3 -c "import json,sys; sys.exit(0 if any(r['name']=='$name' for r in json.load(sys.stdin)) else 1)"; then
      start=$(date +%s.%N)
      "$bin" search --store "$store" --run "$name" --strategy "$strategy" --seed "$seed" --trials "$trials" "$@" >/dev/null
      echo "$name: $(echo "$(date +%s.%N) - $start" | bc) s" >&2
    fi
  done
done
"$bin" runs --store "$store" --json | python3 -c '
import json, sys, collections
runs = json.load(sys.stdin)
by = collections.defaultdict(list)
print("%-16s %6s %9s %5s %5s %11s %8s" % ("run", "trials", "evaluated", "hits", "front", "hypervolume", "elapsed"))
for r in runs:
    by[r["strategy"]].append(r["hypervolume"])
    print("%-16s %6d %9d %5d %5d %11.5f %7.1fs" % (r["name"], r["trials"], r["evaluated"], r["cache_hits"], len(r["front"]), r["hypervolume"], r["elapsed_seconds"]))
print()
for s, v in by.items():
    print("%-10s mean hypervolume %.5f over %d seeds (min %.5f, max %.5f)" % (s, sum(v) / len(v), len(v), min(v), max(v)))
'
