"""The report's jailbreak section: per family, the not-refused and complied rates with 95% Wilson intervals beside the
neutral-wrapper control on the same instructions (paired McNemar tests), and a few judged answers.

Reads ``analysis/jailbreaks*`` results (:class:`~refusal_sae.analysis.jailbreaks.JailbreakResult`).
"""

from __future__ import annotations

from refusal_sae.report.markup import COLORS, COMPLIED, REFUSED, answer_cell, bars, ci, esc, num, rate, share, table
from refusal_sae.report.records import Answer, typed
from refusal_sae.report.render import ReportContext, ResultView, SectionSpec, register_section
from refusal_sae.report.summary import Finding

KIND = "analysis_jailbreaks"
CONTROL_COLOR = "#57606a"
TOP = 3  # families in the findings table


def _not_refused(r) -> str:
    return rate(r.n - r.refused, r.n, r.not_refused_ci)


def _figure(rows: list, control, ctx: ReportContext, title: str) -> str:
    import plotly.graph_objects as go

    shown = [*rows, *([control] if control else [])][::-1]  # top to bottom as in the table
    names = [r.family for r in shown]
    fig = go.Figure()
    for key, k_of, ci_of, color in (("not refused", lambda r: r.n - r.refused, lambda r: r.not_refused_ci, "#bf3989"),
                                    ("complied", lambda r: r.complied, lambda r: r.complied_ci, COLORS[COMPLIED])):
        vals = [share(k_of(r), r.n) for r in shown]
        colors = [CONTROL_COLOR if control is not None and r is control else color for r in shown]
        fig.add_trace(go.Bar(x=vals, y=names, orientation="h", name=key, marker_color=colors,
                             opacity=1.0 if key == "not refused" else 0.55, error_x=bars(vals, [ci_of(r) for r in shown]),
                             hovertemplate=f"%{{y}}: {key} %{{x:.2f}}<extra></extra>"))
    if control is not None:
        c = share(control.n - control.refused, control.n)
        fig.add_vline(x=c, line_dash="dot", line_color=CONTROL_COLOR,
                      annotation_text=f"neutral control {c:.2f}", annotation_position="top right")
    fig.update_layout(title=title, barmode="group", xaxis_title="rate (95% Wilson CI)", xaxis_range=[0, 1.05],
                      yaxis=dict(automargin=True), legend=dict(orientation="h", y=-0.2))
    return ctx.figure(fig, height=120 + 46 * len(shown))


def _examples(v: ResultView, families: list[str], n: int) -> str:
    if n <= 0:
        return ""
    rows = typed(list[Answer], v.result.rows)
    out = []
    for fam in families:
        mine = sorted((r for r in rows if r.family == fam), key=lambda r: r.judgement == REFUSED)  # got through first
        out += [f"<tr><td>{esc(fam)}</td><td class='prompt'>{esc(r.prompt)}</td>{answer_cell(r.judgement, r.completion)}"
                "</tr>" for r in mine[:n]]
    if not out:
        return ""
    return (f"<details><summary>judged answers ({n} per family, not refused first; every answer in "
            f"<code>{esc(v.name)}/rows.jsonl</code>)</summary><table><tr><th>family</th><th>prompt</th>"
            f"<th>answer</th></tr>{''.join(out)}</table></details>")


def _lead(v: ResultView) -> str:
    d, cfg = v.result, v.settings
    if d.mode == "wrap":
        lead = (f"{esc(' + '.join(d.sources))}: {d.n_plain} plain instructions answered, {d.n_plain_refused} refused; "
                f"{d.n_instructions} refused ones wrapped in each of {len(d.table)} families"
                + (" and in a <b>neutral control</b> wrapper (polite text, no attack) — each family is paired with it "
                   "on the same instructions (McNemar exact)" if d.control else "") + ".")
    else:
        lead = f"Prompt file {esc(d.sources[0])}: {sum(r.n for r in d.table)} prompts in {len(d.table)} families."
    return lead + (f" Greedy answers ({esc(cfg.max_new_tokens or '?')} tokens) judged by <code>{esc(cfg.judge or '?')}"
                   "</code>; <i>not refused</i> (complied or degenerate) is the outcome that does not rest on the judge's "
                   "complied call. Pairs (plain refused → wrapped): "
                   + ", ".join(f"{esc(k)} {n}" for k, n in d.pair_counts.items()) + ".")


def _one(v: ResultView, ctx: ReportContext) -> str:
    d = v.result
    rows, control = d.table, d.control
    head = ["family", "n", "not refused [95% CI]", "complied [95% CI]", "degenerate", "refused",
            "vs control: not refused (only fam. / only ctl., p)", "vs control: complied (p)"]
    body = [[f"<span title='{esc(r.description)}'>{esc(r.family)}</span>", str(r.n), _not_refused(r),
             rate(r.complied, r.n, r.complied_ci), str(r.degenerate), str(r.refused),
             f"{r.nr_only_family} / {r.nr_only_control}, p = {num(r.nr_p_value, '.3g')}" if r.nr_p_value is not None
             else "–",
             f"{r.only_family} / {r.only_control}, p = {num(r.p_value, '.3g')}" if r.p_value is not None else "–"]
            for r in [*rows, *([control] if control else [])]]
    title = "not refused and complied per family (95% Wilson CI); grey: the neutral control"
    return (f"<h3><code>{esc(v.name)}</code></h3><p class='lead'>{_lead(v)}</p>" + _figure(rows, control, ctx, title)
            + table(head, body, num_from=1, num_to=6)
            + ("<p class='note'>p-values per family, uncorrected for the number of families; "
               f"interval of the control {ci(control.not_refused_ci)}.</p>" if control else "")
            + _examples(v, [r.family for r in rows], min(ctx.examples, 2)))


def render_jailbreaks(views: list[ResultView], ctx: ReportContext) -> str:
    return "".join(_one(v, ctx) for v in sorted(views, key=lambda v: v.name))


def summarize_jailbreaks(views: list[ResultView], ctx: ReportContext) -> list[Finding]:
    """The families that get through most often (not refused), each beside the neutral control."""
    out = []
    for v in sorted(views, key=lambda v: v.name):
        d = v.result
        top = sorted(d.table, key=lambda r: -share(r.n - r.refused, r.n))[:TOP]
        for r in top:
            paired = f" (paired p = {num(r.nr_p_value, '.3g')})" if r.nr_p_value is not None else ""
            out.append(Finding(f"{esc(r.family)}: not refused" + (f" <code>{esc(v.name)}</code>" if len(views) > 1 else ""),
                               _not_refused(r), f"neutral wrapper: {_not_refused(d.control)}{paired}" if d.control
                               else "no neutral control in this table"))
    return out


register_section(SectionSpec("jailbreaks", "Jailbreak families vs a neutral wrapper", (KIND,), "jailbreaks",
                             render_jailbreaks, summarize_jailbreaks))
