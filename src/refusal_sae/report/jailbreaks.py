"""The report's jailbreak section: per family, the not-refused and complied rates with 95% Wilson intervals beside the
neutral-wrapper control on the same instructions (paired McNemar tests), and a few judged answers.

Reads ``analysis/jailbreaks*`` results (:class:`~refusal_sae.analysis.jailbreaks.JailbreakResult`) as plain JSON.
"""

from __future__ import annotations

from refusal_sae.report.analysis_common import bars, ci, num, rate
from refusal_sae.report.render import ReportContext, ResultView, SectionSpec, esc, register_section
from refusal_sae.report.sections import COLORS, _badge, _table

KIND = "analysis_jailbreaks"
CONTROL_COLOR = "#57606a"


def _figure(rows: list[dict], control: dict | None, ctx: ReportContext, title: str) -> str:
    import plotly.graph_objects as go

    shown = [*rows, *([control] if control else [])][::-1]  # top to bottom as in the table
    names = [r["family"] for r in shown]
    fig = go.Figure()
    for key, k_of, ci_key, color in (("not refused", lambda r: r["n"] - r["refused"], "not_refused_ci", "#bf3989"),
                                     ("complied", lambda r: r["complied"], "complied_ci", COLORS["complied"])):
        vals = [k_of(r) / max(r["n"], 1) for r in shown]
        colors = [CONTROL_COLOR if control is not None and r is control else color for r in shown]
        fig.add_trace(go.Bar(x=vals, y=names, orientation="h", name=key, marker_color=colors,
                             opacity=1.0 if key == "not refused" else 0.55,
                             error_x=bars(vals, [r[ci_key] for r in shown]),
                             hovertemplate=f"%{{y}}: {key} %{{x:.2f}}<extra></extra>"))
    if control is not None:
        c = (control["n"] - control["refused"]) / max(control["n"], 1)
        fig.add_vline(x=c, line_dash="dot", line_color=CONTROL_COLOR,
                      annotation_text=f"neutral control {c:.2f}", annotation_position="top right")
    fig.update_layout(title=title, barmode="group", xaxis_title="rate (95% Wilson CI)", xaxis_range=[0, 1.05],
                      yaxis=dict(automargin=True), legend=dict(orientation="h", y=-0.2))
    return ctx.figure(fig, height=120 + 46 * len(shown))


def _examples(v: ResultView, families: list[str], n: int) -> str:
    if n <= 0:
        return ""
    rows = v.rows("rows")
    out = []
    for fam in families:
        mine = [r for r in rows if r["family"] == fam]
        mine.sort(key=lambda r: r["judgement"] == "refused")  # answers that got through first
        for r in mine[:n]:
            out.append(f"<tr><td>{esc(fam)}</td><td class='prompt'>{esc(r['prompt'])}</td><td>{_badge(r['judgement'])}"
                       f"<div class='gen'>{esc(r['completion'])}</div></td></tr>")
    if not out:
        return ""
    return (f"<details><summary>judged answers ({n} per family, not refused first; every answer in "
            f"<code>{esc(v.name)}/rows.jsonl</code>)</summary><table><tr><th>family</th><th>prompt</th>"
            f"<th>answer</th></tr>{''.join(out)}</table></details>")


def _one(v: ResultView, ctx: ReportContext) -> str:
    d, cfg = v.data, v.config
    rows, control = d["table"], d.get("control")
    if d["mode"] == "wrap":
        lead = (f"{esc(' + '.join(d['sources']))}: {d['n_plain']} plain instructions answered, {d['n_plain_refused']} "
                f"refused; {d['n_instructions']} refused ones wrapped in each of {len(rows)} families"
                + (" and in a <b>neutral control</b> wrapper (polite text, no attack) — each family is paired with it "
                   "on the same instructions (McNemar exact)" if control else "") + ".")
    else:
        lead = f"Prompt file {esc(d['sources'][0])}: {sum(r['n'] for r in rows)} prompts in {len(rows)} families."
    lead += (f" Greedy answers ({esc(cfg.get('max_new_tokens', '?'))} tokens) judged by "
             f"<code>{esc(cfg.get('judge', '?'))}</code>; <i>not refused</i> (complied or degenerate) is the outcome "
             "that does not rest on the judge's complied call. Pairs (plain refused → wrapped): "
             + ", ".join(f"{esc(k)} {n}" for k, n in d["pair_counts"].items()) + ".")
    head = ["family", "n", "not refused [95% CI]", "complied [95% CI]", "degenerate", "refused",
            "vs control: not refused (only fam. / only ctl., p)", "vs control: complied (p)"]
    body = []
    for r in [*rows, *([control] if control else [])]:
        paired = r.get("nr_p_value") is not None
        body.append([f"<span title='{esc(r.get('description', ''))}'>{esc(r['family'])}</span>", str(r["n"]),
                     rate(r["n"] - r["refused"], r["n"], r["not_refused_ci"]),
                     rate(r["complied"], r["n"], r["complied_ci"]), str(r["degenerate"]), str(r["refused"]),
                     f"{r['nr_only_family']} / {r['nr_only_control']}, p = {num(r['nr_p_value'], '.3g')}" if paired else "–",
                     f"{r['only_family']} / {r['only_control']}, p = {num(r['p_value'], '.3g')}"
                     if r.get("p_value") is not None else "–"])
    title = "not refused and complied per family (95% Wilson CI); grey: the neutral control"
    return (f"<h3><code>{esc(v.name)}</code></h3><p class='lead'>{lead}</p>" + _figure(rows, control, ctx, title)
            + _table(head, body, num_from=1, num_to=6)
            + ("<p class='note'>p-values per family, uncorrected for the number of families; "
               f"interval of the control {ci(control['not_refused_ci'])}.</p>" if control else "")
            + _examples(v, [r["family"] for r in rows], min(ctx.examples, 2)))


def render_jailbreaks(views: list[ResultView], ctx: ReportContext) -> str:
    return "".join(_one(v, ctx) for v in sorted(views, key=lambda v: v.name))


register_section(SectionSpec("jailbreaks", "Jailbreak families vs a neutral wrapper", (KIND,), "jailbreaks",
                             render_jailbreaks))
