"""`harden`: stage 6, section 4 — hardening refusal by SAE feature steering against activation addition, with the
capability cost (jailbreak success vs over-refusal vs loss increase)."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from refusal_sae.analysis.harden_config import HardenConfig
from refusal_sae.cli.common import (
    BatchSizeOpt,
    DataDirOpt,
    ForceOpt,
    IdsOpt,
    JsonOpt,
    JudgeOpt,
    MaxNewTokensOpt,
    NBootOpt,
    ReleaseOpt,
    RunDirOpt,
    SaesOpt,
    SeedOpt,
    app,
    float_list,
    int_list,
    model_options,
    names,
    out,
    run_dir_for,
    sae_set,
)
from refusal_sae.models.options import ModelSpec

H = HardenConfig  # defaults live in the torch-free config


def _floats(text: str) -> tuple[float, ...]:
    return float_list(text) if text.strip() else ()


def _rate(r) -> str:
    return "-" if r is None else f"{r.k}/{r.n} {r.k / r.n:.2f} [{r.ci[0]:.2f}, {r.ci[1]:.2f}]"


@app.command("harden")
@model_options
def harden_cmd(
    spec: ModelSpec,
    run_dir: RunDirOpt = None,
    saes: SaesOpt = None,
    sae_release: ReleaseOpt = None,
    sae_ids: IdsOpt = None,
    features: Annotated[str, typer.Option(help="Refusal features to steer: minimal (the search's greedy minimal set) | global (its top K*).")] = H.features,
    multipliers: Annotated[str, typer.Option(help="Steering sweep: each feature raised to m × its mean activation on refused prompts, e.g. '1,2,4'.")] = ",".join(f"{m:g}" for m in H.multipliers),
    steer_mode: Annotated[str, typer.Option(help="floor: f' = max(f, m·μ) | set: f' = m·μ.")] = H.steer_mode,
    target_stat: Annotated[str, typer.Option(help="μ per refused prompt: max | mean of the code over the target positions.")] = H.target_stat,
    target_positions: Annotated[str, typer.Option(help="post_inst (the template tokens after the instruction) | content (every real token after the first).")] = H.target_positions,
    n_calib: Annotated[int, typer.Option(help="harmful_train prompts whose refused ones give μ.")] = H.n_calib,
    actadd_coeffs: Annotated[str, typer.Option(help="Activation-addition baseline: coefficients of the refusal direction, e.g. '0.25,0.5,1'.")] = ",".join(f"{c:g}" for c in H.actadd_coeffs),
    random_multipliers: Annotated[str, typer.Option(help="Random-feature control at these m ('' for none).")] = ",".join(f"{m:g}" for m in H.random_multipliers),
    n_random: Annotated[int, typer.Option(help="Random feature sets per random multiplier.")] = H.n_random,
    gate_layers: Annotated[Optional[str], typer.Option(help="Candidate SAE layers of the conditional gate (default: those before the first steered layer).")] = None,
    gate_sizes: Annotated[str, typer.Option(help="Harm features per gate candidate, e.g. '1,3,5,10'.")] = ",".join(map(str, H.gate_sizes)),
    n_gate: Annotated[int, typer.Option(help="Prompts per class choosing the gate (training) and checking it (validation).")] = H.n_gate,
    datasets: Annotated[str, typer.Option(help="Held-out harmful sets wrapped in jailbreak templates, comma-separated.")] = ",".join(H.jailbreak_datasets),
    n_jailbreak: Annotated[int, typer.Option(help="Held-out instructions sampled for the jailbreak prompts (and the attack).")] = H.n_jailbreak,
    families: Annotated[Optional[str], typer.Option(help="Jailbreak families, comma-separated (default: all).")] = None,
    attack: Annotated[str, typer.Option(help="prefill: the assistant turn starts with --prefill (an attack that works on small models) | none.")] = H.attack,
    prefill: Annotated[str, typer.Option(help="Forced start of the answer for the prefill attack.")] = H.prefill,
    n_xstest: Annotated[int, typer.Option(help="XSTest safe prompts (over-refusal).")] = H.n_xstest,
    n_harmless: Annotated[int, typer.Option(help="harmless_test prompts (over-refusal and the loss increase).")] = H.n_harmless,
    max_new_tokens: MaxNewTokensOpt = H.max_new_tokens,
    batch_size: BatchSizeOpt = H.batch_size,
    n_boot: NBootOpt = H.n_boot,
    judge: JudgeOpt = H.judge,
    seed: SeedOpt = H.seed,
    data_dir: DataDirOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Harden refusal by steering the search's refusal features up (unconditionally, and gated on an upstream harm
    feature) against activation addition of the refusal direction: jailbreak success, over-refusal and loss increase
    on held-out prompts, with random-feature controls and paired tests."""
    from refusal_sae.analysis.harden import HardenPrompts, run_harden_stage

    cfg = HardenConfig(features=features, multipliers=_floats(multipliers), steer_mode=steer_mode,
                       target_stat=target_stat, target_positions=target_positions, n_calib=n_calib,
                       actadd_coeffs=_floats(actadd_coeffs),
                       random_multipliers=_floats(random_multipliers), n_random=n_random,
                       gate_layers=int_list(gate_layers), gate_sizes=int_list(gate_sizes) or (), n_gate=n_gate,
                       jailbreak_datasets=names(datasets) or (),
                       n_jailbreak=n_jailbreak,
                       families=names(families),
                       attack=attack, prefill=prefill, n_xstest=n_xstest, n_harmless=n_harmless,
                       max_new_tokens=max_new_tokens, batch_size=batch_size, n_boot=n_boot, judge=judge, seed=seed)
    cfg.validate()  # before the model loads
    run = run_dir_for(spec, run_dir)
    prompts = HardenPrompts.load(cfg, data_dir)  # unknown or empty datasets fail here, before the model loads
    handle = spec.load()
    res = run_harden_stage(handle, sae_set(handle, run, saes, sae_release, sae_ids), run, cfg, data_dir, force=force,
                           prompts=prompts)

    from rich.table import Table

    g = res.gate
    out.print(f"steered: {res.features_source} set, {len(res.features)} features "
              f"({', '.join(f'L{L}:{f}' for L, f in res.features)}); μ = {res.target_stat} code over the "
              f"{res.target_positions} positions of {res.n_calib_refused}/{res.n_calib} refused harmful_train prompts "
              f"({res.zero_targets} features with μ = 0); mode {res.steer_mode}")
    out.print(f"gate: layer {g.layer} ({'upstream' if g.upstream else 'not upstream'} of the steered layers), harm "
              f"features {g.features}, threshold {g.threshold:.3g}; train TPR {g.train_tpr:.2f} FPR {g.train_fpr:.2f}; "
              f"validation TPR {g.val_tpr:.2f} (wrapped {g.val_tpr_wrapped:.2f}) FPR {g.val_fpr:.2f}")
    t = Table(title=f"held out: {res.sizes['jailbreak']} {'+'.join(res.datasets)} instructions (jailbreak-wrapped"
                    f"{', and plain under the ' + res.attack + ' attack' if res.attack != 'none' else ''}), "
                    f"{res.sizes['xstest']} XSTest safe, {res.sizes['harmless']} harmless_test")
    for col in ("point", "jailbreak complied", f"{res.attack} attack complied", "XSTest refused", "harmless refused",
                "Δloss nats/tok [95% CI]", "KL", "gate fired (jb/attack/xs/harmless)"):
        t.add_column(col)
    for p in res.points:
        gate_txt = "-" if p.gated is None else "/".join(f"{r.k}" for r in p.gated.values())
        t.add_row(p.name, _rate(p.jailbreak), _rate(p.attack), _rate(p.xstest_refused), _rate(p.harmless_refused),
                  f"{p.loss_increase:.3f} [{p.loss_ci[0]:.3f}, {p.loss_ci[1]:.3f}]", f"{p.kl:.3f}", gate_txt)
    out.print(t)
    for m in res.matched:
        if m.actadd_coeff is None:
            out.print(f"  {m.point}: XSTest over-refusal {m.over_refusal:.2f} lies beyond the activation-addition sweep")
        else:
            att = "" if m.attack is None else f", attack {m.attack:.2f} vs {m.actadd_attack:.2f}"
            out.print(f"  {m.point} vs actadd c≈{m.actadd_coeff:.2f} at XSTest over-refusal {m.over_refusal:.2f}: "
                      f"jailbreak {m.jailbreak:.2f} vs {m.actadd_jailbreak:.2f}{att}, Δloss {m.loss_increase:.3f} vs "
                      f"{m.actadd_loss_increase:.3f}")
    pt = Table(title="paired on the same prompts (McNemar exact): complied for jailbreak / attack, refused for XSTest / "
                     "harmless")
    for col in ("a", "b", "group", "a", "b", "only a", "only b", "p"):
        pt.add_column(col)
    for r in res.paired:
        pt.add_row(r.a, r.b, r.group, f"{r.count_a}/{r.n}", f"{r.count_b}/{r.n}", str(r.only_a), str(r.only_b),
                   f"{r.p_value:.3g}")
    out.print(pt)
    out.print(f"results in {run.root / 'analysis/harden'}")
    if as_json:
        print(json.dumps(res.to_json()))
