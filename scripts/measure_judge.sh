#!/usr/bin/env bash
# Reproduce the judge's measurements (docs/judge.md).
#   bash scripts/measure_judge.sh fit        # refit the default (tuned) judge: public train split + project dev labels
#   bash scripts/measure_judge.sh eval       # agreement with people: public test split, project test labels
#   bash scripts/measure_judge.sh val        # the same on the public val split (what the fit's settings were chosen on)
#   bash scripts/measure_judge.sh speed      # throughput at 256-token answers on 2 CPU cores
#   bash scripts/measure_judge.sh remeasure  # every stored eval of the run re-labelled by the earlier judge, paired
# JSON summaries go to runs/judge/.
set -euo pipefail
cd "$(dirname "$0")/.."
RS=${RS:-.venv/bin/refusal-sae}
OUT=${OUT:-runs/judge}
JUDGES=${JUDGES:-default,learned,heuristic}
mkdir -p "$OUT"

case "${1:-}" in
  fit)
    # Settings (3 epochs, project weight 20, top 2 layers) chosen on the public val split and a quarter of the project
    # dev labels; never on a test split. Ship with: cp runs/judge/tuned.* src/refusal_sae/artifacts/judge/
    "$RS" judge-fit --out "$OUT/tuned.json" --json | tail -n 1 > "$OUT/fit.json"
    ;;
  eval)
    # the learned judge reads ~2.5 answers/s: on every fourth public test answer only (as in docs/judge.md)
    "$RS" judge-eval --judges learned,default,heuristic --labels public --split test --every 4 --json \
      | tail -n 1 > "$OUT/eval-public-test-quarter.json"
    "$RS" judge-eval --judges default,heuristic --labels public --split test --json | tee "$OUT/eval-public-test.txt" \
      | tail -n 1 > "$OUT/eval-public-test.json"
    "$RS" judge-eval --judges "$JUDGES" --labels project --split test --json | tee "$OUT/eval-project-test.txt" \
      | tail -n 1 > "$OUT/eval-project-test.json"
    ;;
  val)
    "$RS" judge-eval --judges "$JUDGES" --labels public --split val --json | tail -n 1 > "$OUT/eval-public-val.json"
    ;;
  speed)
    .venv/bin/python benchmarks/bench_judge.py --threads 2 --json | tee "$OUT/speed.txt" | tail -n 1 > "$OUT/speed.json"
    ;;
  remeasure)
    # The completions of every eval in the run directory, labelled by the default judge when generated, re-labelled by
    # the earlier default (`learned`) and compared prompt by prompt (complied; McNemar).
    R=${RUN_DIR:-runs/smollm2-135m-refusing}
    "$RS" rejudge "$R"/eval/*/ --judge learned --out-dir runs/rejudged --json | tail -n 1 > "$OUT/rejudged-learned.json"
    : > "$OUT/remeasure.jsonl"
    for f in "$R"/eval/*/; do
      name=$(basename "$f")
      "$RS" compare "runs/rejudged/${name}__learned.jsonl" "$f" --label complied --json | tail -n 1 \
        | python3 -c "import json,sys; d=json.load(sys.stdin); d['eval']='$name'; print(json.dumps(d))" >> "$OUT/remeasure.jsonl"
    done
    ;;
  *) echo "usage: $0 fit|eval|val|speed|remeasure" >&2; exit 2 ;;
esac
