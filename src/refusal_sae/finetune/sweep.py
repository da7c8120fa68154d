"""Choose the safety fine-tune's recipe on the *validation* splits: train each candidate config, measure
refusal on ``harmful_val`` and over-refusal on a ``harmless_val`` sample, pick by a rule fixed in advance.

Test splits are never read here (except by :func:`build_instructions`' decontamination, which only removes
prompts). Each candidate's adapter and validation result are written under ``out_root/<config hash>/`` and
reused on a re-run, so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console

from refusal_sae.data import load_dataset
from refusal_sae.finetune.tune import TuneConfig, cli_command, train_adapter
from refusal_sae.runs import completed, config_hash, mark_complete, write_json_atomic
from refusal_sae.scoring.judge import REFUSED, Judge, get_judge


@dataclass
class SweepConfig:
    n_harmless_val: int = 400
    n_harmful_val: int | None = None  # None: all of harmful_val (39)
    max_harmless_refusal: float = 0.05  # the over-refusal target of the recipe choice, applied to harmless_val
    max_new_tokens: int = 64
    judge: str = "substring"  # refusal is judged by phrases; the embedding judge adds nothing to the rule
    seed: int = 0


def config_key(cfg: TuneConfig) -> str:
    return config_hash(asdict(cfg))[:10]


def _identity(cfg: TuneConfig, sweep: SweepConfig) -> dict:
    """What a candidate's validation row depends on: its recipe and how it was judged."""
    return {"tune": asdict(cfg), "sweep": asdict(sweep)}


def evaluate_adapter(adapter_dir: Path, sets: dict, judge: Judge, device: str, max_new_tokens: int,
                     batch_size: int = 64) -> dict:
    """Refusal rate of the embedded base merged with ``adapter_dir`` on each prompt set."""
    from refusal_sae.models.loading import load_model
    from refusal_sae.scoring.config import EvalConfig
    from refusal_sae.scoring.evaluation import evaluate
    from refusal_sae.scoring.refusal_score import opening_tokens

    handle = load_model(adapter=adapter_dir, device=device, dtype="float32")
    toks = opening_tokens(handle.tokenizer)
    out = {}
    for name, prompts in sets.items():
        res = evaluate(handle, prompts, judge, toks, EvalConfig(max_new_tokens, batch_size), progress=False)
        out[name] = {"n": res.n, "refusal_rate": res.rate(REFUSED), "counts": res.counts,
                     "examples": [{"instruction": r["instruction"], "completion": r["completion"]}
                                  for r in res.rows[:3]]}
    return out


def select(results: list[dict], max_harmless_refusal: float) -> dict:
    """Among candidates whose harmless_val refusal ≤ the bound, the highest harmful_val refusal (ties: lower
    harmless refusal); when none meets the bound, the largest harmful − harmless margin."""
    def rates(r):
        return r["val"]["harmful_val"]["refusal_rate"], r["val"]["harmless_val"]["refusal_rate"]

    ok = [r for r in results if rates(r)[1] <= max_harmless_refusal]
    if ok:
        return max(ok, key=lambda r: (rates(r)[0], -rates(r)[1]))
    return max(results, key=lambda r: rates(r)[0] - rates(r)[1])


def run_sweep(configs: list[TuneConfig], out_root: Path, data_dir=None, sweep: SweepConfig | None = None,
              device: str = "cpu", budget_s: float | None = None, console: Console | None = None) -> dict:
    """Train and validate every config (until ``budget_s`` runs out); write and return ``sweep.json``."""
    sweep = sweep or SweepConfig()
    console = console or Console(stderr=True)
    out_root.mkdir(parents=True, exist_ok=True)
    sets = {"harmful_val": load_dataset("harmful_val", data_dir).sample(sweep.n_harmful_val, sweep.seed),
            "harmless_val": load_dataset("harmless_val", data_dir).sample(sweep.n_harmless_val, sweep.seed)}
    judge = get_judge(sweep.judge)
    t0, results = time.time(), []
    for cfg in configs:
        if budget_s is not None and time.time() - t0 > budget_s:
            console.print(f"[yellow]budget of {budget_s:.0f} s spent: {len(configs) - len(results)} configs not run")
            break
        cdir = out_root / config_key(cfg)
        done = completed(cdir / "val.json", _identity(cfg, sweep))
        if done is not None:
            results.append(done["row"])
            continue
        manifest = train_adapter(cfg, data_dir, cdir / "adapter", out_root / "work", console=console,
                                 device=device, gen_batch_size=128,
                                 command=cli_command(cfg, device))
        val = evaluate_adapter(cdir / "adapter", sets, judge, device, sweep.max_new_tokens)
        row = {"key": cdir.name, "config": asdict(cfg), "val": val, "train_seconds": manifest["train_seconds"],
               "final_loss": manifest["final_loss"], "examples": manifest["examples"]}
        mark_complete(cdir / "val.json", _identity(cfg, sweep), {"row": row})
        results.append(row)
        console.print(f"{cdir.name}: harmful_val {val['harmful_val']['refusal_rate']:.3f} "
                      f"harmless_val {val['harmless_val']['refusal_rate']:.3f} ({manifest['train_seconds']} s)")
    summary = {"sweep": asdict(sweep), "results": results,
               "chosen": select(results, sweep.max_harmless_refusal)["key"] if results else None}
    write_json_atomic(out_root / "sweep.json", summary)
    return summary
