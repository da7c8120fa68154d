#!/usr/bin/env bash
# Reproduce the measured figures of the embedded refusing model (docs/embedded-model.md, docs/refusal-direction.md, docs/saes.md).
#   bash scripts/measure_embedded.sh refusal    # refusal rates of the tuned model (held-out / test sets)
#   bash scripts/measure_embedded.sh saes       # train the committed SAEs (every third layer) and measure them
#   bash scripts/measure_embedded.sh direction  # refusal direction, ablation, actadd, orthogonalised export
#   bash scripts/measure_embedded.sh controls   # the untuned base model, as is and with that direction ablated
#   bash scripts/measure_embedded.sh rejudge    # every eval of the run re-labelled by the heuristic judge, side by side
# Each `eval` prints its summary as the last JSON line; they are collected in $LOG (default runs/measured.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
RS=${RS:-.venv/bin/refusal-sae}
source scripts/recipe.sh
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
    # Width 2560 keeps all ten within 60 MB of fp16. Later layers need more active latents for FVU <= 0.15:
    # k=48 at layers 2-20, 80 at 23, 128 at 26 and 29 (measured: k=48 gave FVU 0.165/0.191/0.195 there).
    # Written under runs/ (never into the installed package); a maintainer who adopts them copies the folder over the
    # committed SAEs (docs/embedded-model.md).
    SAES=${SAES:-runs/smollm2-135m-refusing/saes}
    COMMON="--width 2560 --n-prompts 512 --training-tokens 600000 --batch-size 1024 --lr 2e-3 --dead-tokens 100000 --layers-per-chunk 10 --out $SAES"
    "$RS" train-sae --layers 2-20:3 --k 48 $COMMON
    "$RS" train-sae --layers 23 --k 80 $COMMON
    "$RS" train-sae --layers 26,29 --k 128 $COMMON
    "$RS" sae-metrics --saes "$SAES" --n-prompts 300 --ce-batches 8 --write --json | tail -n 1 > runs/sae-metrics.json
    ;;
  direction)
    # Selection as measured (docs/refusal-direction.md): all 260 harmful_train prompts per class, candidate layers 6-23 (the last 20% are
    # pruned anyway). The paper's bound KL <= 0.1 first; when no candidate passes it, the smallest of 0.15, 0.2, 0.25
    # that admits one (a re-run with another bound reuses the measured scores; the error lists the candidates).
    chosen=""
    for KL in ${DIRECTION_MAX_KL:-0.1 0.15 0.2 0.25}; do
      if "$RS" direction $DIRECTION_ARGS --max-kl "$KL" $HARM_ARGS --json > runs/direction.out; then
        chosen=$KL; break
      fi
    done
    [ -n "$chosen" ] || { echo "no candidate direction within any KL bound" >&2; exit 1; }
    tail -n 1 runs/direction.out | python3 -c "import json,sys; d=json.load(sys.stdin); d['max_kl']=$chosen; print(json.dumps(d))" > runs/direction.json
    for d in jailbreakbench harmbench_test; do ev "ablate/$d" --dataset "$d" --intervention ablate; done
    ev "actadd/harmless_test" --dataset harmless_test --n 100 --intervention actadd
    # Activation-addition coefficient calibrated on harmless_val (never on test): the smallest of $ACTADD_COEFFS whose
    # addition makes >= 90% of 100 harmless_val prompts refused; then measured once on harmless_test.
    "$RS" calibrate-actadd --coeffs "$ACTADD_COEFFS" --json | tail -n 1 > runs/actadd-calibration.json
    COEFF=$(python3 -c "import json; print(json.load(open('runs/actadd-calibration.json'))['chosen'])")
    ev "actadd-calibrated/harmless_test/$COEFF" --dataset harmless_test --n 100 --intervention actadd --coeff "$COEFF"
    "$RS" orthogonalize runs/ortho-smollm2
    for d in jailbreakbench harmbench_test; do ev "ortho/$d" --dataset "$d" --model runs/ortho-smollm2; done
    ;;
  controls)
    # Reference points for the ablation (after `direction`): the untuned base model as is, and with the tuned model's
    # refusal direction ablated, which has no refusal to remove and shows what the intervention alone costs. Then the
    # tuned model's ablation compared with that control prompt by prompt (McNemar), JailbreakBench + HarmBench pooled.
    E=runs/eval
    for d in jailbreakbench harmbench_test; do
      ev "base/$d" --dataset "$d" --model smollm2-135m --out "$E/base__$d.jsonl"
      ev "base-ablate/$d" --dataset "$d" --model smollm2-135m --intervention ablate --run-dir runs/smollm2-135m-refusing \
        --out "$E/base__${d}__ablate-committed-r.jsonl"
    done
    pair() { echo "$E/$1__jailbreakbench$2.jsonl $E/$3__jailbreakbench$4.jsonl $E/$1__harmbench_test$2.jsonl $E/$3__harmbench_test$4.jsonl"; }
    "$RS" compare $(pair base "" base __ablate-committed-r) --json | tail -n 1 > runs/compare-base-vs-base-ablated.json
    "$RS" compare $(pair base __ablate-committed-r smollm2-135m-refusing __ablate) --json | tail -n 1 > runs/compare-control-vs-tuned-ablated.json
    ;;
  rejudge)
    # The same completions counted by the learned default judge (as generated) and by the heuristic judge (the default
    # before it, which counts topic salad as compliance): docs/judge.md. No generation.
    R=${RUN_DIR:-runs/smollm2-135m-refusing}
    "$RS" rejudge "$R"/eval/*/ --judge heuristic --out-dir runs/rejudged --json | tail -n 1 > runs/rejudged.json
    for f in "$R"/eval/*/; do
      name=$(basename "$f")
      "$RS" compare "runs/rejudged/${name}__heuristic.jsonl" "$f" --label complied --json | tail -n 1 \
        | python3 -c "import json,sys; d=json.load(sys.stdin); d['eval']='$name'; print(json.dumps(d))" >> runs/rejudged-compare.jsonl
    done
    ;;
  *) echo "usage: $0 refusal|saes|direction|controls|rejudge" >&2; exit 2 ;;
esac
