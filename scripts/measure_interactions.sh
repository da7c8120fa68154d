#!/usr/bin/env bash
# Reproduce the stage 3–5 figures of the embedded refusing model (docs/interactions.md), after the feature search
# (`bash scripts/measure_search.sh search`, and optionally `... table`, whose judged held-out answers are reused).
#   bash scripts/measure_interactions.sh interactions   # FM vs linear probe, top pairs, the K sweep
#   bash scripts/measure_interactions.sh silent         # critical-but-silent members + newly active features (no rounds)
#   bash scripts/measure_interactions.sh rounds         # the rounds of re-search (reuses the two results above)
#   bash scripts/measure_interactions.sh all            # the three in order
# RUN_DIR (default runs/smollm2-135m-refusing) must hold search/{candidates,choice,greedy}; results go to
# $RUN_DIR/search/{heldout,interactions,dormant}, the printed summaries to runs/*.txt and runs/*.json. Every step is
# resumable: a rerun with the same settings loads what is complete (each K of the sweep, each round) and computes
# the rest.
#
# Sizes (reduced so that each step fits in about 15 minutes on 2 CPU cores; the defaults of the commands are larger):
#   interactions: FM on 128 harmful_train + 128 harmless_train prompts (× unclamped / minimal set clamped), early
#     stopping and the probe's C on 39 harmful_val + 39 harmless_val, held out: the JailbreakBench + HarmBench test
#     prompts the unclamped model refuses + 64 harmless_test (all defaults); pool = minimal set + 200; the K sweep on
#     N_SWEEP (32, one generation batch) held-out refused prompts, K in $KS, 2 random draws per K, 64-token greedy
#     answers, default judge. A rerun with more K values reuses the K already done (one result folder per K).
#   silent: the same 32 prompts (same seed and size: the K sweep's sample), sets global (top K*) and minimal; newly
#     active features on them beside 1 random set.
#   rounds: MAX_ROUNDS (1) round(s) after round 0, 16 harmful_train attribution prompts and 5 IG steps per round,
#     24 harmful_val prompts (the refused ones judged), 1 random set per round. A rerun with more rounds reuses those
#     done.
# On the shared 2-core machine of the measurements a clamped 64-token generation of 32 prompts took 1-5 minutes, which
# sets these sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
RS=${RS:-.venv/bin/refusal-sae}
RUN_DIR=${RUN_DIR:-runs/smollm2-135m-refusing}
N_SWEEP=${N_SWEEP:-32}
MAX_ROUNDS=${MAX_ROUNDS:-1}
KS=${KS:-}  # e.g. 5,10,20,40 (empty: the command's default, the minimal-set size doubled up to the pool, and the pool)
SEED=${SEED:-0}
mkdir -p runs
k_opt=()
if [ -n "$KS" ]; then k_opt=(--k "$KS"); fi

interactions() {
  "$RS" interactions --run-dir "$RUN_DIR" --seed "$SEED" --n-sweep "$N_SWEEP" --n-random 2 "${k_opt[@]}" --json \
    | tee runs/interactions.txt | tail -n 1 > runs/interactions.json
}
silent() {
  "$RS" dormant --run-dir "$RUN_DIR" --seed "$SEED" --n-prompts "$N_SWEEP" --max-rounds 0 --n-random 1 --json \
    | tee runs/dormant-silent.txt | tail -n 1 > runs/dormant-silent.json
}
rounds() {
  "$RS" dormant --run-dir "$RUN_DIR" --seed "$SEED" --n-prompts "$N_SWEEP" --max-rounds "$MAX_ROUNDS" --n-attribution 16 \
    --ig-steps 5 --n-val 24 --n-random 1 --json | tee runs/dormant-rounds.txt | tail -n 1 > runs/dormant-rounds.json
}

case "${1:-}" in
  interactions) interactions ;;
  silent) silent ;;
  rounds) rounds ;;
  all) interactions; silent; rounds ;;
  *) echo "usage: $0 interactions|silent|rounds|all" >&2; exit 2 ;;
esac
