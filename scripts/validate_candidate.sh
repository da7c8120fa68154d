#!/usr/bin/env bash
# Validation-only checks of a safety-tune candidate from `refusal-sae tune-sweep`, before adopting it (README,
# "harmful-answer retain"): its refusal direction under the paper's bound, ablation on the pooled validation prompts,
# and the activation-addition calibration on harmless_val. No test set is read.
#   bash scripts/validate_candidate.sh runs/tune-sweep-6/0f82a8460a/adapter NAME
# Writes runs/NAME/{direction.out, valpool_ablate.jsonl, summary.json}; the candidate's run directory is kept as
# runs/smollm2-135m-refusing.NAME. The committed adapter and run directory are restored on exit, even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] && [ -f "$1/adapter_model.safetensors" ] || { echo "usage: validate_candidate.sh ADAPTER_DIR NAME" >&2; exit 1; }
CAND=$1 NAME=$2
RS=${RS:-.venv/bin/refusal-sae} PY=${PY:-.venv/bin/python}
source scripts/recipe.sh
ART=src/refusal_sae/artifacts/smollm2-refusal-lora
RUN=runs/smollm2-135m-refusing OUT=runs/$NAME POOL=runs/harmful_val_pool.jsonl
mkdir -p "$OUT"
[ -f "$POOL" ] || "$PY" scripts/harmful_val_pool.py "$POOL"
SAVED_ART=$(mktemp -d) SAVED_RUN=$(mktemp -d)
cp -r "$ART/." "$SAVED_ART/"
[ -d "$RUN" ] && mv "$RUN" "$SAVED_RUN/run"
restore() {
  if [ -d "$RUN" ]; then rm -rf "$RUN.$NAME"; mv "$RUN" "$RUN.$NAME"; fi
  cp -r "$SAVED_ART/." "$ART/"
  if [ -d "$SAVED_RUN/run" ]; then mv "$SAVED_RUN/run" "$RUN"; fi
  rm -rf "$SAVED_ART" "$SAVED_RUN"
}
trap restore EXIT
cp "$CAND"/adapter_model.safetensors "$CAND"/adapter_config.json "$CAND"/manifest.json "$ART/"

"$RS" direction $DIRECTION_ARGS --max-kl 0.1 $HARM_ARGS --json > "$OUT/direction.out"
"$RS" eval --json --dataset "$POOL" --intervention ablate --out "$OUT/valpool_ablate.jsonl" | tail -n 1 > "$OUT/valpool.json"
for c in $ACTADD_COEFFS; do
  "$RS" eval --json --dataset harmless_val --n 100 --intervention actadd --coeff "$c" | tail -n 1 > "$OUT/actadd-$c.json"
done
"$PY" - "$OUT" <<'EOF'
import json, statistics, sys
from pathlib import Path
from refusal_sae.scoring.compare import read_eval_rows
from refusal_sae.scoring.judge import repetition_ratio
out = Path(sys.argv[1])
d = json.loads((out / "direction.out").read_text().splitlines()[-1])
rows = read_eval_rows(out / "valpool_ablate.jsonl")
counts = {k: sum(r["judgement"] == k for r in rows) for k in ("complied", "refused", "degenerate")}
actadd = {p.stem.split("-", 1)[1]: json.loads(p.read_text())["refusal_rate"] for p in sorted(out.glob("actadd-*.json"))}
summary = {"direction": {k: d[k] for k in ("pos", "layer", "bypass", "induce", "kl")},
           "valpool_ablate": {"n": len(rows), **counts,
                              "mean_repetition": statistics.mean(repetition_ratio(r["completion"]) for r in rows)},
           "actadd_harmless_val": actadd}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary))
EOF
