"""The report's feature-search section: the held-out comparison table with CIs and paired tests, the K* × c choice
grid and its flip curves beside the random controls, the greedy pruning (flip curves, tau sweep, minimal set, its
judged confirmation), and example generations before / after the clamps.

Reads the typed ``search/*`` results of :mod:`refusal_sae.search` (candidates, choice, greedy, cards, table). Each
part is drawn when its result exists, so a run stopped after ``search`` (no ``search_table`` yet) still shows the
choice and the greedy set.
"""

from __future__ import annotations

from collections import defaultdict

from refusal_sae.report.markup import (
    COLORS,
    COMPLIED,
    DEGENERATE,
    STAR,
    answer_cell,
    bars,
    esc,
    feature_list,
    num,
    rate,
    rate_ci,
    share,
    table,
    wilson,
)
from refusal_sae.report.records import Answer, TauRow, typed
from refusal_sae.report.render import ReportContext, ResultView, SectionSpec, register_section
from refusal_sae.report.summary import Finding

KINDS = ("search_candidates", "search_choice", "search_greedy", "search_table")
OURS, MINIMAL, ABLATION = "ours, global", "greedy minimal set", "direction ablation (AS)"  # rows of the table
# row colours of the comparison: ours red, the ablation ceiling dark, baselines grey, random controls light
ROW_COLOR = {ABLATION: "#24292f", OURS: "#cf222e", "ours, per-prompt": "#ff8182", MINIMAL: "#a40e26",
             "cosine prefilter alone": "#bf8700"}
BEFORE_AFTER = ("unclamped", ABLATION, OURS, MINIMAL)
CONTROLS = {OURS: (ABLATION, "random (K*)"), MINIMAL: (ABLATION, "random (minimal size)")}


def _one(views: list[ResultView], kind: str) -> ResultView | None:
    return next((v for v in views if v.kind == kind), None)


# --- lead -----------------------------------------------------------------------------------------------------------
def _lead(cands: ResultView | None, choice: ResultView | None, greedy: ResultView | None) -> str:
    parts = []
    if cands is not None:
        d, cfg = cands.result, cands.settings
        share_ = d.prefilter_attribution_share.get(d.direction_source)
        parts.append(f"Candidates: the {esc(cfg.k_per_layer or '?')} features per layer whose decoder rows are "
                     f"closest to the refusal direction ({esc(d.direction_source)}) at SAE layers "
                     f"{esc(', '.join(map(str, d.layers)))}, ranked by LA-IG attribution ({esc(cfg.ig_steps or '?')} "
                     f"steps) over {d.n_attribution} harmful_train prompts"
                     + (f"; the prefilter holds {share_:.0%} of the positive attribution" if share_ is not None else "")
                     + ".")
    if choice is not None:
        d = choice.result
        how = "zero-ablated" if d.c == 0 else f"activations × {d.c:g}"
        parts.append(f"Chosen on {d.n_refused} of {d.n_val} harmful_val prompts the model refuses: <b>K* = {d.k}, "
                     f"c = {d.c:g}</b> ({how})"
                     + ("" if d.met else " — <b>no (K, c) met the rule</b>; the best margin over the random sets is "
                        "shown") + ".")
    if greedy is not None:
        d = greedy.result
        kept = d.minimal.items
        parts.append(f"Greedy filtering keeps <b>{len(kept)} of {len(d.start)}</b> features (tau {d.tau:g})"
                     + (f": {esc(feature_list(kept))}." if kept else ": no feature is kept by every order (the minimal "
                        "set is empty; its rows below are the unclamped model)."))
    return "<p class='lead'>" + " ".join(parts) + "</p>" if parts else ""


# --- held-out comparison table ------------------------------------------------------------------------------------
def _comparison_figures(rows: list, ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    names = [r.name for r in rows][::-1]
    rates = [share(r.complied, r.n) for r in rows][::-1]
    colors = [ROW_COLOR.get(n, "#d0d7de" if n.startswith("random") else "#8c959f") for n in names]
    fig = go.Figure(go.Bar(x=rates, y=names, orientation="h", marker_color=colors, name="complied",
                           error_x=bars(rates, [r.complied_ci for r in rows][::-1]),
                           hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    for r in rows:
        if r.draws:
            fig.add_trace(go.Scatter(x=r.draws, y=[r.name] * len(r.draws), mode="markers", showlegend=False,
                                     marker=dict(size=7, color="#57606a", symbol="diamond-open"),
                                     hovertemplate="one random draw: %{x:.3f}<extra></extra>"))
    fig.update_layout(title="complied on held-out refused prompts (95% Wilson CI; ◇ each random draw)",
                      xaxis_title="complied rate", xaxis_range=[0, 1.05], showlegend=False,
                      yaxis=dict(automargin=True), margin=dict(l=170))
    figs = [ctx.figure(fig, height=60 + 30 * len(rows))]
    cost = [r for r in rows if r.harmless_kl is not None]
    if cost:
        fig = go.Figure()
        for r in cost:
            fig.add_trace(go.Scatter(x=[r.harmless_kl], y=[share(r.complied, r.n)], mode="markers+text", text=[r.name],
                                     textposition="top center", textfont=dict(size=10), cliponaxis=False,
                                     marker=dict(size=11, color=ROW_COLOR.get(r.name, "#8c959f")), name=r.name,
                                     hovertemplate=f"{esc(r.name)}<br>KL %{{x:.4f}}<br>complied %{{y:.3f}}<extra></extra>"))
        top = max(r.harmless_kl for r in cost) or 1.0
        fig.update_xaxes(range=[-0.15 * top, 1.15 * top])
        fig.update_layout(title="effect vs capability cost", xaxis_title="KL on harmless answers (lower = cheaper)",
                          yaxis_title="complied rate (held out)", yaxis_range=[-0.05, 1.1], showlegend=False)
        figs.append(ctx.figure(fig, height=60 + 30 * len(rows)))
    return "<div class='grid'>" + "".join(figs) + "</div>"


def _comparison(v: ResultView, ctx: ReportContext) -> str:
    d = v.result
    head = ["row", "features", "n", "complied [95% CI]", "degenerate [95% CI]", "refused", "harmless KL",
            "harmless refused [95% CI]", "what"]
    body = []
    for r in d.rows:
        hr = "–" if r.harmless_refused is None else rate_ci(r.harmless_refused, r.harmless_n)
        what = esc(r.what) + (f" <span class='note'>(per draw: {', '.join(f'{x:.2f}' for x in r.draws)})</span>"
                              if r.draws else "")
        body.append([f"<b>{esc(r.name)}</b>" if r.name.startswith("ours") else esc(r.name), num(r.n_features, "g"),
                     str(r.n), rate_ci(r.complied, r.n), rate_ci(r.degenerate, r.n), f"{share(r.refused, r.n):.3f}",
                     num(r.harmless_kl, ".4f"), hr, what])
    out = [f"<h3>Held out: {esc(', '.join(d.datasets))}</h3>"
           f"<p class='lead'>The {d.n_refused} of {d.n_total} held-out prompts the unclamped model refuses (judged), "
           f"each row clamping at c = {d.c:g} (the ablation row ablates the direction instead); K* = {d.k}. Random "
           f"rows pool their draws (n = draws × prompts). Capability cost on harmless_test: KL of the next-token "
           f"distributions over the clean model's own answers, and over-refusal.</p>",
           table(head, body, num_from=1, num_to=8), _comparison_figures(d.rows, ctx)]
    if d.paired:
        prow = [[esc(p.a), esc(p.b), str(p.n), str(p.complied_a), str(p.complied_b), str(p.only_a), str(p.only_b),
                 num(p.p_value, ".3g")] for p in d.paired]
        out.append("<h3>Paired on the same prompts (McNemar exact)</h3>"
                   + table(["A", "B", "n", "complied A", "complied B", "only A", "only B", "p"], prow, num_from=2))
    return "".join(out)


# --- the K* × c choice ---------------------------------------------------------------------------------------------
def _grid(d, ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    ks, cs = sorted({r.k for r in d.rows}), sorted({r.c for r in d.rows}, key=lambda c: (abs(c), c))
    cell = {(r.k, r.c): r for r in d.rows}
    z, text = [], []
    for c in cs:
        rs = [cell.get((k, c)) for k in ks]
        z.append([None if r is None else share(r.complied, r.n) for r in rs])
        text.append(["" if r is None else f"{r.complied}/{r.n} complied<br>{r.degenerate} degenerate<br>" + (
            f"random flip {r.random_flip:.2f}" if r.random_flip is not None else
            f"degenerate > {d.degenerate_bound:g}" if r.eligible is False else "controls not needed") for r in rs])
    fig = go.Figure(go.Heatmap(z=z, x=[str(k) for k in ks], y=[f"{c:g}" for c in cs], text=text,
                               texttemplate="%{text}", textfont=dict(size=10), hoverinfo="text", colorscale="Reds",
                               zmin=0, zmax=1, colorbar=dict(title="complied", thickness=12)))
    bad = [r for r in d.rows if r.eligible is False]
    if bad:
        fig.add_trace(go.Scatter(x=[str(r.k) for r in bad], y=[f"{r.c:g}" for r in bad], mode="markers",
                                 marker=dict(symbol="x-thin", size=26, line=dict(width=2, color="rgba(0,0,0,0.3)")),
                                 hoverinfo="skip", name="not eligible"))
    fig.add_trace(go.Scatter(x=[str(d.k)], y=[f"{d.c:g}"], mode="markers", hoverinfo="skip", name="chosen",
                             marker=STAR | dict(size=18)))
    fig.update_layout(title="K* × c grid on harmful_val (★ chosen, × not eligible)", xaxis_title="K (features clamped)",
                      yaxis_title="clamp c", showlegend=False, xaxis_type="category", yaxis_type="category")
    return ctx.figure(fig, height=320)


def _flip_curves(d, limit: float | None, ctx: ReportContext) -> str:
    """Complied rate against K for each clamp, beside what random sets of the same size flip."""
    import plotly.graph_objects as go

    ks, cs = sorted({r.k for r in d.rows}), sorted({r.c for r in d.rows}, key=lambda c: (abs(c), c))
    fig = go.Figure()
    palette = ["#cf222e", "#0969da", "#8250df", "#1a7f37", "#bf8700"]
    for i, c in enumerate(cs):
        pts = sorted((r for r in d.rows if r.c == c), key=lambda r: r.k)
        col = palette[i % len(palette)]
        rates = [share(r.complied, r.n) for r in pts]
        fig.add_trace(go.Scatter(x=[r.k for r in pts], y=rates, mode="lines+markers", name=f"ours, c={c:g}",
                                 line=dict(color=col), error_y=bars(rates, [wilson(r.complied, r.n) for r in pts])))
        fig.add_trace(go.Scatter(x=[r.k for r in pts], y=[share(r.degenerate, r.n) for r in pts],
                                 mode="lines", name=f"degenerate, c={c:g}", line=dict(color=col, dash="dash", width=1),
                                 opacity=0.6, visible="legendonly" if len(cs) > 3 else True))
        rnd = [r for r in pts if r.random_flip is not None]
        if rnd:
            fig.add_trace(go.Scatter(x=[r.k for r in rnd], y=[r.random_flip for r in rnd], mode="markers",
                                     name=f"random sets, c={c:g}", line=dict(color=col, dash="dot"),
                                     marker=dict(symbol="diamond-open", size=10, color=col)))
    if limit is not None:
        fig.add_hline(y=limit, line_dash="dot", line_color="#888", annotation_text=f"random-flip bound {limit:g}",
                      annotation_position="top left")
    fig.add_hline(y=d.degenerate_bound, line_dash="dash", line_color="#bf8700", line_width=1,
                  annotation_text=f"degenerate bound {d.degenerate_bound:g}", annotation_position="top right")
    fig.update_xaxes(tickmode="array", tickvals=ks)
    fig.update_layout(title="flip curves: complied vs K (95% Wilson CI), degenerate (dashed), random sets (◇)",
                      xaxis_title="K", yaxis_title="complied rate", yaxis_range=[-0.02, 1.05],
                      legend=dict(orientation="h", y=-0.25))
    return ctx.figure(fig, height=340)


def _choice(v: ResultView, ctx: ReportContext) -> str:
    d, cfg = v.result, v.settings
    note = (f"<p class='note'>Each cell: the top K of the attribution ranking clamped at c, greedy answers to the "
            f"{d.n_refused} validation prompts the model refuses, judged ({esc(cfg.judge or '?')}). Rule: "
            f"{esc(d.rule)}. Random controls ({esc(cfg.n_random or '?')} sets of the same per-layer sizes, same "
            f"clamp) run in ranking order until a cell passes; cells without them could not change the choice."
            + ("" if any(r.random_flip is not None for r in d.rows) else
               " <b>No random control ran: every cell failed the degenerate bound first</b>, so the chosen cell is the "
               "one with the most complied answers, unchecked against random sets (the held-out table's random rows "
               "are then the only control).")
            + "</p>")
    return ("<h3>Choosing K* and c (validation)</h3><div class='grid'>" + _grid(d, ctx)
            + _flip_curves(d, cfg.max_random_flip, ctx) + "</div>" + note)


# --- greedy --------------------------------------------------------------------------------------------------------
def _greedy_figure(d, ctx: ReportContext) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=["prompts flipped (refusal score < 0)", "mean refusal score"])
    for t in d.traces:
        sizes = [p.size for p in t.path]
        name = f"seed {t.seed}, tau {t.tau:g}"
        dash = "solid" if t.tau == d.tau else "dot"
        fig.add_trace(go.Scatter(x=sizes, y=[p.flipped for p in t.path], mode="lines+markers", name=name,
                                 line=dict(dash=dash), legendgroup=name), 1, 1)
        fig.add_trace(go.Scatter(x=sizes, y=[p.score for p in t.path], mode="lines+markers", name=name,
                                 line=dict(dash=dash), legendgroup=name, showlegend=False), 1, 2)
    sizes = sorted({p.size for t in d.traces for p in t.path})
    ticks = dict(tickmode="array", tickvals=sizes) if len(sizes) <= 12 else {}
    for col in (1, 2):
        fig.update_xaxes(title_text="features still clamped", autorange="reversed", row=1, col=col, **ticks)
    fig.update_yaxes(range=[-0.02, 1.05], row=1, col=1)
    fig.update_layout(title=f"greedy pruning of the K* = {len(d.start)} set (solid: the chosen tau, "
                            f"{d.tau:g}; dotted: the tau sweep)", legend=dict(orientation="h", y=-0.3))
    return ctx.figure(fig, height=360)


def _greedy(v: ResultView, ctx: ReportContext, cosine: dict[str, float]) -> str:
    d = v.result
    crow = []
    for name, fs in (("full", d.start), ("minimal", d.minimal)):
        cnt = d.confirm.get(name)
        if cnt:
            n = sum(cnt.values())
            crow.append([esc(f"{name} ({len(fs)} features)"), str(n), rate_ci(cnt.get(COMPLIED, 0), n),
                         rate_ci(cnt.get(DEGENERATE, 0), n)])
    sweep = [[num(r.tau, "g"), str(r.size), num(r.score), num(r.flipped)] for r in typed(list[TauRow], d.tau_sweep)]
    linked = bool(ctx.links.by_layer)  # a Neuronpedia column where the run's SAEs have pages there
    minimal = [[f"L{L}", str(f), num(cosine.get(f"{L}:{f}")), *([ctx.links.link(f, layer=L) or "–"] if linked else [])]
               for L, f in d.minimal]
    tables = ("<div class='grid3'>"
              "<div><h4>judged confirmation on harmful_val</h4>"
              + table(["set", "n", "complied [95% CI]", "degenerate [95% CI]"], crow)
              + f"<p class='note'>minimal / full complied: {num(d.kept_flip_ratio, '.2f')}</p></div>"
              + "<div><h4>tau sweep (seed 0)</h4>" + table(["tau", "kept", "score", "flipped"], sweep, num_from=0) + "</div>"
              + "<div><h4>minimal set</h4>" + (table(["layer", "feature", "decoder cos", *(["Neuronpedia"] if linked else [])],
                                                     minimal, num_to=3) if minimal else "<p class='note'>empty</p>")
              + "</div></div>")
    return ("<h3>Greedy minimal set</h3><p class='note'>Blocks, then single features, are dropped when the mean refusal "
            "score (over the attribution prompts, the rest still clamped) moves by at most tau; the minimal set is "
            "what every seeded order keeps.</p>" + _greedy_figure(d, ctx) + tables)


# --- rankings by layer ----------------------------------------------------------------------------------------------
def _rankings(d, k: int | None, ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    k = k or max(len(d.ours), 1)
    fig = go.Figure()
    for fs, name, color in ((d.ours, "ours (prefilter + LA-IG)", COLORS[COMPLIED]), (d.cossim, "CosSim", "#57606a"),
                            (d.actdiff, "ActDiff", "#1a7f37"), (d.ap, "AP", "#8250df")):
        counts = fs.take(k).layer_counts()
        fig.add_trace(go.Bar(x=[str(L) for L in d.layers], y=[counts.get(L, 0) for L in d.layers], name=name,
                             marker_color=color))
    fig.update_layout(barmode="group", title=f"where each ranking's top {k} features sit", xaxis_title="SAE layer",
                      yaxis_title="features", legend=dict(orientation="h", y=-0.25))
    return ctx.figure(fig, height=320)


# --- before / after ------------------------------------------------------------------------------------------------
def _examples(v: ResultView, ctx: ReportContext) -> str:
    if ctx.examples <= 0:
        return ""
    by_prompt: dict[str, dict[str, Answer]] = defaultdict(dict)
    for g in typed(list[Answer], v.result.generations):
        by_prompt[g.instruction][g.row] = g
    cols = [c for c in BEFORE_AFTER if any(c in rows for rows in by_prompt.values())]
    if len(cols) < 2:
        return ""
    prompts = [p for p, rows in by_prompt.items() if all(c in rows for c in cols)]
    # prompts the global set flips first (then the rest), in table order
    prompts.sort(key=lambda p: getattr(by_prompt[p].get(OURS), "judgement", None) != COMPLIED)
    body = [f"<tr><td class='prompt'>{esc(p)}</td>"
            + "".join(answer_cell(by_prompt[p][c].judgement, by_prompt[p][c].completion) for c in cols) + "</tr>"
            for p in prompts[: ctx.examples]]
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    return ("<h3>Example generations before / after (held out)</h3><p class='note'>Greedy answers to held-out prompts "
            "the model refuses, unclamped (before) and under each intervention, with the judge's label; prompts the "
            f"global set flips first. All {len(by_prompt)} prompts with every row are in "
            f"<code>{esc(v.name)}/generations.jsonl</code>.</p>"
            f"<table><tr><th>prompt</th>{head}</tr>{''.join(body)}</table>")


def render_search(views: list[ResultView], ctx: ReportContext) -> str:
    cands, choice = _one(views, "search_candidates"), _one(views, "search_choice")
    greedy, tab = _one(views, "search_greedy"), _one(views, "search_table")
    cards = ctx.one("search_cards")
    out = [_lead(cands, choice, greedy)]
    if tab is not None:
        out.append(_comparison(tab, ctx))
    elif choice is not None:
        out.append("<p class='note'>The held-out comparison table is the <code>search_table</code> stage (not run "
                   "in this run directory).</p>")
    if choice is not None:
        out.append(_choice(choice, ctx))
    if greedy is not None:
        out.append(_greedy(greedy, ctx, cards.cosine if cards is not None else {}))
    if cands is not None:
        out.append("<h3>Candidate rankings</h3>" + _rankings(cands.result, choice.result.k if choice else None, ctx))
    if tab is not None:
        out.append(_examples(tab, ctx))
    return "".join(out)


# --- findings -------------------------------------------------------------------------------------------------------
def _complied(r) -> str:
    return rate(r.complied, r.n, r.complied_ci)


def summarize_search(views: list[ResultView], ctx: ReportContext) -> list[Finding]:
    choice, greedy, tab = (ctx.one(k) for k in ("search_choice", "search_greedy", "search_table"))
    out = []
    if choice is not None:
        row = next((r for r in choice.rows if (r.k, r.c) == (choice.k, choice.c)), None)
        rnd = ("–" if row is None else f"random sets of the same sizes: flip {row.random_flip:.2f}"
               if row.random_flip is not None else "no random control ran for this cell")
        out.append(Finding(f"K* = {choice.k}, c = {choice.c:g} chosen on {choice.n_refused} refused validation prompts"
                           + ("" if choice.met else " (no cell met the rule)"),
                           "complied " + (rate(row.complied, row.n) if row is not None else "–"), rnd))
    if greedy is not None:
        full, minimal = (greedy.confirm.get(name) or {} for name in ("full", "minimal"))
        out.append(Finding(f"greedy minimal set: <b>{len(greedy.minimal)} of {len(greedy.start)}</b> features "
                           f"(tau {greedy.tau:g}), validation complied", rate(minimal.get(COMPLIED, 0), sum(minimal.values())),
                           f"the full K* set: {rate(full.get(COMPLIED, 0), sum(full.values()))}"))
    rows = {r.name: r for r in tab.rows} if tab is not None else {}
    for name in (OURS, MINIMAL):
        if name in rows:
            beside = [f"{esc(c)}: {_complied(rows[c])}" for c in CONTROLS[name] if c in rows]
            out.append(Finding(f"held out ({esc(', '.join(tab.datasets))}): {esc(name)} ({num(rows[name].n_features, 'g')} "
                               "features) complied", _complied(rows[name]),
                               "; ".join([*beside, "unclamped: 0 (refused by selection)"])))
    return out


register_section(SectionSpec("search", "Feature search: comparison with CIs, flip curves", KINDS, "search",
                             render_search, summarize_search))
