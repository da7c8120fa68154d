"""Write the pooled *validation* harmful prompts used to compare safety-tune candidates under direction ablation:
harmful_val + harmbench_val + the MaliciousInstruct and TDC2023 prompts that are not in harmful_train (none of these
is a test set, and the tune trains only on harmful_train and AdvBench).

    .venv/bin/python scripts/harmful_val_pool.py runs/harmful_val_pool.jsonl
    .venv/bin/refusal-sae eval --dataset runs/harmful_val_pool.jsonl --intervention ablate
"""

import json
import sys
from pathlib import Path

from refusal_sae.data import load_dataset
from refusal_sae.data.dedup import normalize_text

if len(sys.argv) != 2:
    sys.exit("usage: harmful_val_pool.py OUT.jsonl")
train = {normalize_text(r.instruction) for r in load_dataset("harmful_train")}
rows, seen = [], set(train)
for name in ("harmful_val", "harmbench_val", "malicious_instruct", "tdc2023"):
    for r in load_dataset(name):
        if normalize_text(r.instruction) not in seen:
            seen.add(normalize_text(r.instruction))
            rows.append({"instruction": r.instruction, "category": name})
out = Path(sys.argv[1])
out.write_text("".join(json.dumps(r) + "\n" for r in rows))
print(f"{len(rows)} prompts -> {out}")
