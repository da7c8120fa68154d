"""The report's probe section: how well linear probes of "will the model refuse" on the refusal features predict it,
beside random feature sets of the same per-layer sizes and the dense residual stream, in distribution (held-out plain
prompts) and out of distribution (jailbreak-wrapped prompts or a prompt file), with bootstrap 95% intervals.

Reads ``analysis/probes`` (:class:`~refusal_sae.analysis.probes.ProbeResult`).
"""

from __future__ import annotations

from refusal_sae.report.markup import STAR, bars, ci, esc, feature_list, num, table, value_ci
from refusal_sae.report.records import ClassCounts, DenseLayer, typed
from refusal_sae.report.render import ReportContext, ResultView, SectionSpec, register_section
from refusal_sae.report.summary import Finding

KIND = "analysis_probes"
TESTS = (("in_distribution", "in distribution"), ("ood", "out of distribution"))
DENSE = "dense"


def _color(probe: str) -> str:
    if probe == DENSE:
        return "#24292f"
    return "#d0d7de" if probe.startswith("random") else "#cf222e"


def _counts(d) -> dict[str, ClassCounts]:
    return typed(dict[str, ClassCounts], d.counts)


def _accuracy(d, ctx: ReportContext) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=[t for _, t in TESTS], shared_yaxes=True)
    counts = _counts(d)
    for col, (test, _) in enumerate(TESTS, 1):
        rows = [r for r in d.rows if r.test == test]
        names = [r.probe for r in rows]
        accs = [r.accuracy for r in rows]
        fig.add_trace(go.Bar(x=names, y=accs, marker_color=[_color(n) for n in names], showlegend=False,
                             error_y=bars(accs, [r.accuracy_ci for r in rows]),
                             hovertemplate="%{x}: accuracy %{y:.3f}<extra></extra>"), 1, col)
        for r in rows:
            if r.draws:
                fig.add_trace(go.Scatter(x=[r.probe] * len(r.draws), y=r.draws, mode="markers",
                                         showlegend=False, marker=dict(symbol="diamond-open", size=7, color="#57606a"),
                                         hovertemplate="one random set: %{y:.3f}<extra></extra>"), 1, col)
        c = counts.get(test)
        if c is not None and c.n and c.positive is not None and c.negative is not None:
            major = max(c.positive, c.negative) / c.n
            fig.add_hline(y=major, line_dash="dot", line_color="#888", row=1, col=col,
                          annotation_text=f"majority class {major:.2f}", annotation_position="bottom right")
    fig.update_yaxes(range=[0, 1.05], title_text="accuracy (95% bootstrap CI)", row=1, col=1)
    fig.update_layout(title="probe accuracy: refusal features vs random sets of the same sizes (◇ each) vs dense")
    return ctx.figure(fig, height=400)


def _dense_layers(d, ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    rows = typed(list[DenseLayer], d.dense_layers)
    xs = [r.layer for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=[r.val_accuracy for r in rows], mode="lines+markers", name="accuracy"))
    fig.add_trace(go.Scatter(x=xs, y=[r.val_auc for r in rows], mode="lines+markers", name="AUC", line=dict(dash="dash")))
    best = next((r for r in rows if r.layer == d.dense_layer), None)
    if best is not None:
        fig.add_trace(go.Scatter(x=[best.layer], y=[best.val_accuracy], mode="markers", name="chosen", marker=STAR))
    fig.update_layout(title="dense probe on validation, by layer (★ chosen)", xaxis_title="layer",
                      yaxis_title="validation", yaxis_range=[0, 1.05], legend=dict(orientation="h", y=-0.25))
    return ctx.figure(fig, height=320)


def _tables(d, test: str, title: str) -> str:
    rows = [r for r in d.rows if r.test == test]
    body = [[esc(r.probe) + (f" (layer {r.layer})" if r.layer is not None else ""), str(r.n_features), f"{r.C:g}",
             f"{r.val_accuracy:.2f}", str(r.n), value_ci(r.accuracy, r.accuracy_ci), value_ci(r.auc, r.auc_ci),
             esc(", ".join(f"{g} {a:.2f}" for g, a in r.group_accuracy.items()))] for r in rows]
    gains = [[esc(f"{g.a} − {g.b}"), f"{num(g.accuracy_diff, '+.3f')} {ci(g.accuracy_ci, '.3f')}",
              f"{num(g.auc_diff, '+.3f')} {ci(g.auc_ci, '.3f')}"] for g in d.gains if g.test == test]
    return (f"<h4>{title}</h4>"
            + table(["probe", "features", "C", "val acc", "n", "accuracy [95% CI]", "AUC [95% CI]", "accuracy by group"],
                    body, num_from=1, num_to=7)
            + (table(["paired gain (same bootstrap draws)", "accuracy [95% CI]", "AUC [95% CI]"], gains) if gains else ""))


def render_probes(views: list[ResultView], ctx: ReportContext) -> str:
    v = views[0]
    d = v.result
    sets = "; ".join(f"<b>{esc(k)}</b> ({len(fs)}: {esc(feature_list(fs, 8))})" for k, fs in d.feature_sets.items())
    counts = "; ".join(f"{esc(t)}: {c.positive if c.positive is not None else '?'} refused vs "
                       f"{c.negative if c.negative is not None else '?'} not" for t, c in _counts(d).items())
    lead = (f"Probes of refusal (labels: {esc(d.labels)}) on last-token activations. Feature sets: {sets}; each beside "
            f"{esc(v.settings.n_random or '?')} random sets of the same per-layer sizes and the dense residual stream "
            f"after layer {d.dense_layer} (chosen on validation). Out of distribution: {esc(d.ood_source)}. Prompts: "
            f"{counts}.")
    skipped = "".join(f"<li>skipped {esc(k)}: {esc(why)}</li>" for k, why in d.skipped.items())
    return "".join([f"<p class='lead'>{lead}</p>", f"<ul class='note'>{skipped}</ul>" if skipped else "",
                    "<div class='grid'>" + _accuracy(d, ctx) + _dense_layers(d, ctx) + "</div>",
                    *(_tables(d, test, title) for test, title in TESTS)])


def summarize_probes(views: list[ResultView], ctx: ReportContext) -> list[Finding]:
    """Per test: each refusal-feature probe's accuracy beside its random sets and the dense probe."""
    d = views[0].result
    out = []
    for test, title in TESTS:
        rows = [r for r in d.rows if r.test == test]
        controls = [r for r in rows if r.probe == DENSE or r.probe.startswith("random")]
        for r in rows:
            if r in controls:
                continue
            out.append(Finding(f"probe on <b>{esc(r.probe)}</b> ({r.n_features} features), {title}: accuracy",
                               value_ci(r.accuracy, r.accuracy_ci, ".2f"),
                               "; ".join(f"{esc(c.probe)}: {value_ci(c.accuracy, c.accuracy_ci, '.2f')}" for c in controls)))
    return out


register_section(SectionSpec("probes", "Probe accuracies", (KIND,), "probes", render_probes, summarize_probes))
