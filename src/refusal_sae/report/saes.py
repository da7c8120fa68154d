"""The report's SAE-quality section (:class:`~refusal_sae.saes.runner.SaeMetricsResult`): FVU, L0, dead fraction and
loss recovered per layer."""

from __future__ import annotations

from refusal_sae.report.markup import esc, num, table
from refusal_sae.report.render import ReportContext, ResultView, SectionSpec, register_section
from refusal_sae.report.summary import Finding

PANELS = (("fvu", "FVU (lower = better)"), ("mean_l0", "L0"), ("dead_fraction", "dead fraction"),
          ("loss_recovered", "loss recovered"))


def render_saes(views: list[ResultView], ctx: ReportContext) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    d = views[0].result
    rows = sorted(d.rows, key=lambda r: r.layer)
    x = [r.layer for r in rows]
    fig = make_subplots(rows=1, cols=4, subplot_titles=[t for _, t in PANELS])
    for i, (key, title) in enumerate(PANELS, 1):
        fig.add_trace(go.Scatter(x=x, y=[getattr(r, key) for r in rows], mode="lines+markers", name=title,
                                 showlegend=False), 1, i)
        fig.update_xaxes(title_text="layer", row=1, col=i)
    out = [f"<p class='lead'>{len(rows)} SAEs measured on {d.n_sequences} held-out sequences "
           f"({esc(', '.join(d.datasets))} prompts + the model's greedy responses), ordinary positions "
           f"(massive-norm positions reported apart).</p>", ctx.figure(fig, height=300)]
    body = [[str(r.layer), esc(r.d_sae), esc(r.n_tokens), num(r.fvu, ".4f"), num(r.mean_l0, ".1f"), num(r.dead_fraction),
             num(r.ce_base), num(r.ce_spliced), num(r.loss_recovered), esc(r.n_massive), num(r.massive_rel_error, ".4f")]
            for r in rows]
    out.append(table(["layer", "d_sae", "tokens", "FVU", "L0", "dead", "CE base", "CE spliced", "loss recovered",
                      "massive pos.", "massive rel. err"], body))
    return "".join(out)


def summarize_saes(views: list[ResultView], ctx: ReportContext) -> list[Finding]:
    rows = views[0].result.rows
    if not rows:
        return []

    def span(key: str, fmt: str) -> str:
        vals = [v for r in rows if (v := getattr(r, key)) is not None]
        return f"{num(min(vals), fmt)}–{num(max(vals), fmt)}" if vals else "–"

    return [Finding(f"{len(rows)} SAEs, layers {', '.join(str(r.layer) for r in sorted(rows, key=lambda r: r.layer))}",
                    f"FVU {span('fvu', '.3f')} · loss recovered {span('loss_recovered', '.2f')} · L0 "
                    f"{span('mean_l0', '.0f')}", "–")]


register_section(SectionSpec("sae-quality", "SAE quality per layer", ("sae_metrics",), "sae_metrics", render_saes,
                             summarize_saes))
