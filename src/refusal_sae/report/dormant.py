"""The report's dormant-features section (stage 4, :mod:`refusal_sae.search.dormant`): critical-but-silent members
of the found sets (beside the active members' rate, Wilson intervals), features newly active under the minimal set's
clamp by position kind (beside random clamps of the same per-layer sizes), and the rounds of re-search (complied per
round with Wilson intervals beside random sets of the same sizes).

Reads the typed ``search/dormant/{silent,newly_active,rounds}`` results.
"""

from __future__ import annotations

from refusal_sae.report.markup import bars, esc, feature_list, num, rate, rate_ci, share, table, wilson
from refusal_sae.report.records import FeatureCount, typed
from refusal_sae.report.render import ReportContext, ResultView, SectionSpec, register_section
from refusal_sae.report.summary import Finding

KINDS = ("dormant_silent", "dormant_newly_active", "dormant_rounds")
SILENT, ACTIVE, RANDOM = "#cf222e", "#57606a", "#8c959f"


def _feat(f: FeatureCount) -> str:
    return f"L{f.feature[0]}:{f.feature[1]}"


def _mean(xs) -> float | None:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None


# --- critical-but-silent ------------------------------------------------------------------------------------------
def _silent(d, ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    rows = [[esc(s.set_name), str(s.size), rate_ci(s.n_flipped, s.n_prompts), str(s.silent_pairs),
             str(s.silent_critical_by_score), rate_ci(s.silent_critical, s.silent_pairs), str(s.silent_critical_woken),
             str(s.active_pairs), rate_ci(s.active_critical, s.active_pairs),
             f"{s.prompts_with_critical_silent} ({_mean(s.critical_silent_per_prompt) or 0:.2f})", str(len(s.features)),
             str(s.judged_pairs)] for s in d.summaries]
    names = [s.set_name for s in d.summaries]
    fig = go.Figure()
    for kind, color, what in (("silent", SILENT, "silent members"), ("active", ACTIVE, "active members (control)")):
        counts = [(getattr(s, f"{kind}_critical"), getattr(s, f"{kind}_pairs")) for s in d.summaries]
        ys = [share(k, n) for k, n in counts]
        fig.add_trace(go.Bar(x=names, y=ys, name=what, marker_color=color,
                             error_y=bars(ys, [wilson(k, n) for k, n in counts]),
                             hovertemplate=f"{what}, %{{x}} set: %{{y:.3f}}<extra></extra>"))
    fig.update_layout(barmode="group", title="members whose removal restores refusal, per (flipped prompt, member) pair "
                                             "(95% Wilson CI)", xaxis_title="set", yaxis_title="critical share",
                      yaxis_range=[0, 1.05], legend=dict(orientation="h", y=-0.25))
    feats = [[esc(s.set_name), _feat(f), str(f.prompts)]
             for s in d.summaries for f in typed(list[FeatureCount], s.features[:8])]
    screen = ("only the removals whose refusal score rises above "
              f"{d.label_threshold:g} were judged, so the judged counts are lower bounds" if d.screen == "score"
              else "every removal was judged")
    lo, hi = wilson(0, len(d.prompts))
    return ("<h3>Critical but silent</h3>"
            f"<p class='lead'>On {len(d.prompts)} held-out prompts the unclamped model refuses (complied 0 by "
            f"selection, 95% CI [{lo:.3f}, {hi:.3f}]), each set is clamped at c = {d.c:g}; on the prompts it flips, "
            "every member is removed in turn. A member is <b>critical</b> when the answer without it is judged refused "
            "again, <b>silent</b> when its code is zero at every position of the unclamped prompt (<i>woken</i>: it "
            f"fires under the rest of the clamp); {screen}. Active members are the comparison.</p>"
            + table(["set", "size", "flips [95% CI]", "silent pairs", "by score", "silent critical [95% CI]", "woken",
                     "active pairs", "active critical [95% CI]", "prompts with one (mean)", "features", "judged"],
                    rows, num_from=1)
            + "<div class='grid'>" + ctx.figure(fig, height=340)
            + ("<div><h4>Critical-but-silent features</h4>" + table(["set", "feature", "prompts"], feats, num_from=2)
               + "</div>" if feats else "<div><p class='note'>No critical-but-silent member was found.</p></div>")
            + "</div>")


# --- newly active ------------------------------------------------------------------------------------------------
def _newly_figure(d, ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    kinds, m, rnd = d.kinds, d.minimal, d.random

    def per_pos(x, kind: str) -> float:
        return x.events[kind] / max(d.positions[kind], 1)

    fig = go.Figure(go.Bar(x=kinds, y=[per_pos(m, k) for k in kinds], name=f"minimal set ({m.size} clamped)",
                           marker_color=SILENT, hovertemplate="%{x}: %{y:.2f} per position<extra></extra>"))
    if rnd:
        fig.add_trace(go.Bar(x=kinds, y=[_mean(per_pos(r, k) for r in rnd) for k in kinds],
                             name=f"random sets of the same sizes (mean of {len(rnd)})", marker_color=RANDOM,
                             hovertemplate="%{x}: %{y:.2f} per position<extra></extra>"))
        fig.add_trace(go.Scatter(x=[k for _ in rnd for k in kinds], y=[per_pos(r, k) for r in rnd for k in kinds],
                                 mode="markers", name="each random set", marker=dict(symbol="diamond-open", size=9,
                                                                                     color=ACTIVE)))
    fig.update_layout(barmode="group", title="newly active features by position kind: firings per position",
                      xaxis_title="position kind", yaxis_title="newly active firings / position",
                      legend=dict(orientation="h", y=-0.25))
    return ctx.figure(fig, height=340)


def _newly(d, ctx: ReportContext) -> str:
    kinds, pos, m, rnd = d.kinds, d.positions, d.minimal, d.random
    rows = [[esc(k), str(pos[k]), str(m.events[k]), num(m.events[k] / max(pos[k], 1), ".2f"),
             num(_mean(r.events[k] for r in rnd), ".1f"), str(m.pairs_by_first_kind[k])] for k in kinds]
    rows.append(["<b>all</b>", str(sum(pos.values())), str(sum(m.events.values())), "",
                 num(_mean(sum(r.events.values()) for r in rnd), ".1f"), str(m.pairs)])
    tops = [[_feat(t), str(t.prompts), esc(", ".join(f"{k} {n}" for k, n in sorted(t.kinds.items(), key=lambda kv: -kv[1])))]
            for t in typed(list[FeatureCount], d.top_features[:10])]
    per_layer = ", ".join(f"L{L}: {n}" for L, n in sorted(m.per_layer.items()))
    return ("<h3>Newly active under the minimal set's clamp</h3>"
            f"<p class='lead'>Features of the searched SAEs that are zero at every position of the unclamped prompt and "
            f"fire under the clamp, on the same {d.n_prompts} held-out prompts: <b>{m.pairs}</b> (prompt, feature) "
            f"pairs vs {num(_mean(r.pairs for r in rnd), '.1f')} under random clamps of the same per-layer sizes; "
            f"silenced (the reverse): {m.silenced_pairs} vs {num(_mean(r.silenced_pairs for r in rnd), '.1f')}. By "
            f"layer: {esc(per_layer)}.</p>"
            + "<div class='grid'>" + _newly_figure(d, ctx)
            + "<div>" + table(["position kind", "positions", "firings", "per position", "random (mean)",
                               "pairs first firing here"], rows, num_from=1)
            + ("<h4>Most often newly active</h4>" + table(["feature", "prompts", "position kinds"], tops, num_from=1, num_to=2)
               if tops else "") + "</div></div>")


# --- rounds -------------------------------------------------------------------------------------------------------
def _pooled(r) -> tuple[int, int]:
    """The random sets of a round pooled: complied answers and answers."""
    return round(sum(r.random_complied) * r.val_n), len(r.random_complied) * r.val_n


def _rounds_figure(d, ctx: ReportContext) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = d.rows
    x = [r.round for r in rows]
    fig = make_subplots(rows=1, cols=2, subplot_titles=["complied on refused harmful_val (95% Wilson CI)",
                                                        "mean refusal score with the set clamped"])
    rates = [share(r.complied, r.val_n) for r in rows]
    fig.add_trace(go.Scatter(x=x, y=rates, mode="lines+markers", name="the set after each round",
                             line=dict(color=SILENT), error_y=bars(rates, [r.complied_ci for r in rows]),
                             text=[f"{r.size} features" for r in rows],
                             hovertemplate="round %{x}: %{y:.3f} (%{text})<extra></extra>"), 1, 1)
    pooled = [_pooled(r) for r in rows]
    if any(n for _, n in pooled):
        rr = [share(k, n) for k, n in pooled]
        fig.add_trace(go.Scatter(x=x, y=rr, mode="lines+markers", name="random sets of the same sizes (pooled)",
                                 line=dict(color=RANDOM, dash="dot"),
                                 error_y=bars(rr, [wilson(k, n) for k, n in pooled])), 1, 1)
        fig.add_trace(go.Scatter(x=[r.round for r in rows for _ in r.random_complied],
                                 y=[y for r in rows for y in r.random_complied], mode="markers",
                                 name="each random set", marker=dict(symbol="diamond-open", size=9, color=ACTIVE)), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=[r.train_score for r in rows], mode="lines+markers", name="training prompts",
                             line=dict(color="#0969da")), 1, 2)
    fig.add_trace(go.Scatter(x=x, y=[r.val_score for r in rows], mode="lines+markers", name="validation prompts",
                             line=dict(color="#0969da", dash="dash")), 1, 2)
    fig.add_hline(y=0, line_dash="dot", line_color="#888", row=1, col=2)
    fig.update_xaxes(title_text="round", tickvals=x)
    fig.update_yaxes(range=[-0.05, 1.05], row=1, col=1)
    fig.update_layout(title=f"rounds of re-search on top of the minimal set (stopped: {d.stopped})",
                      legend=dict(orientation="h", y=-0.3))
    return ctx.figure(fig, height=360)


def _rounds(v: ResultView, ctx: ReportContext) -> str:
    d = v.result
    body = [[str(r.round), esc(feature_list(r.added) or "–"), str(r.size), str(r.candidates), num(r.train_score, "+.3f"),
             num(r.train_flipped, ".2f"), num(r.val_score, "+.3f"), rate_ci(r.complied, r.val_n),
             ", ".join(f"{y:.2f}" for y in r.random_complied) or "–", rate_ci(r.degenerate, r.val_n)] for r in d.rows]
    n = d.rows[0].val_n if d.rows else 0
    n_val = v.settings.n_val
    sample = f"{n_val} sampled" if n_val else "the search's validation sample"
    return ("<h3>Rounds of re-search</h3>"
            f"<p class='lead'>Round 0 is the minimal set; each later round finds LA-IG candidates again with the set "
            f"clamped, filters them greedily (the set still clamped) and adds what every order keeps. Judged on the "
            f"{n} harmful_val prompts the model refuses (of {sample}; unclamped: complied 0 by selection); training "
            f"scores on {d.n_train} harmful_train prompts. Stopped: "
            f"{esc(d.stopped)}; final set: {len(d.final)} features.</p>"
            + _rounds_figure(d, ctx)
            + table(["round", "added", "size", "candidates", "train score", "train flipped", "val score",
                     "complied [95% CI]", "random (per set)", "degenerate [95% CI]"], body, num_from=2))


def render_dormant(views: list[ResultView], ctx: ReportContext) -> str:
    silent, newly, rounds = (next((v for v in views if v.kind == k), None) for k in KINDS)
    out = []
    if silent is not None:
        sets = "; ".join(f"{esc(n)} ({len(s)}): {esc(feature_list(s, 12) or '–')}" for n, s in silent.result.sets.items())
        out.append(f"<p class='lead'>Refusal features that stay silent until the others are removed (Prakash et al.). "
                   f"Sets tested: {sets}.</p>")
        out.append(_silent(silent.result, ctx))
    if newly is not None:
        out.append(_newly(newly.result, ctx))
    if rounds is not None:
        out.append(_rounds(rounds, ctx))
    elif silent is not None or newly is not None:
        out.append("<p class='note'>No rounds of re-search in this run directory (<code>max_rounds: 0</code>).</p>")
    return "".join(out)


def summarize_dormant(views: list[ResultView], ctx: ReportContext) -> list[Finding]:
    silent, newly, rounds = (ctx.one(k) for k in KINDS)
    out = []
    for s in silent.summaries if silent is not None else []:
        out.append(Finding(f"{esc(s.set_name)} set ({s.size}): silent members critical, per (flipped prompt, member)",
                           rate(s.silent_critical, s.silent_pairs) if s.silent_pairs else "no silent member",
                           f"active members: {rate(s.active_critical, s.active_pairs)}"))
    if newly is not None:
        rnd = _mean(r.pairs for r in newly.random)
        out.append(Finding(f"newly active (prompt, feature) pairs under the minimal set's clamp ({newly.n_prompts} "
                           "held-out prompts)", str(newly.minimal.pairs),
                           f"random clamps of the same sizes: {num(rnd, '.1f')} (mean of {len(newly.random)})"))
    if rounds is not None and rounds.rows:
        last, first = rounds.rows[-1], rounds.rows[0]
        k, n = _pooled(last)
        out.append(Finding(f"rounds of re-search: {len(rounds.rows) - 1} added, final set {len(rounds.final)} features; "
                           "validation complied", rate(last.complied, last.val_n, last.complied_ci),
                           f"round 0 (minimal set): {rate(first.complied, first.val_n, first.complied_ci)}; random sets "
                           f"of the same sizes: {rate(k, n)}"))
    return out


register_section(SectionSpec("dormant", "Dormant features: critical but silent, newly active, rounds", KINDS, "dormant",
                             render_dormant, summarize_dormant))
