"""`direction`, `calibrate-actadd` and `orthogonalize`: stage 1 (refusal direction), its activation-addition
coefficient, and its weight export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from refusal_sae.cli.common import (
    RunDirOpt,
    app,
    int_list,
    model_options,
    out,
    run_dir_for,
)
from refusal_sae.cli.options import Command, stage_command
from refusal_sae.direction.config import CalibrationConfig, DirectionConfig
from refusal_sae.direction.show import show_direction, show_harm_vs_refusal
from refusal_sae.models.options import ModelSpec


@app.command("direction")
@stage_command(DirectionConfig, force=True)
def direction_cmd(
    cfg: DirectionConfig,
    cmd: Command,
    harm_layers: Annotated[Optional[str], typer.Option(help="Also compare the t_inst harm direction with the refusal direction at these layers (e.g. '3-24:3').")] = None,
) -> None:
    """Refusal direction by difference in means, selected by bypass / induce / KL (Arditi et al.)."""
    from refusal_sae.direction.runner import run_direction_stage, run_harm_vs_refusal_stage, validate

    harm = int_list(harm_layers) or ()
    handle = cmd.load()
    validate(handle, cfg, harm)  # before any forward pass
    run = cmd.run
    res = run_direction_stage(handle, run, cfg, cmd.data_dir, force=cmd.force)
    show_direction(res, out, run)
    chosen = res.to_json()["chosen"]
    summary = {"model": handle.name, "run_dir": str(run.root), **chosen,
               "harm_refusal_cosine_by_layer": res.harm_refusal_cosine_by_layer}
    if harm:
        hv = run_harm_vs_refusal_stage(handle, run, cfg, harm, cmd.data_dir)
        show_harm_vs_refusal(hv, out)
        summary["harm_vs_refusal"] = hv.to_json()["rows"]
    cmd.emit(summary)


@app.command("calibrate-actadd")
@stage_command(CalibrationConfig)
def calibrate_actadd_cmd(
    cfg: CalibrationConfig,
    cmd: Command,
) -> None:
    """The smallest activation-addition coefficient of the run's refusal direction that makes harmless prompts refused."""
    from refusal_sae.direction.calibrate import run_actadd_calibration

    cfg.validate(cmd.data_dir)  # before the model loads
    run = cmd.run
    res = run_actadd_calibration(cmd.load(), run, cfg, cmd.data_dir)
    for c, r in zip(res.coeffs, res.refusal_rates, strict=True):
        out.print(f"  coefficient {c:g}: refused {r:.3f} of {res.n} {res.dataset} prompts")
    verdict = "reaches" if res.met else "no coefficient reaches"
    out.print(f"chosen coefficient {res.chosen:g} ({verdict} the target {res.target:g})  → {run.root / res.kind}")
    cmd.emit(res.to_json())


@app.command("orthogonalize")
@model_options
def orthogonalize_cmd(
    spec: ModelSpec,
    out_dir: Annotated[Path, typer.Argument(help="Where to write the edited HF model directory.")],
    run_dir: RunDirOpt = None,
    allow_approximate: Annotated[bool, typer.Option(help="Allow families with post-norms (Gemma-2/3), where the edit is approximate.")] = False,
) -> None:
    """Bake the run's refusal-direction ablation into the weights and export an HF model directory."""
    from refusal_sae.direction.result import DirectionResult
    from refusal_sae.interventions import export_model, orthogonalize_

    run = run_dir_for(spec, run_dir)
    d = DirectionResult.from_run(run.root)  # before the model loads
    handle = spec.load()
    orthogonalize_(handle, d.direction, allow_approximate)
    path = export_model(handle, out_dir)
    out.print(f"orthogonalised model written to {path} (load it with --model {path})")
