"""The report's probe section: how well linear probes of "will the model refuse" on the refusal features predict it,
beside random feature sets of the same per-layer sizes and the dense residual stream, in distribution (held-out plain
prompts) and out of distribution (jailbreak-wrapped prompts or a prompt file), with bootstrap 95% intervals.

Reads ``analysis/probes`` (:class:`~refusal_sae.analysis.probes.ProbeResult`) as plain JSON.
"""

from __future__ import annotations

from refusal_sae.report.analysis_common import bars, ci, features, num
from refusal_sae.report.render import ReportContext, ResultView, SectionSpec, esc, register_section
from refusal_sae.report.sections import _table

KIND = "analysis_probes"
TESTS = (("in_distribution", "in distribution"), ("ood", "out of distribution"))


def _color(probe: str) -> str:
    if probe == "dense":
        return "#24292f"
    return "#d0d7de" if probe.startswith("random") else "#cf222e"


def _accuracy(d: dict, ctx: ReportContext) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=[t for _, t in TESTS], shared_yaxes=True)
    for col, (test, _) in enumerate(TESTS, 1):
        rows = [r for r in d["rows"] if r["test"] == test]
        names = [r["probe"] for r in rows]
        accs = [r["accuracy"] for r in rows]
        fig.add_trace(go.Bar(x=names, y=accs, marker_color=[_color(n) for n in names], showlegend=False,
                             error_y=bars(accs, [r["accuracy_ci"] for r in rows]),
                             hovertemplate="%{x}: accuracy %{y:.3f}<extra></extra>"), 1, col)
        for r in rows:
            if r.get("draws"):
                fig.add_trace(go.Scatter(x=[r["probe"]] * len(r["draws"]), y=r["draws"], mode="markers",
                                         showlegend=False, marker=dict(symbol="diamond-open", size=7, color="#57606a"),
                                         hovertemplate="one random set: %{y:.3f}<extra></extra>"), 1, col)
        c = d["counts"].get(test) or {}
        if c.get("n"):
            major = max(c["positive"], c["negative"]) / c["n"]
            fig.add_hline(y=major, line_dash="dot", line_color="#888", row=1, col=col,
                          annotation_text=f"majority class {major:.2f}", annotation_position="bottom right")
    fig.update_yaxes(range=[0, 1.05], title_text="accuracy (95% bootstrap CI)", row=1, col=1)
    fig.update_layout(title="probe accuracy: refusal features vs random sets of the same sizes (◇ each) vs dense")
    return ctx.figure(fig, height=400)


def _dense_layers(d: dict, ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    rows = d["dense_layers"]
    xs = [r["layer"] for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=[r["val_accuracy"] for r in rows], mode="lines+markers", name="accuracy"))
    fig.add_trace(go.Scatter(x=xs, y=[r["val_auc"] for r in rows], mode="lines+markers", name="AUC",
                             line=dict(dash="dash")))
    best = next((r for r in rows if r["layer"] == d["dense_layer"]), None)
    if best is not None:
        fig.add_trace(go.Scatter(x=[best["layer"]], y=[best["val_accuracy"]], mode="markers", name="chosen",
                                 marker=dict(symbol="star", size=16, color="#ffd33d", line=dict(width=1.5, color="black"))))
    fig.update_layout(title="dense probe on validation, by layer (★ chosen)", xaxis_title="layer",
                      yaxis_title="validation", yaxis_range=[0, 1.05], legend=dict(orientation="h", y=-0.25))
    return ctx.figure(fig, height=320)


def render_probes(views: list[ResultView], ctx: ReportContext) -> str:
    v = views[0]
    d, cfg = v.data, v.config
    sets = "; ".join(f"<b>{esc(k)}</b> ({len(fs['items'])}: {esc(features(fs['items'][:8]))}"
                     f"{' …' if len(fs['items']) > 8 else ''})" for k, fs in d["feature_sets"].items())
    counts = "; ".join(f"{esc(t)}: {c.get('positive', '?')} refused vs {c.get('negative', '?')} not"
                       for t, c in d["counts"].items())
    lead = (f"Probes of refusal (labels: {esc(d['labels'])}) on last-token activations. Feature sets: {sets}; each beside "
            f"{esc(cfg.get('n_random', '?'))} random sets of the same per-layer sizes and the dense residual stream after "
            f"layer {d['dense_layer']} (chosen on validation). Out of distribution: {esc(d['ood_source'])}. Prompts: "
            f"{counts}.")
    skipped = "".join(f"<li>skipped {esc(k)}: {esc(why)}</li>" for k, why in (d.get("skipped") or {}).items())
    out = [f"<p class='lead'>{lead}</p>", f"<ul class='note'>{skipped}</ul>" if skipped else "",
           "<div class='grid'>" + _accuracy(d, ctx) + _dense_layers(d, ctx) + "</div>"]
    for test, title in TESTS:
        rows = [r for r in d["rows"] if r["test"] == test]
        body = [[esc(r["probe"]) + (f" (layer {r['layer']})" if r.get("layer") is not None else ""),
                 str(r["n_features"]), f"{r['C']:g}", num(r["val_accuracy"]), str(r["n"]),
                 f"{num(r['accuracy'], '.3f')} {ci(r['accuracy_ci'], '.3f')}", f"{num(r['auc'], '.3f')} {ci(r['auc_ci'], '.3f')}",
                 esc(", ".join(f"{g} {a:.2f}" for g, a in r["group_accuracy"].items()))] for r in rows]
        gains = [[esc(f"{g['a']} − {g['b']}"), f"{g['accuracy_diff']:+.3f} {ci(g['accuracy_ci'], '.3f')}",
                  f"{num(g['auc_diff'], '+.3f')} {ci(g['auc_ci'], '.3f')}"] for g in d["gains"] if g["test"] == test]
        out.append(f"<h4>{title}</h4>"
                   + _table(["probe", "features", "C", "val acc", "n", "accuracy [95% CI]", "AUC [95% CI]",
                             "accuracy by group"], body, num_from=1, num_to=7)
                   + (_table(["paired gain (same bootstrap draws)", "accuracy [95% CI]", "AUC [95% CI]"], gains)
                      if gains else ""))
    return "".join(out)


register_section(SectionSpec("probes", "Probe accuracies", (KIND,), "probes", render_probes))
