"""What the stage-5 commands print: each analysis result as rich tables on the console (the report draws the same
results as HTML). Kept beside the results so the CLI only parses and calls."""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console


def _ci(ci) -> str:
    return "-" if ci is None or any(x is None or (isinstance(x, float) and math.isnan(x)) for x in ci) \
        else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def _num(x, fmt: str = ".2f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def show_jailbreaks(res, out: Console, run, cfg) -> None:
    from rich.table import Table

    what = (f"{res.n_instructions} held-out instructions the model refuses ({res.n_plain_refused} of {res.n_plain} "
            f"answered)" if res.mode == "wrap" else f"{len(res.rows)} prompts of {res.sources[0]}")
    t = Table(title=f"jailbreak families: {what}")
    for col in ("family", "n", "complied [95% CI]", "degenerate", "refused", "not refused [95% CI]",
                "vs neutral control, complied (only family / only control, McNemar p)", "… not refused"):
        t.add_column(col)
    for r in [*res.table, *([res.control] if res.control else [])]:
        vs = "-" if r.p_value is None else f"{r.only_family} / {r.only_control}, p = {r.p_value:.3g}"
        nr = "-" if r.nr_p_value is None else f"{r.nr_only_family} / {r.nr_only_control}, p = {r.nr_p_value:.3g}"
        t.add_row(r.family, str(r.n), f"{r.complied}/{r.n} {_ci(r.complied_ci)}", str(r.degenerate), str(r.refused),
                  f"{r.n - r.refused}/{r.n} {_ci(r.not_refused_ci)}", vs, nr)
    out.print(t)
    out.print(f"pairs (plain refused → wrapped): {res.pair_counts}; results in {run.root / cfg.stage}")


def show_upstream(res, out: Console, run) -> None:
    from rich.table import Table

    out.print(f"refusal features ({len(res.refusal_features)}, in ≥ {res.threshold:.0%} of the per-prompt sets of "
              f"{res.n_train} refused training prompts; X chosen on {res.n_val} validation prompts): "
              + ", ".join(f"L{L}:{f}" for L, f in res.refusal_features))
    t = Table(title=f"relative drop of feature activations (upstream clamp ×{res.clamp:g} from its position; refusal "
                    f"features over the last {res.last} tokens); 95% CIs resample instructions")
    for col in ("pairs", "n (instr.)", "harm features, plain→wrapped", "refusal features, plain→wrapped",
                "refusal, upstream clamped", "refusal, random clamped", "refusal score plain / clamped / random"):
        t.add_column(col)
    for r in res.table:
        t.add_row(r.group, f"{r.n_pairs} ({r.n_instructions})", f"{_num(r.harm_drop)} {_ci(r.harm_ci)}",
                  f"{_num(r.refusal_drop)} {_ci(r.refusal_ci)}", f"{_num(r.ablation_drop)} {_ci(r.ablation_ci)}",
                  f"{_num(r.random_drop)} {_ci(r.random_ci)}",
                  f"{_num(r.score_plain)} / {_num(r.score_ablated)} / {_num(r.score_random)}")
    out.print(t)
    for m, d in res.difference.items():
        out.print(f"  jailbroken − failed, {m}: {_num(d['diff'])} {_ci(d['ci'])} "
                  f"({d['n_jailbroken']} vs {d['n_failed']} pairs)")
    out.print("most suppressing wrapper tokens per family (mean gradient × input per occurrence; negative = lowers the "
              "refusal features):")
    for ft in res.tokens:
        toks = ", ".join(f"{s.token!r} {s.mean:+.3f}×{s.count}" for s in ft.top[:5])
        out.print(f"  {ft.family}: wrapper {ft.wrapper:+.3f}, instruction {ft.payload:+.3f}, template "
                  f"{ft.template:+.3f} per prompt; {toks}")
    for note in res.notes:
        out.print(f"  note: {note}")
    if res.skipped and any(res.skipped.values()):
        out.print(f"  instructions skipped: {res.skipped}")
    out.print(f"results in {run.root / 'analysis/upstream'}")


def show_probes(res, out: Console, run) -> None:
    from rich.table import Table

    for test, title in (("in_distribution", "in distribution (held-out plain prompts)"),
                        ("ood", f"out of distribution ({res.ood_source})")):
        c = res.counts[test]
        t = Table(title=f"{title}: {c['positive']} refused vs {c['negative']} not refused")
        for col in ("probe", "features", "C", "val acc", "accuracy [95% CI]", "AUC [95% CI]", "accuracy by group"):
            t.add_column(col)
        for r in (r for r in res.rows if r.test == test):
            name = r.probe + (f" (layer {r.layer})" if r.layer is not None else "")
            groups = ", ".join(f"{g} {a:.2f}" for g, a in r.group_accuracy.items())
            t.add_row(name, str(r.n_features), f"{r.C:g}", f"{r.val_accuracy:.2f}", f"{r.accuracy:.3f} {_ci(r.accuracy_ci)}",
                      f"{_num(r.auc, '.3f')} {_ci(r.auc_ci)}", groups)
        out.print(t)
        for g in (g for g in res.gains if g.test == test):
            out.print(f"  {g.a} − {g.b}: accuracy {g.accuracy_diff:+.3f} {_ci(g.accuracy_ci)}, AUC "
                      f"{_num(g.auc_diff, '+.3f')} {_ci(g.auc_ci)}")
    out.print(f"dense layer {res.dense_layer} chosen on validation (of {len(res.dense_layers)}); labels: {res.labels}")
    for name, why in res.skipped.items():
        out.print(f"  skipped {name}: {why}")
    out.print(f"results in {Path(run.root) / 'analysis/probes'}")


def _rate(r) -> str:
    return "-" if r is None else f"{r.k}/{r.n} {r.k / r.n:.2f} [{r.ci[0]:.2f}, {r.ci[1]:.2f}]"


def show_harden(res, out: Console, run) -> None:
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
