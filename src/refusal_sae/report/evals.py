"""The report's evaluations section (:class:`~refusal_sae.scoring.evaluation.EvalResult`): refused / complied /
degenerate rates with 95% Wilson intervals per prompt set and intervention, and example generations of the same
prompts under each condition (prompts whose label changes first). Its findings put each intervention beside the
unintervened model on the same prompt set, and a model beside any other model evaluated the same way (e.g. the
untuned model beside the refusal-tuned one)."""

from __future__ import annotations

from collections import defaultdict

from refusal_sae.report.markup import COLORS, LABELS, REFUSED, answer_cell, esc, num, rate, rate_ci, share, table, wilson
from refusal_sae.report.records import Answer, typed
from refusal_sae.report.render import ReportContext, ResultView, SectionSpec, register_section
from refusal_sae.report.summary import Finding

ORDER = {"none": 0, "ablate": 1, "actadd": 2}


def judge_named(v: ResultView) -> str:
    """The judge that counted a result: its spec and, where recorded, the implementation behind it (``default`` has
    meant different judges across versions)."""
    s = v.settings
    spec, impl = s.judge or "?", s.judge_impl
    return f"{spec} ({impl})" if impl and impl.lower() != f"{spec}judge" else spec


def condition(v: ResultView) -> str:
    """The intervention of an evaluation: ``""``, `` · ablate``, `` · actadd ×2`` (with its layers where restricted)."""
    s = v.settings
    tag = "" if s.intervention == "none" else f" · {s.intervention}"
    if s.intervention == "actadd":
        tag += f" ×{s.coeff:g}"
    if s.ablate_layers:
        tag += f" (layers {','.join(map(str, s.ablate_layers))})"
    return tag


def eval_label(v: ResultView) -> str:
    return f"{v.result.dataset}{condition(v)}"


def _sorted(views: list[ResultView]) -> list[ResultView]:
    return sorted(views, key=lambda v: (v.result.dataset, ORDER.get(v.settings.intervention, 3), v.settings.coeff, v.name))


def render_evals(views: list[ResultView], ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    views = _sorted(views)
    rows = [[esc(eval_label(v)), str(v.result.n),
             *(rate_ci(v.result.counts.get(lab, 0), v.result.n) for lab in LABELS),
             num(v.result.mean_refusal_score), esc(judge_named(v)), f"<code>{esc(v.name)}</code>"] for v in views]
    out = [table(["evaluation", "n", "refused [95% CI]", "complied [95% CI]", "degenerate [95% CI]",
                  "mean refusal score", "judge", "folder"], rows, num_from=1, num_to=6)]
    fig = go.Figure()
    for lab in LABELS:
        ys, lo_err, hi_err = [], [], []
        for v in views:
            n, k = v.result.n, v.result.counts.get(lab, 0)
            lo, hi = wilson(k, n)
            ys.append(share(k, n))
            lo_err.append(ys[-1] - lo)
            hi_err.append(hi - ys[-1])
        fig.add_trace(go.Bar(x=[eval_label(v) for v in views], y=ys, name=lab, marker_color=COLORS[lab],
                             error_y=dict(type="data", symmetric=False, array=hi_err, arrayminus=lo_err, thickness=1.2)))
    fig.update_layout(barmode="group", title="judged generations (95% Wilson intervals)", yaxis_title="rate",
                      yaxis_range=[0, 1.05], legend=dict(orientation="h", y=1.12))
    out.append(ctx.figure(fig, height=380))
    out.append(_examples(views, ctx))
    return "".join(out)


def _examples(views: list[ResultView], ctx: ReportContext) -> str:
    """A few prompts per prompt set, side by side under each intervention (same prompts: same dataset, n and seed);
    prompts whose judgement changes between interventions first."""
    if ctx.examples <= 0:
        return ""
    groups: dict[tuple, list[ResultView]] = defaultdict(list)
    for v in views:
        groups[(v.result.dataset, v.settings.n, v.settings.seed)].append(v)
    out = ["<h3>Example generations before / after each intervention</h3>"
           "<p class='note'>Greedy completions with the judge's label; the same prompts under each condition of a "
           "prompt set. Prompts whose label changes between conditions are shown first.</p>"]
    for (dataset, _, _), vs in groups.items():
        answers = [typed(list[Answer], v.result.rows) for v in vs]
        n = min(len(t) for t in answers)
        if n == 0 or any(t[i].instruction != answers[0][i].instruction for t in answers for i in range(n)):
            continue  # no rows, or not the same prompts
        changed = [i for i in range(n) if len({t[i].judgement for t in answers}) > 1]
        picks = (changed + [i for i in range(n) if i not in changed])[: ctx.examples]
        head = "".join(f"<th>{esc(eval_label(v))} <span class='note'>({esc(judge_named(v))})</span></th>" for v in vs)
        body = [f"<tr><td class='prompt'>{esc(answers[0][i].instruction)}</td>"
                + "".join(answer_cell(t[i].judgement, t[i].completion) for t in answers) + "</tr>" for i in picks]
        out.append(f"<h3>{esc(dataset)} <span class='note'>({len(changed)} of {n} prompts change label)</span></h3>"
                   f"<table><tr><th>prompt</th>{head}</tr>{''.join(body)}</table>")
    return "".join(out)


def _refused(v: ResultView, who: str = "") -> str:
    return f"{who}{rate(v.result.counts.get(REFUSED, 0), v.result.n)}"


def summarize_evals(views: list[ResultView], ctx: ReportContext) -> list[Finding]:
    """Refused per evaluation, beside the same model unintervened and the other models evaluated the same way."""
    views = _sorted(views)
    models = {v.result.model for v in views}
    out = []
    for v in views:
        key = (v.result.dataset, v.settings.n, v.settings.seed)
        same = [u for u in views if (u.result.dataset, u.settings.n, u.settings.seed) == key and u is not v]
        controls = [_refused(u, "unintervened: ") for u in same
                    if u.result.model == v.result.model and u.settings.intervention == "none" and condition(v)]
        controls += [_refused(u, f"{esc(u.result.model)}: ") for u in same
                     if u.result.model != v.result.model and condition(u) == condition(v)]
        who = f"{esc(v.result.model)} · " if len(models) > 1 else ""
        out.append(Finding(f"{who}{esc(eval_label(v))}: refused", _refused(v), "; ".join(controls) or "–"))
    return out


register_section(SectionSpec("evals", "Evaluations and example generations", ("eval",), "eval", render_evals,
                             summarize_evals))
