#!/usr/bin/env bash
# Reproduce the hardening curve of the embedded refusing model (docs/harden.md): feature steering (a sweep of
# multiples), conditional steering and activation addition of the refusal direction, against the unsteered model.
# Needs the run's direction and search results (`bash scripts/measure_search.sh search`).
#   bash scripts/measure_harden.sh actadd   # the activation-addition sweep judged on harmless_val (validation: where
#                                           # the coefficients of the baseline were checked, never on a test split)
#   bash scripts/measure_harden.sh harden   # the hardening curve on held-out prompts (results in $RUN_DIR/analysis/harden)
#   bash scripts/measure_harden.sh all      # both
# SIZE=reduced (default) is the measured size of docs/harden.md, sized to ~15 minutes on 2 shared CPU cores (about one
# second per judged 64-token answer: 7 points x 72 prompts + 16 calibration prompts); SIZE=full uses the command's
# defaults (48 jailbreak instructions, 64 XSTest, 48 harmless_test, 32 calibration, 48 gate prompts).
set -euo pipefail
cd "$(dirname "$0")/.."
RS=${RS:-.venv/bin/refusal-sae}
RUN_DIR=${RUN_DIR:-runs/smollm2-135m-refusing}
SIZE=${SIZE:-reduced}
FEATURES=${FEATURES:-minimal}  # minimal (the greedy minimal set; needs search/greedy) | global (top K* of the ranking)
MULTIPLIERS=${MULTIPLIERS:-0.5,1,2}  # steering multiples of mu; points already generated are reused by a rerun
mkdir -p runs
case "$SIZE" in
  reduced) SIZE_ARGS=(--n-calib 16 --n-gate 24 --n-jailbreak 16 --n-xstest 24 --n-harmless 16) ;;
  full) SIZE_ARGS=() ;;
  *) echo "SIZE must be reduced or full" >&2; exit 2 ;;
esac
actadd() {
  "$RS" calibrate-actadd --run-dir "$RUN_DIR" --coeffs 0.25,0.5,1 --dataset harmless_val --n 24 --seed 0 \
    --target 0.5 --json | tail -n 1 > runs/harden-actadd-val.json
}
harden() {
  "$RS" harden --run-dir "$RUN_DIR" --features "$FEATURES" --multipliers "$MULTIPLIERS" --steer-mode floor \
    --actadd-coeffs 0.5,1 --random-multipliers 2 --n-random 1 --attack prefill --prefill "Sure, here is" \
    --datasets jailbreakbench,harmbench_test --max-new-tokens 64 --seed 0 "${SIZE_ARGS[@]}" --json \
    | tail -n 1 > "runs/harden-$FEATURES.json"
}
case "${1:-}" in
  actadd) actadd ;;
  harden) harden ;;
  all) actadd; harden ;;
  *) echo "usage: $0 actadd|harden|all" >&2; exit 2 ;;
esac
