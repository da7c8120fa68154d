#!/usr/bin/env bash
# Reproduce the feature-search figures of the embedded refusing model (docs/search.md), after the direction stage
# (`bash scripts/measure_embedded.sh direction` or `refusal-sae direction --n-train 260 --layers 6-23`).
#   bash scripts/measure_search.sh search   # candidates, K* and c on harmful_val, greedy minimal set, feature cards
#   bash scripts/measure_search.sh table    # the held-out comparison table (JailbreakBench + HarmBench test)
#   bash scripts/measure_search.sh bench    # benchmarks/bench_search.py (engine vs naive greedy)
# RUN_DIR (default runs/smollm2-135m-refusing) must hold the direction; results go to $RUN_DIR/search/.
set -euo pipefail
cd "$(dirname "$0")/.."
RS=${RS:-.venv/bin/refusal-sae} PY=${PY:-.venv/bin/python}
RUN_DIR=${RUN_DIR:-runs/smollm2-135m-refusing}
mkdir -p runs
case "${1:-}" in
  search) "$RS" search --run-dir "$RUN_DIR" --seed 0 --json | tail -n 1 > runs/search.json ;;
  table) "$RS" search-table --run-dir "$RUN_DIR" --json | tail -n 1 > runs/search-table.json ;;
  bench) "$PY" benchmarks/bench_search.py --json | tail -n 1 > runs/bench-search.json ;;
  *) echo "usage: $0 search|table|bench" >&2; exit 2 ;;
esac
