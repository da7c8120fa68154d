#!/usr/bin/env bash
# Reproduce the measured figures of the embedded refusing model (README "Measured" section).
#   bash scripts/measure_embedded.sh refusal    # refusal rates of the tuned model (held-out / test sets)
#   bash scripts/measure_embedded.sh saes       # train the committed SAEs (every third layer) and measure them
#   bash scripts/measure_embedded.sh direction  # refusal direction, ablation, actadd, orthogonalised export
# Each `eval` prints its summary as the last JSON line; they are collected in $LOG (default runs/measured.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
RS=${RS:-.venv/bin/refusal-sae}
LOG=${LOG:-runs/measured.jsonl}
mkdir -p "$(dirname "$LOG")"

ev() {  # eval with --json; append the summary line (tagged with the label $1) to $LOG
  local label=$1; shift
  "$RS" eval --json "$@" | tail -n 1 | python3 -c "import json,sys; d=json.load(sys.stdin); d['label']='$label'; print(json.dumps(d))" >> "$LOG"
  tail -n 1 "$LOG"
}

case "${1:-}" in
  refusal)
    ev "tuned/harmless_test" --dataset harmless_test --n 300
    for d in jailbreakbench harmbench_test xstest_safe; do ev "tuned/$d" --dataset "$d"; done
    ;;
  saes)
    SAES=src/refusal_sae/artifacts/saes/smollm2-135m-refusing
    "$RS" train-sae --layers 2-29:3 --width 2304 --k 32 --training-tokens 500000 --batch-size 1024 --lr 2e-3 \
      --dead-tokens 100000 --layers-per-chunk 10 --out "$SAES"
    "$RS" sae-metrics --saes "$SAES" --n-prompts 300 --ce-batches 8 --write --json | tail -n 1 > runs/sae-metrics.json
    ;;
  direction)
    "$RS" direction --harm-layers 2-23:3 --json | tail -n 1 > runs/direction.json
    for d in jailbreakbench harmbench_test; do ev "ablate/$d" --dataset "$d" --intervention ablate; done
    ev "actadd/harmless_test" --dataset harmless_test --n 100 --intervention actadd
    "$RS" orthogonalize runs/ortho-smollm2
    for d in jailbreakbench harmbench_test; do ev "ortho/$d" --dataset "$d" --model runs/ortho-smollm2; done
    ;;
  *) echo "usage: $0 refusal|saes|direction" >&2; exit 2 ;;
esac
