"""`direction` and `orthogonalize`: stage 1 (refusal direction) and its weight export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from refusal_sae.cli.common import (
    DataDirOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    ModelOpt,
    OfflineOpt,
    RunDirOpt,
    TrustOpt,
    app,
    default_run_dir,
    int_list,
    load_direction,
    load_handle,
    out,
)


def _kl_tail(c: dict) -> str:
    if c.get("kl_median") is None:  # results saved before the median was recorded
        return ""
    return f" (median {c['kl_median']:.4f}, max {c['kl_max']:.3f})"


@app.command("direction")
def direction_cmd(
    model: ModelOpt = None,
    run_dir: RunDirOpt = None,
    n_train: Annotated[int, typer.Option(help="Prompts per class from harmful_train / harmless_train.")] = 128,
    n_val: Annotated[int, typer.Option(help="Prompts per class from harmful_val / harmless_val for selection.")] = 32,
    layers: Annotated[Optional[str], typer.Option(help="Candidate layers, e.g. '4-20' or '6,10,14' (default: all).")] = None,
    positions: Annotated[Optional[str], typer.Option(help="Post-instruction positions, e.g. '-1' or '-3,-2,-1' (default: all).")] = None,
    max_kl: Annotated[float, typer.Option(help="Discard candidates whose ablation moves harmless outputs more (KL).")] = 0.1,
    min_induce: Annotated[float, typer.Option(help="Discard candidates whose addition induces less refusal.")] = 0.0,
    prune_layer_fraction: Annotated[float, typer.Option(help="Discard candidates in this last fraction of layers.")] = 0.2,
    batch_size: Annotated[int, typer.Option(help="Prompts per forward batch.")] = 32,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    massive_k: Annotated[int, typer.Option(help="Massive-activation (attention-sink) directions projected out of every candidate; 0 = Arditi et al. as is.")] = 4,
    massive_ratio: Annotated[float, typer.Option(help="A position is massive when its residual norm is at least this times the prompt's median.")] = 5.0,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    trust_remote_code: TrustOpt = False,
    offline: OfflineOpt = False,
    harm_layers: Annotated[Optional[str], typer.Option(help="Also compare the t_inst harm direction with the refusal direction at these layers (e.g. '3-24:3').")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Refusal direction by difference in means, selected by bypass / induce / KL (Arditi et al.)."""
    from refusal_sae.direction.select import SelectionConfig
    from refusal_sae.direction.stage import DirectionConfig, run_direction_stage
    from refusal_sae.runs import RunDir

    sel = SelectionConfig(prune_layer_fraction, max_kl, min_induce, int_list(layers), int_list(positions), batch_size)
    cfg = DirectionConfig(n_train, n_val, seed, massive_k=massive_k, massive_ratio=massive_ratio, selection=sel)
    handle = load_handle(model, device, dtype, trust_remote_code, offline)
    run = RunDir(run_dir or default_run_dir(model))
    res = run_direction_stage(handle, run, cfg, data_dir)
    c = res.info["chosen"]
    out.print(f"chosen: position {c['pos']}, layer {c['layer']}: bypass {c['bypass']:.3f}, induce {c['induce']:.3f}, "
              f"KL {c['kl']:.4f}{_kl_tail(c)}  → {run.root / 'direction'}")
    if res.info.get("kl_by_prompt"):
        out.print("  harmless prompts it moves most (KL; clean → ablated most likely token):")
        for row in res.info["kl_by_prompt"][:3]:
            out.print(f"    {row['kl']:.3f}  {row['instruction'][:60]!r}: {row['clean_top'][0][0]!r} → {row['ablated_top'][0][0]!r}")
    kept = sorted((s for s in res.info["candidates"] if s["kept"]), key=lambda s: s["bypass"])[:5]
    for s in kept:
        out.print(f"  pos {s['pos']:3d} layer {s['layer']:3d}  bypass {s['bypass']:7.3f}  induce {s['induce']:7.3f}  KL {s['kl']:.4f}")
    summary = {"model": handle.name, "run_dir": str(run.root), **c,
               "harm_refusal_cosine_by_layer": res.info["harm_refusal_cosine_by_layer"]}
    if harm_layers:
        from refusal_sae.direction.stage import run_harm_vs_refusal_stage

        hv = run_harm_vs_refusal_stage(handle, run, cfg, int_list(harm_layers) or (), data_dir)
        out.print(f"harm (t_inst) vs refusal (pos {hv['position']}): baseline refusal score harmless "
                  f"{hv['baseline_harmless']:.2f}, harmful {hv['baseline_harmful']:.2f}")
        out.print("  layer  cos   add_refusal add_harm  ablate_refusal ablate_harm")
        for r in hv["rows"]:
            out.print(f"  {r['layer']:5d} {r['cosine']:5.2f} {r['add_refusal']:11.2f} {r['add_harm']:8.2f} "
                      f"{r['ablate_refusal']:15.2f} {r['ablate_harm']:11.2f}")
        summary["harm_vs_refusal"] = hv["rows"]
    if as_json:
        print(json.dumps(summary))


@app.command("orthogonalize")
def orthogonalize_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Where to write the edited HF model directory.")],
    model: ModelOpt = None,
    run_dir: RunDirOpt = None,
    allow_approximate: Annotated[bool, typer.Option(help="Allow families with post-norms (Gemma-2/3), where the edit is approximate.")] = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    trust_remote_code: TrustOpt = False,
    offline: OfflineOpt = False,
) -> None:
    """Bake the run's refusal-direction ablation into the weights and export an HF model directory."""
    from refusal_sae.interventions import export_model, orthogonalize_

    handle = load_handle(model, device, dtype, trust_remote_code, offline)
    d = load_direction(run_dir or default_run_dir(model))
    orthogonalize_(handle, d.direction, allow_approximate)
    path = export_model(handle, out_dir)
    out.print(f"orthogonalised model written to {path} (load it with --model {path})")
