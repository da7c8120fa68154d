"""The report's hardening section: the hardening curve of steering the refusal features up (unconditionally, and
gated on an upstream harm feature) against activation addition of the refusal direction — attack success vs
over-refusal vs loss increase — with 95% Wilson intervals, the unsteered model and random feature sets as controls,
activation addition at matched over-refusal, and paired McNemar tests.

Reads ``analysis/harden`` (:class:`~refusal_sae.analysis.harden.HardeningResult`).
"""

from __future__ import annotations

from refusal_sae.report.markup import bars, ci, esc, feature_list, num, rate, share, table
from refusal_sae.report.records import HardenSizes, typed
from refusal_sae.report.render import ReportContext, ResultView, SectionSpec, register_section
from refusal_sae.report.summary import Finding

KIND = "analysis_harden"
STYLE = {"none": ("#24292f", "star", "unsteered (control)"), "steer": ("#cf222e", "circle", "feature steering"),
         "conditional": ("#8250df", "diamond", "conditional steering (gated)"),
         "actadd": ("#0969da", "square", "activation addition"), "random": ("#8c959f", "x", "random features (control)")}
CURVES = ("steer", "conditional", "actadd")  # the methods drawn as lines (the others are controls)


def _success(p):
    """The attack success drawn: the attack's complied rate when there is an attack, else the jailbreak prompts'."""
    return p.attack or p.jailbreak


def _rate(r) -> str:
    return rate(r.k, r.n, r.ci) if r is not None else "–"


def _curve(points: list, ctx: ReportContext, x_of, x_ci, x_title: str, title: str, y_title: str) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    for method, (color, symbol, name) in STYLE.items():
        pts = sorted((p for p in points if p.method == method), key=lambda p: p.value)
        if not pts:
            continue
        xs, ys = [x_of(p) for p in pts], [share(_success(p).k, _success(p).n) for p in pts]
        labels = [p.name.split(" #")[0].replace("steer ", "").replace("conditional ", "").replace("actadd ", "")
                  for p in pts]
        fig.add_trace(go.Scatter(
            x=xs, y=ys, name=name, mode="lines+markers+text" if method in CURVES else "markers+text",
            text=labels if method != "none" else ["none"], textposition="top center", textfont=dict(size=9),
            cliponaxis=False, line=dict(color=color), marker=dict(symbol=symbol, size=11, color=color),
            error_x=bars(xs, [x_ci(p) for p in pts], 1), error_y=bars(ys, [_success(p).ci for p in pts], 1),
            hovertemplate="%{text}<br>x %{x:.3f}<br>success %{y:.2f}<extra>" + name + "</extra>"))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, yaxis_range=[-0.05, 1.1],
                      legend=dict(orientation="h", y=-0.25))
    return ctx.figure(fig, height=400)


def _points_table(d) -> str:
    head = ["point", "jailbreak-wrapped complied", f"{d.attack} attack complied", "XSTest safe refused",
            "harmless_test refused", "Δloss nats/token [95% CI]", "KL/token", "gate fired (jb / attack / xs / harmless)"]
    body = [[("<b>" if p.method == "none" else "") + esc(p.name), _rate(p.jailbreak), _rate(p.attack),
             _rate(p.xstest_refused), _rate(p.harmless_refused), f"{num(p.loss_increase)} {ci(p.loss_ci, '.3f')}",
             num(p.kl), " / ".join(f"{r.k}/{r.n}" for r in p.gated.values()) if p.gated else "–"] for p in d.points]
    return table(head, body, num_from=1, num_to=7)


def _matched(d) -> str:
    body = []
    for m in d.matched:
        if m.actadd_coeff is None:
            body.append([esc(m.point), num(m.over_refusal, ".2f"), "beyond the activation-addition sweep", "–", "–", "–"])
            continue
        body.append([esc(m.point), num(m.over_refusal, ".2f"), f"c ≈ {m.actadd_coeff:.2f}",
                     f"{num(m.jailbreak, '.2f')} vs {num(m.actadd_jailbreak, '.2f')}",
                     f"{num(m.attack, '.2f')} vs {num(m.actadd_attack, '.2f')}",
                     f"{num(m.loss_increase)} vs {num(m.actadd_loss_increase)}"])
    return ("<h4>Steering vs activation addition at the same XSTest over-refusal (interpolated along the sweep)</h4>"
            + table(["point", "XSTest refused", "actadd at", "jailbreak: point vs actadd", "attack: point vs actadd",
                     "Δloss: point vs actadd"], body, num_from=1))


def _paired(d) -> str:
    body = [[esc(r.a), esc(r.b), esc(r.group), esc(r.label), str(r.n), str(r.count_a), str(r.count_b), str(r.only_a),
             str(r.only_b), num(r.p_value, ".3g")] for r in d.paired]
    return (f"<details><summary>paired on the same prompts ({len(body)} McNemar exact tests)</summary>"
            + table(["a", "b", "group", "counted", "n", "a", "b", "only a", "only b", "p"], body, num_from=4)
            + "</details>")


def _gate(d) -> str:
    g = d.gate
    cands = [[str(c.layer), esc(", ".join(map(str, c.features))), num(c.threshold, ".3g"), num(c.train_tpr, ".2f"),
              num(c.train_fpr, ".2f")] for c in g.candidates]
    return (f"<p class='note'>Gate: layer {g.layer} ({'upstream of' if g.upstream else 'not upstream of'} the "
            f"steered layers), harm features {esc(g.features)}, threshold {num(g.threshold, '.3g')}; training "
            f"TPR {num(g.train_tpr, '.2f')} / FPR {num(g.train_fpr, '.2f')} ({g.n_train[0]} vs {g.n_train[1]} prompts); "
            f"validation TPR {num(g.val_tpr, '.2f')} (wrapped {num(g.val_tpr_wrapped, '.2f')}) / FPR "
            f"{num(g.val_fpr, '.2f')}. {esc(g.rule)}.</p><details><summary>gate candidates ({len(cands)})</summary>"
            + table(["layer", "features", "threshold", "train TPR", "train FPR"], cands, num_from=2) + "</details>")


def _lead(d) -> str:
    s, attack = typed(HardenSizes, d.sizes), d.attack != "none"
    return (f"Steered: the search's <b>{esc(d.features_source)}</b> set ({len(d.features)} features: "
            f"{esc(feature_list(d.features))}), each raised to m × μ ({esc(d.steer_mode)} mode; μ = the "
            f"{esc(d.target_stat)} code over the {esc(d.target_positions)} positions of the {d.n_calib_refused} "
            f"of {d.n_calib} harmful_train prompts the model refuses; {d.zero_targets} with μ = 0), at every "
            f"position; conditional steering applies it only where the gate fires. Baseline: activation addition of the "
            f"refusal direction at layer {d.actadd_layer}. Held out: {s.jailbreak} "
            f"{esc(' + '.join(d.datasets))} instructions wrapped in jailbreak templates"
            + (f" and the same {s.attack} plain under the {esc(d.attack)} attack (the answer forced to start "
               f"\"{esc(d.prefill)}\")" if attack else "")
            + f"; over-refusal on {s.xstest} XSTest safe and {s.harmless} harmless_test prompts; loss increase on "
            f"the unsteered model's own answers to the harmless prompts ({esc(d.loss_definition)}).")


def render_hardening(views: list[ResultView], ctx: ReportContext) -> str:
    d = views[0].result
    what = f"{d.attack} attack" if d.attack != "none" else "jailbreak"
    figs = (_curve(d.points, ctx, lambda p: share(p.xstest_refused.k, p.xstest_refused.n), lambda p: p.xstest_refused.ci,
                   "over-refusal: XSTest safe refused", f"hardening curve: {what} success vs over-refusal (95% Wilson CIs)",
                   f"{what} complied")
            + _curve(d.points, ctx, lambda p: p.loss_increase, lambda p: p.loss_ci,
                     "loss increase on harmless answers (nats/token, 95% bootstrap CI)",
                     f"{what} success vs capability cost", f"{what} complied"))
    return (f"<p class='lead'>{_lead(d)}</p><div class='grid'>{figs}</div>" + _points_table(d) + _matched(d) + _gate(d)
            + _paired(d))


def summarize_hardening(views: list[ResultView], ctx: ReportContext) -> list[Finding]:
    """The strongest point of each curve: attack success and over-refusal, beside the unsteered model (and random
    features at the same multiplier)."""
    d = views[0].result
    what = f"{d.attack} attack" if d.attack != "none" else "jailbreak"
    base = next((p for p in d.points if p.method == "none"), None)
    control = (f"unsteered: success {_rate(_success(base))}, XSTest refused {_rate(base.xstest_refused)}"
               if base is not None else "–")
    out = []
    for method in CURVES:
        pts = [p for p in d.points if p.method == method]
        if not pts:
            continue
        p = max(pts, key=lambda p: p.value)
        rnd = [r for r in d.points if r.method == "random" and r.value == p.value] if method != "actadd" else []
        beside = "".join(f"; {esc(r.name)}: success {_rate(_success(r))}" for r in rnd)
        out.append(Finding(f"{esc(p.name)}: {what} success · XSTest safe refused · Δloss",
                           f"{_rate(_success(p))} · {_rate(p.xstest_refused)} · {num(p.loss_increase)}",
                           control + beside))
    return out


register_section(SectionSpec("hardening", "Hardening curve", (KIND,), "harden", render_hardening, summarize_hardening))
