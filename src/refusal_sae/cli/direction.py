"""`direction`, `calibrate-actadd` and `orthogonalize`: stage 1 (refusal direction), its activation-addition
coefficient, and its weight export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from refusal_sae.cli.common import (
    DataDirOpt,
    ForceOpt,
    JsonOpt,
    RunDirOpt,
    app,
    float_list,
    int_list,
    model_options,
    out,
    run_dir_for,
)
from refusal_sae.direction.config import CalibrationConfig, DirectionConfig, SelectionConfig
from refusal_sae.models.options import ModelSpec

D, S, C = DirectionConfig, SelectionConfig, CalibrationConfig  # defaults live in the torch-free configs


@app.command("direction")
@model_options
def direction_cmd(
    spec: ModelSpec,
    run_dir: RunDirOpt = None,
    n_train: Annotated[int, typer.Option(help="Prompts per class from harmful_train / harmless_train.")] = D.n_train,
    n_val: Annotated[int, typer.Option(help="Prompts per class from harmful_val / harmless_val for selection.")] = D.n_val,
    layers: Annotated[Optional[str], typer.Option(help="Candidate layers, e.g. '4-20' or '6,10,14' (default: all).")] = None,
    positions: Annotated[Optional[str], typer.Option(help="Post-instruction positions, e.g. '-1' or '-3,-2,-1' (default: all).")] = None,
    max_kl: Annotated[float, typer.Option(help="Discard candidates whose ablation moves harmless outputs more (KL).")] = S.max_kl,
    min_induce: Annotated[float, typer.Option(help="Discard candidates whose addition induces less refusal.")] = S.min_induce,
    prune_layer_fraction: Annotated[float, typer.Option(help="Discard candidates in this last fraction of layers.")] = S.prune_layer_fraction,
    batch_size: Annotated[int, typer.Option(help="Prompts per forward batch.")] = S.batch_size,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = D.seed,
    massive_k: Annotated[int, typer.Option(help="Massive-activation (attention-sink) directions projected out of every candidate; 0 = Arditi et al. as is.")] = D.massive_k,
    massive_ratio: Annotated[float, typer.Option(help="A position is massive when its residual norm is at least this times the prompt's median.")] = D.massive_ratio,
    data_dir: DataDirOpt = None,
    harm_layers: Annotated[Optional[str], typer.Option(help="Also compare the t_inst harm direction with the refusal direction at these layers (e.g. '3-24:3').")] = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Refusal direction by difference in means, selected by bypass / induce / KL (Arditi et al.)."""
    from refusal_sae.direction.stage import run_direction_stage, run_harm_vs_refusal_stage, validate

    sel = SelectionConfig(prune_layer_fraction, max_kl, min_induce, int_list(layers), int_list(positions), batch_size)
    cfg = DirectionConfig(n_train, n_val, seed, massive_k=massive_k, massive_ratio=massive_ratio, selection=sel)
    harm = int_list(harm_layers) or ()
    handle = spec.load()
    validate(handle, cfg, harm)  # before any forward pass
    run = run_dir_for(spec, run_dir)
    res = run_direction_stage(handle, run, cfg, data_dir, force=force)
    c = res.chosen
    out.print(f"chosen: position {c.pos}, layer {c.layer}: bypass {c.bypass:.3f}, induce {c.induce:.3f}, "
              f"KL {c.kl:.4f} (median {c.kl_median:.4f}, max {c.kl_max:.3f})  → {run.root / 'direction'}")
    if res.kl_by_prompt:
        out.print("  harmless prompts it moves most (KL; clean → ablated most likely token):")
        for row in res.kl_by_prompt[:3]:
            out.print(f"    {row.kl:.3f}  {row.instruction[:60]!r}: {row.clean_top[0][0]!r} → {row.ablated_top[0][0]!r}")
    for s in sorted((s for s in res.candidates if s.kept), key=lambda s: s.bypass)[:5]:
        out.print(f"  pos {s.pos:3d} layer {s.layer:3d}  bypass {s.bypass:7.3f}  induce {s.induce:7.3f}  KL {s.kl:.4f}")
    chosen = res.to_json()["chosen"]
    summary = {"model": handle.name, "run_dir": str(run.root), **chosen,
               "harm_refusal_cosine_by_layer": res.harm_refusal_cosine_by_layer}
    if harm:
        hv = run_harm_vs_refusal_stage(handle, run, cfg, harm, data_dir)
        out.print(f"harm (t_inst) vs refusal (pos {hv.position}): baseline refusal score harmless "
                  f"{hv.baseline_harmless:.2f}, harmful {hv.baseline_harmful:.2f}")
        out.print("  layer  cos   add_refusal add_harm  ablate_refusal ablate_harm")
        for r in hv.rows:
            out.print(f"  {r.layer:5d} {r.cosine:5.2f} {r.add_refusal:11.2f} {r.add_harm:8.2f} "
                      f"{r.ablate_refusal:15.2f} {r.ablate_harm:11.2f}")
        summary["harm_vs_refusal"] = hv.to_json()["rows"]
    if as_json:
        print(json.dumps(summary))


@app.command("calibrate-actadd")
@model_options
def calibrate_actadd_cmd(
    spec: ModelSpec,
    run_dir: RunDirOpt = None,
    coeffs: Annotated[str, typer.Option(help="Activation-addition coefficients to try, e.g. '1,1.25,1.5,2'.")] = ",".join(f"{c:g}" for c in C.coeffs),
    dataset: Annotated[str, typer.Option(help="Harmless calibration prompts (never a test split).")] = C.dataset,
    n: Annotated[int, typer.Option(help="Prompts sampled from the dataset.")] = C.n,
    target: Annotated[float, typer.Option(help="Refusal rate the coefficient must reach.")] = C.target,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = C.seed,
    judge: Annotated[str, typer.Option(help="Judge of the generations (see `refusal-sae eval --help`).")] = C.judge,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The smallest activation-addition coefficient of the run's refusal direction that makes harmless prompts refused."""
    from refusal_sae.direction.calibrate import run_actadd_calibration

    cfg = CalibrationConfig(float_list(coeffs), dataset, n, seed, target, judge)
    cfg.validate(data_dir)  # before the model loads
    run = run_dir_for(spec, run_dir)
    res = run_actadd_calibration(spec.load(), run, cfg, data_dir)
    for c, r in zip(res.coeffs, res.refusal_rates, strict=True):
        out.print(f"  coefficient {c:g}: refused {r:.3f} of {res.n} {res.dataset} prompts")
    verdict = "reaches" if res.met else "no coefficient reaches"
    out.print(f"chosen coefficient {res.chosen:g} ({verdict} the target {res.target:g})  → {run.root / res.kind}")
    if as_json:
        print(json.dumps(res.to_json()))


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
