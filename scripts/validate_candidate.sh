#!/usr/bin/env bash
# Validation-only checks of a safety-tune candidate from `refusal-sae tune-sweep`, before adopting it
# (docs/embedded-model.md, "harmful-answer retain"): its refusal direction under the paper's bound, ablation on the
# pooled validation prompts, and the activation-addition calibration on harmless_val. No test set is read.
#   bash scripts/validate_candidate.sh runs/tune-sweep-6/0f82a8460a/adapter NAME
# The candidate is loaded with `--adapter` (nothing is copied into the package); everything is written under
# runs/NAME (its run directory, valpool_ablate.jsonl, summary.json).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] && [ -f "$1/adapter_model.safetensors" ] || { echo "usage: validate_candidate.sh ADAPTER_DIR NAME" >&2; exit 1; }
CAND=$1 NAME=$2
RS=${RS:-.venv/bin/refusal-sae} PY=${PY:-.venv/bin/python}
source scripts/recipe.sh
OUT=runs/$NAME POOL=runs/harmful_val_pool.jsonl
M=(--adapter "$CAND" --run-dir "$OUT/run")
mkdir -p "$OUT"
[ -f "$POOL" ] || "$PY" scripts/harmful_val_pool.py "$POOL"

"$RS" direction "${M[@]}" $DIRECTION_ARGS --max-kl 0.1 $HARM_ARGS --json > "$OUT/direction.out"
"$RS" eval "${M[@]}" --json --dataset "$POOL" --intervention ablate --out "$OUT/valpool_ablate.jsonl" | tail -n 1 > "$OUT/valpool.json"
"$RS" calibrate-actadd "${M[@]}" --coeffs "$ACTADD_COEFFS" --json | tail -n 1 > "$OUT/actadd.json"
"$PY" - "$OUT" <<'PYEOF'
import json, statistics, sys
from pathlib import Path
from refusal_sae.scoring.compare import read_eval_rows
from refusal_sae.scoring.judge import repetition_ratio
out = Path(sys.argv[1])
d = json.loads((out / "direction.out").read_text().splitlines()[-1])
rows = read_eval_rows(out / "valpool_ablate.jsonl")
counts = {k: sum(r["judgement"] == k for r in rows) for k in ("complied", "refused", "degenerate")}
cal = json.loads((out / "actadd.json").read_text())
summary = {"direction": {k: d[k] for k in ("pos", "layer", "bypass", "induce", "kl")},
           "valpool_ablate": {"n": len(rows), **counts,
                              "mean_repetition": statistics.mean(repetition_ratio(r["completion"]) for r in rows)},
           "actadd_harmless_val": dict(zip(map(str, cal["coeffs"]), cal["refusal_rates"], strict=True))}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary))
PYEOF
