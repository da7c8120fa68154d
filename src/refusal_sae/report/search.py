"""The report's feature-search section: the held-out comparison table with CIs and paired tests, the K* × c choice
grid and its flip curves beside the random controls, the greedy pruning (flip curves, tau sweep, minimal set, its
judged confirmation), and example generations before / after the clamps.

Reads the ``search/*`` results of :mod:`refusal_sae.search` as plain JSON (no torch, no model). Each part is drawn
when its result exists, so a run stopped after ``search`` (no ``search_table`` yet) still shows the choice and the
greedy set.
"""

from __future__ import annotations

from collections import defaultdict

from refusal_sae.report.render import ReportContext, ResultView, SectionSpec, esc, register_section
from refusal_sae.report.sections import COLORS, _badge, _f, _table, wilson

KINDS = ("search_candidates", "search_choice", "search_greedy", "search_table")
# row colours of the comparison: ours red, the ablation ceiling dark, baselines grey, random controls light
ROW_COLOR = {"direction ablation (AS)": "#24292f", "ours, global": "#cf222e", "ours, per-prompt": "#ff8182",
             "greedy minimal set": "#a40e26", "cosine prefilter alone": "#bf8700"}
BEFORE_AFTER = ("unclamped", "direction ablation (AS)", "ours, global", "greedy minimal set")


def _one(views: list[ResultView], kind: str) -> ResultView | None:
    return next((v for v in views if v.kind == kind), None)


def _features(items: list) -> str:
    return ", ".join(f"L{L}:{f}" for L, f in items)


def _error_bars(rates: list[float], cis: list[tuple[float, float]]) -> dict:
    """Plotly's asymmetric error bars for rates and their intervals."""
    return dict(type="data", symmetric=False, thickness=1.2, array=[hi - p for p, (_, hi) in zip(rates, cis, strict=True)],
                arrayminus=[p - lo for p, (lo, _) in zip(rates, cis, strict=True)])


def _rate_ci(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{k / max(n, 1):.3f} [{lo:.3f}, {hi:.3f}]"


# --- lead -----------------------------------------------------------------------------------------------------------
def _lead(cands: ResultView | None, choice: ResultView | None, greedy: ResultView | None) -> str:
    parts = []
    if cands is not None:
        d, cfg = cands.data, cands.config
        share = d.get("prefilter_attribution_share", {}).get(d["direction_source"])
        parts.append(f"Candidates: the {esc(cfg.get('k_per_layer', '?'))} features per layer whose decoder rows are "
                     f"closest to the refusal direction ({esc(d['direction_source'])}) at SAE layers "
                     f"{esc(', '.join(map(str, d['layers'])))}, ranked by LA-IG attribution ({esc(cfg.get('ig_steps', '?'))} "
                     f"steps) over {d['n_attribution']} harmful_train prompts"
                     + (f"; the prefilter holds {share:.0%} of the positive attribution" if share is not None else "") + ".")
    if choice is not None:
        d = choice.data
        how = "zero-ablated" if d["c"] == 0 else f"activations × {d['c']:g}"
        parts.append(f"Chosen on {d['n_refused']} of {d['n_val']} harmful_val prompts the model refuses: <b>K* = {d['k']}, "
                     f"c = {d['c']:g}</b> ({how})"
                     + ("" if d["met"] else " — <b>no (K, c) met the rule</b>; the best margin over the random sets is "
                        "shown") + ".")
    if greedy is not None:
        d = greedy.data
        kept = d["minimal"]["items"]
        parts.append(f"Greedy filtering keeps <b>{len(kept)} of {len(d['start']['items'])}</b> features (tau {d['tau']:g})"
                     + (f": {esc(_features(kept))}." if kept else ": no feature is kept by every order (the minimal "
                        "set is empty; its rows below are the unclamped model)."))
    return "<p class='lead'>" + " ".join(parts) + "</p>" if parts else ""


# --- held-out comparison table ------------------------------------------------------------------------------------
def _comparison(v: ResultView, ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    d = v.data
    rows = d["rows"]
    head = ["row", "features", "n", "complied [95% CI]", "degenerate [95% CI]", "refused", "harmless KL",
            "harmless refused [95% CI]", "what"]
    body = []
    for r in rows:
        hr = ("–" if r.get("harmless_refused") is None else _rate_ci(r["harmless_refused"], r["harmless_n"]))
        draws = r.get("draws") or []
        what = esc(r["what"]) + (f" <span class='note'>(per draw: {', '.join(f'{x:.2f}' for x in draws)})</span>"
                                 if draws else "")
        body.append([f"<b>{esc(r['name'])}</b>" if r["name"].startswith("ours") else esc(r["name"]),
                     _f(r["n_features"], "g"), str(r["n"]), _rate_ci(r["complied"], r["n"]),
                     _rate_ci(r["degenerate"], r["n"]), f"{r['refused'] / max(r['n'], 1):.3f}",
                     _f(r.get("harmless_kl"), ".4f"), hr, what])
    out = [f"<h3>Held out: {esc(', '.join(d['datasets']))}</h3>"
           f"<p class='lead'>The {d['n_refused']} of {d['n_total']} held-out prompts the unclamped model refuses (judged), "
           f"each row clamping at c = {d['c']:g} (the ablation row ablates the direction instead); K* = {d['k']}. Random "
           f"rows pool their draws (n = draws × prompts). Capability cost on harmless_test: KL of the next-token "
           f"distributions over the clean model's own answers, and over-refusal.</p>",
           _table(head, body, num_from=1, num_to=8)]
    names = [r["name"] for r in rows][::-1]
    rates = [r["complied"] / max(r["n"], 1) for r in rows][::-1]
    cis = [tuple(r["complied_ci"]) for r in rows][::-1]
    colors = [ROW_COLOR.get(n, "#d0d7de" if n.startswith("random") else "#8c959f") for n in names]
    fig = go.Figure(go.Bar(x=rates, y=names, orientation="h", marker_color=colors, name="complied",
                           error_x=_error_bars(rates, cis),
                           hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    for r in rows:
        if r.get("draws"):
            fig.add_trace(go.Scatter(x=r["draws"], y=[r["name"]] * len(r["draws"]), mode="markers", showlegend=False,
                                     marker=dict(size=7, color="#57606a", symbol="diamond-open"),
                                     hovertemplate="one random draw: %{x:.3f}<extra></extra>"))
    fig.update_layout(title="complied on held-out refused prompts (95% Wilson CI; ◇ each random draw)",
                      xaxis_title="complied rate", xaxis_range=[0, 1.05], showlegend=False,
                      yaxis=dict(automargin=True), margin=dict(l=170))
    figs = [ctx.figure(fig, height=60 + 30 * len(rows))]
    cost = [r for r in rows if r.get("harmless_kl") is not None]
    if cost:
        fig = go.Figure()
        for r in cost:
            fig.add_trace(go.Scatter(x=[r["harmless_kl"]], y=[r["complied"] / max(r["n"], 1)], mode="markers+text",
                                     text=[r["name"]], textposition="top center", textfont=dict(size=10),
                                     cliponaxis=False,
                                     marker=dict(size=11, color=ROW_COLOR.get(r["name"], "#8c959f")), name=r["name"],
                                     hovertemplate=f"{esc(r['name'])}<br>KL %{{x:.4f}}<br>complied %{{y:.3f}}<extra></extra>"))
        top = max(r["harmless_kl"] for r in cost) or 1.0
        fig.update_xaxes(range=[-0.15 * top, 1.15 * top])
        fig.update_layout(title="effect vs capability cost", xaxis_title="KL on harmless answers (lower = cheaper)",
                          yaxis_title="complied rate (held out)", yaxis_range=[-0.05, 1.1], showlegend=False)
        figs.append(ctx.figure(fig, height=60 + 30 * len(rows)))
    out.append("<div class='grid'>" + "".join(figs) + "</div>")
    if d.get("paired"):
        prow = [[esc(p["a"]), esc(p["b"]), str(p["n"]), str(p["complied_a"]), str(p["complied_b"]), str(p["only_a"]),
                 str(p["only_b"]), _f(p["p_value"], ".3g")] for p in d["paired"]]
        out.append("<h3>Paired on the same prompts (McNemar exact)</h3>"
                   + _table(["A", "B", "n", "complied A", "complied B", "only A", "only B", "p"], prow, num_from=2))
    return "".join(out)


# --- the K* × c choice ---------------------------------------------------------------------------------------------
def _choice(v: ResultView, ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    d, cfg = v.data, v.config
    rows = d["rows"]
    ks = sorted({r["k"] for r in rows})
    cs = sorted({r["c"] for r in rows}, key=lambda c: (abs(c), c))
    cell = {(r["k"], r["c"]): r for r in rows}
    max_degenerate = cfg.get("max_degenerate")
    z, text = [], []
    for c in cs:
        zr, tr = [], []
        for k in ks:
            r = cell.get((k, c))
            zr.append(None if r is None else r["complied"] / max(r["n"], 1))
            if r is None:
                tr.append("")
                continue
            if r.get("random_flip") is not None:
                rnd = f"random flip {r['random_flip']:.2f}"
            elif r.get("eligible") is False:
                rnd = f"degenerate > {max_degenerate:g}" if max_degenerate is not None else "not eligible"
            else:
                rnd = "controls not needed"
            tr.append(f"{r['complied']}/{r['n']} complied<br>{r['degenerate']} degenerate<br>{rnd}")
        z.append(zr)
        text.append(tr)
    fig = go.Figure(go.Heatmap(z=z, x=[str(k) for k in ks], y=[f"{c:g}" for c in cs], text=text,
                               texttemplate="%{text}", textfont=dict(size=10), hoverinfo="text", colorscale="Reds",
                               zmin=0, zmax=1, colorbar=dict(title="complied", thickness=12)))
    bad = [r for r in rows if r.get("eligible") is False]
    if bad:
        fig.add_trace(go.Scatter(x=[str(r["k"]) for r in bad], y=[f"{r['c']:g}" for r in bad], mode="markers",
                                 marker=dict(symbol="x-thin", size=26, line=dict(width=2, color="rgba(0,0,0,0.3)")),
                                 hoverinfo="skip", name="not eligible"))
    fig.add_trace(go.Scatter(x=[str(d["k"])], y=[f"{d['c']:g}"], mode="markers", hoverinfo="skip", name="chosen",
                             marker=dict(symbol="star", size=18, color="#ffd33d", line=dict(width=1.5, color="black"))))
    fig.update_layout(title="K* × c grid on harmful_val (★ chosen, × not eligible)", xaxis_title="K (features clamped)",
                      yaxis_title="clamp c", showlegend=False, xaxis_type="category", yaxis_type="category")
    heat = ctx.figure(fig, height=320)
    # flip curves: complied rate against K for each clamp, beside what random sets of the same size flip
    fig = go.Figure()
    palette = ["#cf222e", "#0969da", "#8250df", "#1a7f37", "#bf8700"]
    for i, c in enumerate(cs):
        pts = [cell[(k, c)] for k in ks if (k, c) in cell]
        col = palette[i % len(palette)]
        rates = [r["complied"] / max(r["n"], 1) for r in pts]
        cis = [wilson(r["complied"], r["n"]) for r in pts]
        fig.add_trace(go.Scatter(x=[r["k"] for r in pts], y=rates, mode="lines+markers", name=f"ours, c={c:g}",
                                 line=dict(color=col),
                                 error_y=_error_bars(rates, cis)))
        fig.add_trace(go.Scatter(x=[r["k"] for r in pts], y=[r["degenerate"] / max(r["n"], 1) for r in pts],
                                 mode="lines", name=f"degenerate, c={c:g}", line=dict(color=col, dash="dash", width=1),
                                 opacity=0.6, visible="legendonly" if len(cs) > 3 else True))
        rnd = [r for r in pts if r.get("random_flip") is not None]
        if rnd:
            fig.add_trace(go.Scatter(x=[r["k"] for r in rnd], y=[r["random_flip"] for r in rnd], mode="markers",
                                     name=f"random sets, c={c:g}", line=dict(color=col, dash="dot"),
                                     marker=dict(symbol="diamond-open", size=10, color=col)))
    limit = cfg.get("max_random_flip")
    if limit is not None:
        fig.add_hline(y=limit, line_dash="dot", line_color="#888", annotation_text=f"random-flip bound {limit:g}",
                      annotation_position="top left")
    if max_degenerate is not None:
        fig.add_hline(y=max_degenerate, line_dash="dash", line_color="#bf8700", line_width=1,
                      annotation_text=f"degenerate bound {max_degenerate:g}", annotation_position="top right")
    fig.update_xaxes(tickmode="array", tickvals=ks)
    fig.update_layout(title="flip curves: complied vs K (95% Wilson CI), degenerate (dashed), random sets (◇)",
                      xaxis_title="K",
                      yaxis_title="complied rate", yaxis_range=[-0.02, 1.05], legend=dict(orientation="h", y=-0.25))
    curves = ctx.figure(fig, height=340)
    note = (f"<p class='note'>Each cell: the top K of the attribution ranking clamped at c, greedy answers to the "
            f"{d['n_refused']} validation prompts the model refuses, judged ({esc(cfg.get('judge', '?'))}). Rule: "
            f"{esc(d['rule'])}. Random controls ({esc(cfg.get('n_random', '?'))} sets of the same per-layer sizes, same "
            f"clamp) run in ranking order until a cell passes; cells without them could not change the choice."
            + ("" if any(r.get("random_flip") is not None for r in rows) else
               " <b>No random control ran: every cell failed the degenerate bound first</b>, so the chosen cell is the "
               "one with the most complied answers, unchecked against random sets (the held-out table's random rows "
               "are then the only control).")
            + "</p>")
    return "<h3>Choosing K* and c (validation)</h3><div class='grid'>" + heat + curves + "</div>" + note


# --- greedy --------------------------------------------------------------------------------------------------------
def _greedy(v: ResultView, ctx: ReportContext, cosine: dict[str, float]) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    d = v.data
    fig = make_subplots(rows=1, cols=2, subplot_titles=["prompts flipped (refusal score < 0)", "mean refusal score"])
    for t in d["traces"]:
        sizes = [p["size"] for p in t["path"]]
        name = f"seed {t['seed']}, tau {t['tau']:g}"
        dash = "solid" if t["tau"] == d["tau"] else "dot"
        fig.add_trace(go.Scatter(x=sizes, y=[p["flipped"] for p in t["path"]], mode="lines+markers", name=name,
                                 line=dict(dash=dash), legendgroup=name), 1, 1)
        fig.add_trace(go.Scatter(x=sizes, y=[p["score"] for p in t["path"]], mode="lines+markers", name=name,
                                 line=dict(dash=dash), legendgroup=name, showlegend=False), 1, 2)
    sizes = sorted({p["size"] for t in d["traces"] for p in t["path"]})
    ticks = dict(tickmode="array", tickvals=sizes) if len(sizes) <= 12 else {}
    for col in (1, 2):
        fig.update_xaxes(title_text="features still clamped", autorange="reversed", row=1, col=col, **ticks)
    fig.update_yaxes(range=[-0.02, 1.05], row=1, col=1)
    fig.update_layout(title=f"greedy pruning of the K* = {len(d['start']['items'])} set (solid: the chosen tau, "
                            f"{d['tau']:g}; dotted: the tau sweep)", legend=dict(orientation="h", y=-0.3))
    conf = d.get("confirm") or {}
    crow = []
    for name in ("full", "minimal"):
        cnt = conf.get(name)
        if cnt:
            n = sum(cnt.values())
            crow.append([esc(f"{name} ({len(d['start' if name == 'full' else 'minimal']['items'])} features)"), str(n),
                         _rate_ci(cnt.get("complied", 0), n), _rate_ci(cnt.get("degenerate", 0), n)])
    sweep = [[_f(r["tau"], "g"), str(r["size"]), _f(r["score"]), _f(r["flipped"])] for r in d.get("tau_sweep", [])]
    minimal = [[f"L{L}", str(f), _f(cosine.get(f"{L}:{f}"))] for L, f in d["minimal"]["items"]]
    tables = ("<div class='grid3'>"
              "<div><h4>judged confirmation on harmful_val</h4>"
              + _table(["set", "n", "complied [95% CI]", "degenerate [95% CI]"], crow)
              + f"<p class='note'>minimal / full complied: {_f(d.get('kept_flip_ratio'), '.2f')}</p></div>"
              + "<div><h4>tau sweep (seed 0)</h4>" + _table(["tau", "kept", "score", "flipped"], sweep, num_from=0) + "</div>"
              + "<div><h4>minimal set</h4>" + (_table(["layer", "feature", "decoder cos"], minimal) if minimal
                                                 else "<p class='note'>empty</p>") + "</div></div>")
    return ("<h3>Greedy minimal set</h3><p class='note'>Blocks, then single features, are dropped when the mean refusal "
            "score (over the attribution prompts, the rest still clamped) moves by at most tau; the minimal set is "
            "what every seeded order keeps.</p>" + ctx.figure(fig, height=360) + tables)


# --- rankings by layer ----------------------------------------------------------------------------------------------
def _rankings(v: ResultView, k: int | None, ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    d = v.data
    k = k or max(len(d["ours"]["items"]), 1)
    layers = d["layers"]
    fig = go.Figure()
    for key, name, color in (("ours", "ours (prefilter + LA-IG)", COLORS["complied"]), ("cossim", "CosSim", "#57606a"),
                             ("actdiff", "ActDiff", "#1a7f37"), ("ap", "AP", "#8250df")):
        items = d[key]["items"][:k]
        fig.add_trace(go.Bar(x=[str(L) for L in layers], y=[sum(1 for L2, _ in items if L2 == L) for L in layers],
                             name=name, marker_color=color))
    fig.update_layout(barmode="group")
    fig.update_layout(title=f"where each ranking's top {k} features sit", xaxis_title="SAE layer", yaxis_title="features",
                      legend=dict(orientation="h", y=-0.25))
    return ctx.figure(fig, height=320)


# --- before / after ------------------------------------------------------------------------------------------------
def _examples(v: ResultView, ctx: ReportContext) -> str:
    if ctx.examples <= 0:
        return ""
    by_prompt: dict[str, dict[str, dict]] = defaultdict(dict)
    for g in v.rows("generations"):
        by_prompt[g["instruction"]][g["row"]] = g
    cols = [c for c in BEFORE_AFTER if any(c in rows for rows in by_prompt.values())]
    if len(cols) < 2:
        return ""
    prompts = [p for p, rows in by_prompt.items() if all(c in rows for c in cols)]
    # prompts the global set flips first (then the rest), in table order
    prompts.sort(key=lambda p: by_prompt[p].get("ours, global", {}).get("judgement") != "complied")
    body = []
    for p in prompts[: ctx.examples]:
        cells = "".join(f"<td>{_badge(by_prompt[p][c]['judgement'])}<div class='gen'>{esc(by_prompt[p][c]['completion'])}"
                        "</div></td>" for c in cols)
        body.append(f"<tr><td class='prompt'>{esc(p)}</td>{cells}</tr>")
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    return ("<h3>Example generations before / after (held out)</h3><p class='note'>Greedy answers to held-out prompts "
            "the model refuses, unclamped (before) and under each intervention, with the judge's label; prompts the "
            f"global set flips first. All {len(by_prompt)} prompts with every row are in "
            f"<code>{esc(v.name)}/generations.jsonl</code>.</p>"
            f"<table><tr><th>prompt</th>{head}</tr>{''.join(body)}</table>")


def render_search(views: list[ResultView], ctx: ReportContext) -> str:
    cands, choice = _one(views, "search_candidates"), _one(views, "search_choice")
    greedy, table = _one(views, "search_greedy"), _one(views, "search_table")
    cards = next((v for v in ctx.views if v.kind == "search_cards"), None)
    cosine = dict(cards.data.get("cosine") or {}) if cards is not None else {}
    out = [_lead(cands, choice, greedy)]
    if table is not None:
        out.append(_comparison(table, ctx))
    elif choice is not None:
        out.append("<p class='note'>The held-out comparison table is the <code>search_table</code> stage (not run "
                   "in this run directory).</p>")
    if choice is not None:
        out.append(_choice(choice, ctx))
    if greedy is not None:
        out.append(_greedy(greedy, ctx, cosine))
    if cands is not None:
        out.append("<h3>Candidate rankings</h3>" + _rankings(cands, choice.data["k"] if choice else None, ctx))
    if table is not None:
        out.append(_examples(table, ctx))
    return "".join(out)


register_section(SectionSpec("search", "Feature search: comparison with CIs, flip curves", KINDS, "search",
                             render_search))
