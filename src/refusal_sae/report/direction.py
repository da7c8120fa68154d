"""The report's refusal-direction section (:class:`~refusal_sae.direction.result.DirectionResult`: heatmaps of every
candidate's bypass / induce / KL, the harm-vs-refusal comparison, the harmless prompts the ablation moves most) and
the activation-addition calibration (:class:`~refusal_sae.direction.calibrate.ActAddCalibration`)."""

from __future__ import annotations

import math

from refusal_sae.report.markup import STAR, esc, num, rate, table
from refusal_sae.report.render import ReportContext, ResultView, SectionSpec, register_section
from refusal_sae.report.summary import Finding


def _heatmap(ctx: ReportContext, cands: list, key: str, title: str, chosen, log: bool = False,
             reverse: bool = False) -> str:
    import plotly.graph_objects as go

    layers = sorted({c.layer for c in cands})
    positions = sorted({c.pos for c in cands})
    at = {(c.layer, c.pos): c for c in cands}
    z, text = [], []
    for p in positions:
        zr, tr = [], []
        for L in layers:
            c = at.get((L, p))
            v = None if c is None else getattr(c, key)
            if v is not None and log:
                v = math.log10(max(v, 1e-6))
            zr.append(None if v is None or math.isnan(v) else v)
            tr.append("" if c is None else (
                f"layer {L}, pos {p}<br>bypass {num(c.bypass)} induce {num(c.induce)} KL {num(c.kl, '.4f')}"
                + ("" if c.kept else f"<br>filtered: {esc(c.reason)}")))
        z.append(zr)
        text.append(tr)
    fig = go.Figure(go.Heatmap(z=z, x=layers, y=[str(p) for p in positions], text=text, hoverinfo="text",
                               colorscale="RdBu" if not log else "Viridis", reversescale=reverse,
                               colorbar=dict(title="log10 KL" if log else key, thickness=12)))
    rejected = [c for c in cands if not c.kept]
    if rejected:
        fig.add_trace(go.Scatter(x=[c.layer for c in rejected], y=[str(c.pos) for c in rejected], mode="markers",
                                 marker=dict(symbol="x-thin", size=6, line=dict(width=1, color="rgba(0,0,0,0.45)")),
                                 name="filtered", hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=[chosen.layer], y=[str(chosen.pos)], mode="markers", name="chosen", marker=STAR,
                             hoverinfo="skip"))
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title="position", showlegend=False)
    return ctx.figure(fig, height=320)


def _chosen(v: ResultView, ctx: ReportContext) -> str:
    d, c, sel = v.result, v.result.chosen, v.settings.selection
    cands = d.candidates

    def unknown(x):
        return "?" if x is None else f"{x:g}"

    return (f"<p class='lead'>Chosen: <b>position {c.pos}, layer {c.layer}</b> — bypass {num(c.bypass)} (mean "
            f"refusal score of harmful prompts with it ablated), induce {num(c.induce)} (harmless prompts with it "
            f"added), KL {num(c.kl, '.4f')} (median {num(c.kl_median, '.4f')}, max {num(c.kl_max)}). "
            f"{d.n_train[0]} + {d.n_train[1]} training prompts, {d.n_val[0]} + {d.n_val[1]} validation prompts; "
            f"{d.massive_directions_removed} massive-activation directions projected out; filters: KL ≤ "
            f"{unknown(sel.max_kl)}, induce ≥ {unknown(sel.min_induce)}, last {unknown(sel.prune_layer_fraction)} of "
            "layers pruned.</p><div class='grid3'>"
            + _heatmap(ctx, cands, "bypass", "bypass (lower = better)", c)
            + _heatmap(ctx, cands, "induce", "induce (higher = better)", c, reverse=True)
            + _heatmap(ctx, cands, "kl", "KL on harmless prompts", c, log=True)
            + "</div><p class='note'>Each cell is one candidate (difference in means at that layer and post-instruction "
              "position), scored on the validation prompts; × marks candidates the filters discarded, ★ the chosen "
              "one. Hover for values.</p>")


def _harm_vs_refusal(d, hv, ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    cos = d.harm_refusal_cosine_by_layer if d is not None else None
    figs = []
    if cos or hv is not None:
        fig = go.Figure()
        if cos:
            fig.add_trace(go.Scatter(x=list(range(len(cos))), y=cos, mode="lines+markers", name="cos(harm_L, refusal)"))
        if hv is not None:
            fig.add_trace(go.Scatter(x=[r.layer for r in hv.rows], y=[r.cosine for r in hv.rows], mode="markers",
                                     marker=dict(size=11, symbol="circle-open", line=dict(width=2)),
                                     name="layers compared causally"))
        fig.update_layout(title="harm direction (t_inst) vs refusal direction: cosine by layer", xaxis_title="layer",
                          yaxis_title="cosine", yaxis_range=[-1, 1], legend=dict(orientation="h", y=-0.25))
        figs.append(ctx.figure(fig, height=340))
    if hv is not None:
        x = [r.layer for r in hv.rows]
        fig = go.Figure()
        lines = (("add_refusal", "harmless + refusal dir.", "solid"), ("add_harm", "harmless + harm dir.", "dot"),
                 ("ablate_refusal", "harmful − refusal dir.", "solid"), ("ablate_harm", "harmful − harm dir.", "dot"))
        for key, name, dash in lines:
            fig.add_trace(go.Scatter(x=x, y=[getattr(r, key) for r in hv.rows], mode="lines+markers", name=name,
                                     line=dict(dash=dash)))
        fig.add_hline(y=hv.baseline_harmless, line_dash="dash", line_color="#888",
                      annotation_text="harmless baseline", annotation_position="bottom right")
        fig.add_hline(y=hv.baseline_harmful, line_dash="dash", line_color="#444",
                      annotation_text="harmful baseline", annotation_position="top right")
        fig.update_layout(title=f"causal: refusal score with each direction added / ablated (position {hv.position})",
                          xaxis_title="layer", yaxis_title="mean refusal score", legend=dict(orientation="h", y=-0.25))
        figs.append(ctx.figure(fig, height=340))
    return "<h3>Harm vs refusal</h3><div class='grid'>" + "".join(figs) + "</div>" if figs else ""


def render_direction(views: list[ResultView], ctx: ReportContext) -> str:
    dv = next((v for v in views if v.kind == "direction"), None)
    d, hv = (dv.result if dv is not None else None), ctx.one("harm_vs_refusal")
    out = [_chosen(dv, ctx) if dv is not None else "", _harm_vs_refusal(d, hv, ctx)]
    if d is not None and d.kl_by_prompt:
        rows = [[esc(r.instruction[:120]), num(r.kl), esc(repr(r.clean_top[0][0])) + " → " + esc(repr(r.ablated_top[0][0]))]
                for r in d.kl_by_prompt[:5]]
        out.append("<h3>Harmless prompts the ablation moves most</h3>"
                   + table(["prompt", "KL", "most likely first token: clean → ablated"], rows, num_from=1, num_to=2))
    return "".join(out)


def summarize_direction(views: list[ResultView], ctx: ReportContext) -> list[Finding]:
    d, hv = ctx.one("direction"), ctx.one("harm_vs_refusal")
    out = []
    if d is not None:
        c = d.chosen
        kept = sum(x.kept for x in d.candidates)
        control = (f"no intervention: harmful {hv.baseline_harmful:.2f}, harmless {hv.baseline_harmless:.2f} (mean "
                   "refusal score)" if hv is not None else f"{kept} of {len(d.candidates)} candidates passed the filters")
        out.append(Finding(f"chosen direction: layer {c.layer}, position {c.pos} (validation)",
                           f"bypass {num(c.bypass, '.2f')} · induce {num(c.induce, '.2f')} · KL {num(c.kl, '.4f')}",
                           control))
    if hv is not None and hv.rows:  # at the direction's layer where it was compared, else the least aligned layer
        r = next((r for r in hv.rows if d is not None and r.layer == d.layer), min(hv.rows, key=lambda r: r.cosine))
        out.append(Finding(f"harm vs refusal direction, layer {r.layer}",
                           f"cosine {r.cosine:.2f}; harmful − refusal dir. {r.ablate_refusal:.2f} vs − harm dir. "
                           f"{r.ablate_harm:.2f}", f"harmful baseline {hv.baseline_harmful:.2f} (mean refusal score)"))
    return out


# --- activation-addition calibration ------------------------------------------------------------------------------
def render_calibration(views: list[ResultView], ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    d = views[0].result
    fig = go.Figure(go.Scatter(x=d.coeffs, y=d.refusal_rates, mode="lines+markers", name="refusal rate"))
    fig.add_hline(y=d.target, line_dash="dash", annotation_text=f"target {d.target:.2f}")
    fig.add_trace(go.Scatter(x=[d.chosen], y=[d.refusal_rates[d.coeffs.index(d.chosen)]], mode="markers", marker=STAR,
                             name="chosen"))
    fig.update_layout(title=f"{d.dataset} (n={d.n}): refusal rate with the direction added at layer {d.layer}",
                      xaxis_title="coefficient", yaxis_title="refusal rate", yaxis_range=[0, 1.05], showlegend=False)
    met = "reaches" if d.met else "does not reach (largest tried)"
    return (f"<p class='lead'>Chosen coefficient <b>×{d.chosen:g}</b>: the smallest that {met} the target on "
            f"{esc(d.dataset)}, a validation split.</p><div class='grid'>" + ctx.figure(fig, height=300) + "</div>")


def summarize_calibration(views: list[ResultView], ctx: ReportContext) -> list[Finding]:
    d = views[0].result
    k = round(d.refusal_rates[d.coeffs.index(d.chosen)] * d.n)
    return [Finding(f"activation addition ×{d.chosen:g} at layer {d.layer}, {esc(d.dataset)} refused",
                    rate(k, d.n), f"target {d.target:.2f} ({'met' if d.met else 'not met: largest coefficient tried'})")]


register_section(SectionSpec("direction", "Refusal direction", ("direction", "harm_vs_refusal"), "direction",
                             render_direction, summarize_direction))
register_section(SectionSpec("calibration", "Activation-addition calibration", ("actadd_calibration",),
                             "calibrate_actadd", render_calibration, summarize_calibration))
