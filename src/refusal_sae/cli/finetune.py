"""`make-refusing-model`: the safety fine-tune of the embedded model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from refusal_sae.cli.common import DataDirOpt, DeviceOpt, JsonOpt, app, command_line, err, out
from refusal_sae.finetune.config import TuneConfig

D = TuneConfig  # the recipe's defaults live in one place


@app.command("make-refusing-model")
def make_refusing_model(
    data_dir: DataDirOpt = None,
    seed: Annotated[int, typer.Option(help="Seed for data sampling, refusal texts, LoRA init and batch order.")] = D.seed,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = D.epochs,
    lr: Annotated[float, typer.Option(help="Peak learning rate (linear warm-up and decay).")] = D.lr,
    n_harmful: Annotated[int, typer.Option(help="harmful_train prompts (all 260 by default).")] = D.n_harmful,
    n_harmless: Annotated[int, typer.Option(help="harmless_train prompts answered by the base model.")] = D.n_harmless,
    n_extra_advbench: Annotated[int, typer.Option(help="AdvBench prompts beyond harmful_train (decontaminated against test sets).")] = D.n_extra_advbench,
    persuasive_pairs: Annotated[bool, typer.Option(help="Add the authored harmful/benign persuasive-writing pairs.")] = D.persuasive_pairs,
    drop_refused_harmless: Annotated[bool, typer.Option(
        help="Leave out harmless prompts whose base answer already reads as a refusal.")] = D.drop_refused_harmless,
    batch_size: Annotated[int, typer.Option(help="Examples per optimiser step.")] = D.batch_size,
    lora_r: Annotated[int, typer.Option(help="LoRA rank (all linear layers).")] = D.lora_r,
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha.")] = D.lora_alpha,
    near_duplicate_jaccard: Annotated[Optional[float], typer.Option(
        help="Also drop training prompts whose word-set Jaccard with any test prompt is at least this.")] = D.near_duplicate_jaccard,
    opening_weight: Annotated[float, typer.Option(
        help="Extra loss weight on the answers' first --opening-tokens tokens (the refuse-or-answer decision).")] = D.opening_weight,
    opening_tokens: Annotated[int, typer.Option(help="Answer tokens the opening loss covers.")] = D.opening_tokens,
    harmless_kl_weight: Annotated[float, typer.Option(
        help="Weight of KL(base ‖ tuned) over harmless answers' tokens (keeps their full distribution; 0: off).")] = D.harmless_kl_weight,
    harmful_answer_kl_weight: Annotated[float, typer.Option(
        help="Weight of KL(base ‖ tuned) over the base model's own answers to harmful prompts, after their first "
             "--harmful-answer-skip tokens (0: off).")] = D.harmful_answer_kl_weight,
    harmful_answer_skip: Annotated[int, typer.Option(
        help="Opening tokens of those answers left out of that KL (the refusal decision).")] = D.harmful_answer_skip,
    device: DeviceOpt = "cpu",
    out_dir: Annotated[Path, typer.Option(help="Where to write the adapter; use it with `--adapter DIR` (the package is never written at run time).")] = Path("runs/smollm2-refusal-lora"),
    work_dir: Annotated[Path, typer.Option(help="Scratch folder (cached base answers).")] = Path("runs/make-refusing-model"),
) -> None:
    """Safety-tune the embedded SmolLM2 base with LoRA so that it refuses harmful requests."""
    from refusal_sae.finetune.tune import train_adapter

    cfg = TuneConfig(seed=seed, epochs=epochs, lr=lr, n_harmful=n_harmful, n_harmless=n_harmless, n_extra_advbench=n_extra_advbench,
                     persuasive_pairs=persuasive_pairs, drop_refused_harmless=drop_refused_harmless,
                     batch_size=batch_size, lora_r=lora_r, lora_alpha=lora_alpha, near_duplicate_jaccard=near_duplicate_jaccard,
                     opening_weight=opening_weight, opening_tokens=opening_tokens,
                     harmless_kl_weight=harmless_kl_weight, harmful_answer_kl_weight=harmful_answer_kl_weight,
                     harmful_answer_skip=harmful_answer_skip)
    manifest = train_adapter(cfg, data_dir, out_dir, work_dir, command=command_line(), console=err,
                             device=device)
    out.print_json(json.dumps(manifest))


@app.command("tune-sweep")
def tune_sweep(
    grid: Annotated[Path, typer.Argument(help="JSON list of TuneConfig overrides, one object per candidate.")],
    out_dir: Annotated[Path, typer.Option(help="Sweep folder: one sub-folder per candidate, and sweep.json.")] = Path("runs/tune-sweep"),
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "cpu",
    n_harmless_val: Annotated[int, typer.Option(help="harmless_val prompts per candidate.")] = 400,
    budget_s: Annotated[Optional[float], typer.Option(help="Start no new candidate after this many seconds.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Choose the fine-tune recipe on the validation splits (harmful_val refusal, harmless_val over-refusal)."""
    from refusal_sae.errors import ConfigError
    from refusal_sae.finetune.config import cli_command
    from refusal_sae.finetune.sweep import SweepConfig, run_sweep

    try:
        rows = json.loads(grid.read_text())
        configs = [TuneConfig(**row) for row in rows]
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"{grid}: expected a JSON list of TuneConfig overrides ({e})") from None
    if not configs:
        raise ConfigError(f"{grid}: the grid is empty")
    summary = run_sweep(configs, out_dir, data_dir, SweepConfig(n_harmless_val=n_harmless_val), device, budget_s, err)
    for r in summary["results"]:
        mark = "*" if r["key"] == summary["chosen"] else " "
        err.print(f"{mark} {r['key']}  harmful_val {r['val']['harmful_val']['refusal_rate']:.3f}  "
                  f"harmless_val {r['val']['harmless_val']['refusal_rate']:.3f}  {cli_command(TuneConfig(**r['config']))}")
    if json_out:
        out.print_json(json.dumps({k: summary[k] for k in ("chosen", "sweep")} | {
            "results": [{"key": r["key"], "config": r["config"], "val": {k: v["refusal_rate"] for k, v in r["val"].items()}}
                        for r in summary["results"]]}))
