"""The report's upstream → downstream section: the shared refusal features, how much their activation drops when a
jailbreak wrapper is added (jailbroken vs failed pairs) and when each prompt's upstream harm features are clamped,
beside random same-layer features clamped from the same positions (the control); the choice of the threshold X and
the wrapper tokens that suppress the refusal features most.

Reads ``analysis/upstream`` (:class:`~refusal_sae.analysis.upstream.UpstreamResult`).
"""

from __future__ import annotations

from refusal_sae.report.markup import bars, ci, clean, esc, feature_list, missing, num, table
from refusal_sae.report.records import Difference, InstructionDrop, typed
from refusal_sae.report.render import ReportContext, ResultView, SectionSpec, register_section
from refusal_sae.report.summary import Finding

KIND = "analysis_upstream"
MEASURES = (("harm_drop", "harm_ci", "upstream features, plain → wrapped", "#bf8700"),
            ("refusal_drop", "refusal_ci", "refusal features, plain → wrapped", "#0969da"),
            ("ablation_drop", "ablation_ci", "refusal features, upstream clamped", "#cf222e"),
            ("random_drop", "random_ci", "control: random features clamped", "#8c959f"))
ALL = "all pairs"  # the drop table's row over every analysed instruction


def _drop(r, key: str, ci_key: str) -> str:
    return f"{num(getattr(r, key), '.2f')} {ci(getattr(r, ci_key))}"


def _drops(d, ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    groups = [r.group for r in d.table]
    fig = go.Figure()
    for key, ci_key, name, color in MEASURES:
        vals = [getattr(r, key) for r in d.table]
        fig.add_trace(go.Bar(x=groups, y=clean(vals), name=name, marker_color=color,
                             error_y=bars(vals, [getattr(r, ci_key) for r in d.table]),
                             hovertemplate=f"{name}<br>%{{x}}: %{{y:.3f}}<extra></extra>"))
    fig.add_hline(y=0, line_color="#888", line_width=1)
    fig.update_layout(title="relative drop of feature activations (95% CI, instructions resampled)", barmode="group",
                      yaxis_title="relative drop (1 = silenced)", legend=dict(orientation="h", y=-0.2))
    return ctx.figure(fig, height=380)


def _per_instruction(d, ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    rows = [r for r in typed(list[InstructionDrop], d.instructions)
            if not missing(r.ablation_drop) and not missing(r.random_drop)]
    if not rows:
        return ""
    xs, ys = [r.random_drop for r in rows], [r.ablation_drop for r in rows]
    lo, hi = min(0.0, *xs, *ys) - 0.05, max(1.0, *xs, *ys) + 0.05
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="markers", marker=dict(size=9, color="#cf222e", opacity=0.75),
                               text=[esc(r.instruction[:80]) for r in rows], name="instruction",
                               hovertemplate="%{text}<br>random %{x:.2f}, upstream %{y:.2f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(dash="dot", color="#888"),
                             name="upstream = random", hoverinfo="skip"))
    fig.update_layout(title="per instruction: refusal-feature drop, upstream vs random clamp", showlegend=False,
                      xaxis_title="random features clamped (control)", yaxis_title="upstream features clamped",
                      xaxis_range=[lo, hi], yaxis_range=[lo, hi])
    return ctx.figure(fig, height=360)


def _thresholds(d, ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    rows = d.thresholds
    xs = [r.threshold for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=[r.n_train for r in rows], mode="lines+markers", name="shared (train)"))
    fig.add_trace(go.Scatter(x=xs, y=[r.n_val for r in rows], mode="lines+markers", name="shared (validation)"))
    fig.add_trace(go.Scatter(x=xs, y=[r.jaccard for r in rows], mode="lines+markers", name="Jaccard train/val",
                             yaxis="y2", line=dict(dash="dash")))
    fig.add_vline(x=d.threshold, line_dash="dot", line_color="#cf222e", annotation_text=f"X = {d.threshold:g}")
    fig.update_layout(title="threshold X: features in ≥ X of the per-prompt sets", xaxis_title="X",
                      yaxis_title="shared features", yaxis2=dict(title="Jaccard", overlaying="y", side="right",
                                                                  range=[0, 1.05]),
                      legend=dict(orientation="h", y=-0.25))
    return ctx.figure(fig, height=320)


def _tokens(d) -> str:
    if not d.tokens:
        return ""
    body = [[esc(t.family), str(t.n_prompts), num(t.wrapper, "+.3f"), num(t.payload, "+.3f"), num(t.template, "+.3f"),
             esc(", ".join(f"{k} {num(x, '+.2f')}" for k, x in t.by_outcome.items())),
             esc(", ".join(f"{s.token!r} {s.mean:+.3f}×{s.count}" for s in t.top[:5]))] for t in d.tokens]
    return ("<h4>Wrapper tokens that suppress the refusal features (gradient × input, per prompt)</h4>"
            + table(["family", "prompts", "wrapper", "instruction", "template", "wrapper by outcome",
                     "most suppressing tokens (mean × count)"], body, num_from=1, num_to=5))


def render_upstream(views: list[ResultView], ctx: ReportContext) -> str:
    v = views[0]
    d = v.result
    rf = d.refusal_features
    lead = (f"<b>{len(rf)} refusal features</b> ({esc(feature_list(rf))}): in at least X = {d.threshold:g} of the "
            f"per-prompt sets (top {d.k} by LA-IG) of {d.n_train} refused harmful_train prompts, X chosen on "
            f"{d.n_val} refused harmful_val prompts ({esc(d.rule)}). Each plain instruction of the jailbreak table "
            f"<code>{esc(d.jailbreaks)}</code> has its own upstream features (its set minus the refusal features); "
            f"they are clamped ×{d.clamp:g} from their peak-attribution position, and the refusal features are read "
            f"over the last {d.last} tokens. Control: {esc(v.settings.n_random or '?')} random same-layer feature "
            "sets clamped from the same positions.")
    head = ["pairs", "n (instructions)", *(name + " [95% CI]" for _, _, name, _ in MEASURES),
            "refusal score plain / clamped / random"]
    body = [[esc(r.group), f"{r.n_pairs} ({r.n_instructions})", *(_drop(r, k, c) for k, c, _, _ in MEASURES),
             f"{num(r.score_plain, '.2f')} / {num(r.score_ablated, '.2f')} / {num(r.score_random, '.2f')}"]
            for r in d.table]
    diff = [[esc(m), num(x.diff, ".2f"), ci(x.ci), f"{x.n_jailbroken} vs {x.n_failed}"]
            for m, x in typed(dict[str, Difference], d.difference).items()]
    notes = "".join(f"<li>{esc(n)}</li>" for n in d.notes)
    skipped = {k: n for k, n in d.skipped.items() if n}
    if skipped:
        notes += "<li>instructions skipped: " + esc(", ".join(f"{k}: {n}" for k, n in skipped.items())) + "</li>"
    figs = [_drops(d, ctx), _per_instruction(d, ctx)]
    return (f"<p class='lead'>{lead}</p><div class='grid'>{''.join(f for f in figs if f)}</div>"
            + table(head, body, num_from=1)
            + "<h4>Jailbroken − failed pairs (95% CI, instructions resampled within each group)</h4>"
            + table(["measure", "difference", "95% CI", "pairs"], diff, num_from=1)
            + _thresholds(d, ctx) + _tokens(d) + (f"<ul class='note'>{notes}</ul>" if notes else ""))


def summarize_upstream(views: list[ResultView], ctx: ReportContext) -> list[Finding]:
    d = views[0].result
    row = next((r for r in d.table if r.group == ALL), None)
    out = []
    if row is not None:
        out.append(Finding(f"{len(d.refusal_features)} refusal features: relative drop when each instruction's upstream "
                           f"features are clamped ({row.n_instructions} instructions)", _drop(row, "ablation_drop",
                                                                                              "ablation_ci"),
                           f"random same-layer features clamped: {_drop(row, 'random_drop', 'random_ci')}"))
    names = {key: name for key, _, name, _ in MEASURES}
    for m, x in typed(dict[str, Difference], d.difference).items():
        out.append(Finding(f"{esc(names.get(m, m))}: relative drop, jailbroken − failed pairs ({x.n_jailbroken} vs "
                           f"{x.n_failed})", f"{num(x.diff, '+.2f')} {ci(x.ci)}" if not missing(x.diff) else "–",
                           "0: no difference between the groups"))
    return out


register_section(SectionSpec("upstream", "Upstream → downstream features", (KIND,), "upstream", render_upstream,
                             summarize_upstream))
