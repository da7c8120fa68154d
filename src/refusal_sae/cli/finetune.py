"""`make-refusing-model`: the safety fine-tune of the embedded model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from refusal_sae.cli.common import DataDirOpt, DeviceOpt, JsonOpt, app, command_line, err, out
from refusal_sae.cli.options import with_config
from refusal_sae.finetune.config import TuneConfig  # the recipe's defaults and help live in one place


@app.command("make-refusing-model")
@with_config(TuneConfig)
def make_refusing_model(
    cfg: TuneConfig,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "cpu",
    out_dir: Annotated[Path, typer.Option(help="Where to write the adapter; use it with `--adapter DIR` (the package is never written at run time).")] = Path("runs/smollm2-refusal-lora"),
    work_dir: Annotated[Path, typer.Option(help="Scratch folder (cached base answers).")] = Path("runs/make-refusing-model"),
) -> None:
    """Safety-tune the embedded SmolLM2 base with LoRA so that it refuses harmful requests."""
    from refusal_sae.finetune.tune import train_adapter

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
