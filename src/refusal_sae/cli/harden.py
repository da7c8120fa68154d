"""`harden`: stage 6, section 4 — hardening refusal by SAE feature steering against activation addition, with the
capability cost (jailbreak success vs over-refusal vs loss increase)."""

from __future__ import annotations

from refusal_sae.analysis.config import HardenConfig
from refusal_sae.cli.common import (
    app,
    out,
)
from refusal_sae.cli.options import Command, stage_command


def _rate(r) -> str:
    return "-" if r is None else f"{r.k}/{r.n} {r.k / r.n:.2f} [{r.ci[0]:.2f}, {r.ci[1]:.2f}]"


@app.command("harden")
@stage_command(HardenConfig, saes=True, force=True, aliases={"jailbreak_datasets": ["--datasets"]})
def harden_cmd(
    cfg: HardenConfig,
    cmd: Command,
) -> None:
    """Harden refusal by steering the search's refusal features up (unconditionally, and gated on an upstream harm
    feature) against activation addition of the refusal direction: jailbreak success, over-refusal and loss increase
    on held-out prompts, with random-feature controls and paired tests."""
    from refusal_sae.analysis.harden import HardenPrompts, run_harden_stage

    cfg.validate()  # before the model loads
    run = cmd.run
    prompts = HardenPrompts.load(cfg, cmd.data_dir)  # unknown or empty datasets fail here, before the model loads
    handle = cmd.load()
    res = run_harden_stage(handle, cmd.saes(handle), run, cfg, cmd.data_dir, force=cmd.force,
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
    cmd.emit(res.to_json())
