#!/usr/bin/env bash
# Reproduce the stage-6 analysis figures of the embedded refusing model (docs/analysis.md): the jailbreak family table,
# upstream → downstream drops and suppressing tokens, and the probes.
#   bash scripts/measure_analysis.sh jailbreaks   # §1 (needs nothing else)
#   bash scripts/measure_analysis.sh probes       # §3 (needs the search: search/candidates, choice, greedy)
#   bash scripts/measure_analysis.sh upstream     # §2 (needs the search and the jailbreak table)
#   bash scripts/measure_analysis.sh shared       # §3 again, with the upstream analysis's refusal features as well
# RUN_DIR (default runs/smollm2-135m-refusing) must hold the direction and search results. Every step is resumable
# (answers are cached in $RUN_DIR/analysis/answers/; a finished stage is skipped) and each was sized to finish in about
# 15 minutes on 2 free CPU cores; the sizes below are those behind docs/analysis.md (the defaults are larger).
# Each command's last JSON line is written to runs/analysis-<step>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
RS=${RS:-.venv/bin/refusal-sae}
RUN_DIR=${RUN_DIR:-runs/smollm2-135m-refusing}
mkdir -p runs
# Held-out instructions only (JailbreakBench + HarmBench test): 24 the model refuses, each wrapped in the 11 families
# of the generator and in the neutral control wrapper (288 wrapped prompts), greedy 64 tokens, learned judge.
JB_ARGS=${JB_ARGS:-"--n-instructions 24 --seed 0 --max-new-tokens 64 --judge default"}
# Refusal features from 24 harmful_train prompts' per-prompt sets (threshold X chosen on 24 harmful_val prompts),
# upstream features clamped ×−3 from their peak-attribution position; 3 random same-layer draws; pairs of the 24
# jailbreak instructions.
UP_ARGS=${UP_ARGS:-"--n-train 24 --n-val 24 --ig-steps 8 --clamp -3 --n-random 3 --seed 0"}
# Probes: 48 + 48 training, 32 + 32 validation prompts (before dropping those the model answers against type),
# 48 harmless_test; 10 random draws per size; 1000 bootstrap resamples.
PROBE_ARGS=${PROBE_ARGS:-"--n-train 48 --n-val 32 --n-test 48 --n-random 10 --n-boot 1000 --seed 0"}

case "${1:-}" in
  jailbreaks) "$RS" jailbreaks --run-dir "$RUN_DIR" $JB_ARGS --json | tail -n 1 > runs/analysis-jailbreaks.json ;;
  probes) "$RS" probe --run-dir "$RUN_DIR" --features minimal,global $PROBE_ARGS --json | tail -n 1 > runs/analysis-probes.json ;;
  upstream) "$RS" upstream --run-dir "$RUN_DIR" $UP_ARGS --json | tail -n 1 > runs/analysis-upstream.json ;;
  shared) "$RS" probe --run-dir "$RUN_DIR" --features minimal,global,shared $PROBE_ARGS --json | tail -n 1 \
            > runs/analysis-probes-shared.json ;;
  *) echo "usage: $0 jailbreaks|probes|upstream|shared" >&2; exit 2 ;;
esac
