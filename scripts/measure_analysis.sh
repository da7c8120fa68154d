#!/usr/bin/env bash
# Reproduce the stage-6 analysis figures of the embedded refusing model (docs/analysis.md): the jailbreak family table,
# upstream → downstream drops and suppressing tokens, and the probes.
#   bash scripts/measure_analysis.sh jailbreaks   # §1 (needs nothing else)
#   bash scripts/measure_analysis.sh upstream     # §2 (needs the search's candidates and choice, and the jailbreak table)
#   bash scripts/measure_analysis.sh probes       # §3 (needs the search, incl. its greedy minimal set, and the jailbreak
#                                                 #    table; FEATURES=minimal,global when upstream has not run)
# RUN_DIR (default runs/smollm2-135m-refusing) must hold the direction and search results. Every step is resumable
# (answers are cached in $RUN_DIR/analysis/answers/; a finished stage is skipped) and each was sized to finish in about
# 15 minutes on 2 free CPU cores; the sizes below are those behind docs/analysis.md (the defaults are larger).
# Each command's last JSON line is written to runs/analysis-<step>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
RS=${RS:-.venv/bin/refusal-sae}
RUN_DIR=${RUN_DIR:-runs/smollm2-135m-refusing}
mkdir -p runs
# Held-out instructions only (JailbreakBench + HarmBench test): the first 21 (seeded order) the model refuses, each
# wrapped in the 11 families of the generator and in the neutral control wrapper (252 wrapped prompts), greedy 64
# tokens, learned judge (~9 min of generation and ~6 of judging on 2 cores).
JB_ARGS=${JB_ARGS:-"--n-instructions 21 --seed 0 --max-new-tokens 64 --judge default"}
# Refusal features from 20 harmful_train prompts' per-prompt sets (threshold X chosen on 20 harmful_val prompts;
# 6 LA-IG steps instead of the default 10), upstream features clamped ×−3 from their peak-attribution position, 3
# random same-layer draws; the pairs of 16 of the 21 jailbreak instructions (seeded; 176 wrapped prompts, each one a
# gradient × input pass for the suppressing tokens). All to fit 15 minutes.
UP_ARGS=${UP_ARGS:-"--n-train 20 --n-val 20 --ig-steps 6 --clamp -3 --n-random 3 --max-instructions 16 --seed 0"}
# Probes: 40 + 40 training, 24 + 24 validation prompts (before dropping those the model answers against type), 40
# harmless_test (defaults 64 / 32 / 64, cut to fit 15 minutes); 10 random draws per size; 1000 bootstrap resamples.
PROBE_ARGS=${PROBE_ARGS:-"--n-train 40 --n-val 24 --n-test 40 --n-random 10 --n-boot 1000 --seed 0"}

case "${1:-}" in
  jailbreaks) "$RS" jailbreaks --run-dir "$RUN_DIR" $JB_ARGS --json | tail -n 1 > runs/analysis-jailbreaks.json ;;
  upstream) "$RS" upstream --run-dir "$RUN_DIR" $UP_ARGS --json | tail -n 1 > runs/analysis-upstream.json ;;
  probes) "$RS" probes --run-dir "$RUN_DIR" --feature-sets ${FEATURES:-minimal,global,shared} $PROBE_ARGS --json | tail -n 1 \
            > runs/analysis-probes.json ;;
  *) echo "usage: $0 jailbreaks|upstream|probes" >&2; exit 2 ;;
esac
