#!/usr/bin/env bash
# Side-by-side timings of scratchnet and PyTorch on this machine: ROUNDS rounds, each running
# PyTorch (1 and 2 threads) then `scratchnet bench` (1 and 2 threads), so both programs see
# the same load. Prints, per workload and thread count, the median of the per-round medians,
# the min–max over rounds and the ratio scratchnet ÷ PyTorch.
#
#   python3 -m pip install torch numpy     # once
#   benches/compare_pytorch.sh [ROUNDS] [WORKLOADS]   # defaults: 3, step,fwd,labrun,bignet
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
workloads=${2:-step,fwd,labrun,bignet}
reference=../shared/bench/pytorch_reference.py
[ -f "$reference" ] || { echo "missing $reference" >&2; exit 1; }
cargo build --release --quiet
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for round in $(seq "$rounds"); do
    echo "round $round/$rounds" >&2
    for t in 1 2; do
        python3 "$reference" --threads "$t" --workloads "$workloads" >>"$out/pytorch.jsonl"
    done
    ./target/release/scratchnet bench --threads 1,2 --workloads "$workloads" \
        --json "$out/round.jsonl" >/dev/null
    cat "$out/round.jsonl" >>"$out/scratchnet.jsonl"
done
python3 - "$out/scratchnet.jsonl" "$out/pytorch.jsonl" <<'PY'
import json, statistics, sys
def load(path):
    runs = {}
    for line in open(path):
        r = json.loads(line)
        runs.setdefault((r["workload"], r["threads"]), []).append(r["median_ms"])
    return runs
ours, theirs = load(sys.argv[1]), load(sys.argv[2])
print(f"{'workload':10} {'threads':>7} {'scratchnet ms':>24} {'PyTorch ms':>24} {'ratio':>6}")
for key in sorted(ours, key=lambda k: (k[0], k[1])):
    if key not in theirs:
        continue
    a, b = ours[key], theirs[key]
    ma, mb = statistics.median(a), statistics.median(b)
    fmt = lambda m, v: f"{m:9.1f} ({min(v):.1f}–{max(v):.1f})"
    print(f"{key[0]:10} {key[1]:>7} {fmt(ma, a):>24} {fmt(mb, b):>24} {ma / mb:6.2f}")
PY
