#!/usr/bin/env bash
# make bench: figures from one run, as ratios against a floor and the tools we replace.
# Sections: enqueue (sendmail vs a minimal C floor), then the daemon (drain, latency,
# idle footprint, outage), then scale (issue #14: PIPELINING or not with the default config,
# a 451 burst, a million queued). Results: bench/out/*.json. Never fails on slowness.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${RELAYQ_BIN:-$PWD/target/release/relayq}
mkdir -p bench/out
bash scripts/deps.sh --bench   # Postfix's smtp-sink and smtp-source for the 0 ms sink row
python3 bench/enqueue.py --bin "$BIN" --out bench/out
python3 bench/daemon.py --bin "$BIN" --out bench/out ${BENCH_QUICK:+--quick}
python3 bench/scale.py --bin "$BIN" --out bench/out ${BENCH_QUICK:+--quick} ${BENCH_MILLION:+--million "$BENCH_MILLION"}
python3 - <<'PY'
import json, glob
res = {}
for f in sorted(glob.glob("bench/out/*.json")):
    if f.endswith("results.json"):
        continue
    res[f.split("/")[-1][:-5]] = json.load(open(f))
json.dump(res, open("bench/out/results.json", "w"), indent=2)
print("results: bench/out/results.json")
PY
