"""The report's dormant-features section (stages 4–5, :mod:`refusal_sae.search.dormant`): critical-but-silent members
of the found sets (beside the active members' rate, Wilson intervals), features newly active under the minimal set's
clamp by position kind (beside random clamps of the same per-layer sizes), and the rounds of re-search (complied per
round with Wilson intervals beside random sets of the same sizes).

Reads ``search/dormant/{silent,newly_active,rounds}`` as plain JSON.
"""

from __future__ import annotations

from refusal_sae.report.render import ReportContext, ResultView, SectionSpec, esc, register_section
from refusal_sae.report.search import _error_bars, _one, _rate_ci
from refusal_sae.report.sections import _f, _table, wilson

KINDS = ("dormant_silent", "dormant_newly_active", "dormant_rounds")
SILENT, ACTIVE, RANDOM = "#cf222e", "#57606a", "#8c959f"


def _feats(items: list) -> str:
    return ", ".join(f"L{L}:{f}" for L, f in items) or "–"


def _rate(k: int, n: int) -> tuple[float, tuple[float, float]]:
    return k / max(n, 1), wilson(k, n)


# --- critical-but-silent ------------------------------------------------------------------------------------------
def _silent(v: ResultView, ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    d = v.data
    rows, names = [], []
    rates = {"silent": [], "active": []}
    for s in d["summaries"]:
        mean = sum(s["critical_silent_per_prompt"]) / max(1, len(s["critical_silent_per_prompt"]))
        rows.append([esc(s["set_name"]), str(s["size"]), _rate_ci(s["n_flipped"], s["n_prompts"]),
                     str(s["silent_pairs"]), str(s["silent_critical_by_score"]),
                     _rate_ci(s["silent_critical"], s["silent_pairs"]), str(s["silent_critical_woken"]),
                     str(s["active_pairs"]), _rate_ci(s["active_critical"], s["active_pairs"]),
                     f"{s['prompts_with_critical_silent']} ({mean:.2f})", str(len(s["features"])), str(s["judged_pairs"])])
        names.append(s["set_name"])
        rates["silent"].append(_rate(s["silent_critical"], s["silent_pairs"]))
        rates["active"].append(_rate(s["active_critical"], s["active_pairs"]))
    fig = go.Figure()
    for key, color, what in (("silent", SILENT, "silent members"), ("active", ACTIVE, "active members (control)")):
        ys = [p for p, _ in rates[key]]
        fig.add_trace(go.Bar(x=names, y=ys, name=what, marker_color=color,
                             error_y=_error_bars(ys, [ci for _, ci in rates[key]]),
                             hovertemplate=f"{what}, %{{x}} set: %{{y:.3f}}<extra></extra>"))
    fig.update_layout(barmode="group", title="members whose removal restores refusal, per (flipped prompt, member) pair "
                                             "(95% Wilson CI)", xaxis_title="set", yaxis_title="critical share",
                      yaxis_range=[0, 1.05], legend=dict(orientation="h", y=-0.25))
    feats = [[esc(s["set_name"]), f"L{f['feature'][0]}:{f['feature'][1]}", str(f["prompts"])]
             for s in d["summaries"] for f in s["features"][:8]]
    screen = ("only the removals whose refusal score rises above "
              f"{d['label_threshold']:g} were judged, so the judged counts are lower bounds" if d["screen"] == "score"
              else "every removal was judged")
    lo, hi = wilson(0, len(d["prompts"]))
    return ("<h3>Critical but silent</h3>"
            f"<p class='lead'>On {len(d['prompts'])} held-out prompts the unclamped model refuses (complied 0 by "
            f"selection, 95% CI [{lo:.3f}, {hi:.3f}]), each set is clamped at c = {d['c']:g}; on the prompts it flips, "
            "every member is removed in turn. A member is <b>critical</b> when the answer without it is judged refused "
            "again, <b>silent</b> when its code is zero at every position of the unclamped prompt (<i>woken</i>: it "
            f"fires under the rest of the clamp); {screen}. Active members are the comparison.</p>"
            + _table(["set", "size", "flips [95% CI]", "silent pairs", "by score", "silent critical [95% CI]", "woken",
                      "active pairs", "active critical [95% CI]", "prompts with one (mean)", "features", "judged"],
                     rows, num_from=1)
            + "<div class='grid'>" + ctx.figure(fig, height=340)
            + ("<div><h4>Critical-but-silent features</h4>" + _table(["set", "feature", "prompts"], feats, num_from=2)
               + "</div>" if feats else "<div><p class='note'>No critical-but-silent member was found.</p></div>")
            + "</div>")


# --- newly active ------------------------------------------------------------------------------------------------
def _newly(v: ResultView, ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    d = v.data
    kinds, pos, m, rnd = d["kinds"], d["positions"], d["minimal"], d["random"]

    def per_pos(x: dict, kind: str) -> float:
        return x["events"][kind] / max(pos[kind], 1)

    fig = go.Figure(go.Bar(x=kinds, y=[per_pos(m, k) for k in kinds], name=f"minimal set ({m['size']} clamped)",
                           marker_color=SILENT, hovertemplate="%{x}: %{y:.2f} per position<extra></extra>"))
    if rnd:
        mean = [sum(per_pos(r, k) for r in rnd) / len(rnd) for k in kinds]
        fig.add_trace(go.Bar(x=kinds, y=mean, name=f"random sets of the same sizes (mean of {len(rnd)})",
                             marker_color=RANDOM, hovertemplate="%{x}: %{y:.2f} per position<extra></extra>"))
        fig.add_trace(go.Scatter(x=[k for _ in rnd for k in kinds], y=[per_pos(r, k) for r in rnd for k in kinds],
                                 mode="markers", name="each random set", marker=dict(symbol="diamond-open", size=9,
                                                                                     color=ACTIVE)))
    fig.update_layout(barmode="group", title="newly active features by position kind: firings per position",
                      xaxis_title="position kind", yaxis_title="newly active firings / position",
                      legend=dict(orientation="h", y=-0.25))
    rows = [[esc(k), str(pos[k]), str(m["events"][k]), _f(per_pos(m, k), ".2f"),
             _f(sum(r["events"][k] for r in rnd) / len(rnd), ".1f") if rnd else "–", str(m["pairs_by_first_kind"][k])]
            for k in kinds]
    r_pairs = sum(r["pairs"] for r in rnd) / len(rnd) if rnd else None
    r_sil = sum(r["silenced_pairs"] for r in rnd) / len(rnd) if rnd else None
    rows.append(["<b>all</b>", str(sum(pos.values())), str(sum(m["events"].values())), "",
                 _f(sum(sum(r["events"].values()) for r in rnd) / len(rnd), ".1f") if rnd else "–", str(m["pairs"])])
    tops = [[f"L{t['feature'][0]}:{t['feature'][1]}", str(t["prompts"]),
             esc(", ".join(f"{k} {n}" for k, n in sorted(t["kinds"].items(), key=lambda kv: -kv[1])))]
            for t in d.get("top_features", [])[:10]]
    per_layer = ", ".join(f"L{L}: {n}" for L, n in sorted(m["per_layer"].items(), key=lambda kv: int(kv[0])))
    return ("<h3>Newly active under the minimal set's clamp</h3>"
            f"<p class='lead'>Features of the searched SAEs that are zero at every position of the unclamped prompt and "
            f"fire under the clamp, on the same {d['n_prompts']} held-out prompts: <b>{m['pairs']}</b> (prompt, feature) "
            f"pairs vs {_f(r_pairs, '.1f')} under random clamps of the same per-layer sizes; silenced (the reverse): "
            f"{m['silenced_pairs']} vs {_f(r_sil, '.1f')}. By layer: {esc(per_layer)}.</p>"
            + "<div class='grid'>" + ctx.figure(fig, height=340)
            + "<div>" + _table(["position kind", "positions", "firings", "per position", "random (mean)",
                                "pairs first firing here"], rows, num_from=1)
            + ("<h4>Most often newly active</h4>" + _table(["feature", "prompts", "position kinds"], tops, num_from=1, num_to=2)
               if tops else "") + "</div></div>")


# --- rounds -------------------------------------------------------------------------------------------------------
def _rounds(v: ResultView, ctx: ReportContext) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    d = v.data
    rows = d["rows"]
    x = [r["round"] for r in rows]
    fig = make_subplots(rows=1, cols=2, subplot_titles=["complied on refused harmful_val (95% Wilson CI)",
                                                        "mean refusal score with the set clamped"])
    rates = [r["complied"] / max(r["val_n"], 1) for r in rows]
    fig.add_trace(go.Scatter(x=x, y=rates, mode="lines+markers", name="the set after each round",
                             line=dict(color=SILENT), error_y=_error_bars(rates, [tuple(r["complied_ci"]) for r in rows]),
                             text=[f"{r['size']} features" for r in rows],
                             hovertemplate="round %{x}: %{y:.3f} (%{text})<extra></extra>"), 1, 1)
    pooled = [(round(sum(r["random_complied"]) * r["val_n"]), len(r["random_complied"]) * r["val_n"]) for r in rows]
    if any(n for _, n in pooled):
        rr = [k / max(n, 1) for k, n in pooled]
        fig.add_trace(go.Scatter(x=x, y=rr, mode="lines+markers", name="random sets of the same sizes (pooled)",
                                 line=dict(color=RANDOM, dash="dot"),
                                 error_y=_error_bars(rr, [wilson(k, n) for k, n in pooled])), 1, 1)
        fig.add_trace(go.Scatter(x=[r["round"] for r in rows for _ in r["random_complied"]],
                                 y=[y for r in rows for y in r["random_complied"]], mode="markers",
                                 name="each random set", marker=dict(symbol="diamond-open", size=9, color=ACTIVE)), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=[r["train_score"] for r in rows], mode="lines+markers", name="training prompts",
                             line=dict(color="#0969da")), 1, 2)
    fig.add_trace(go.Scatter(x=x, y=[r["val_score"] for r in rows], mode="lines+markers", name="validation prompts",
                             line=dict(color="#0969da", dash="dash")), 1, 2)
    fig.add_hline(y=0, line_dash="dot", line_color="#888", row=1, col=2)
    fig.update_xaxes(title_text="round", tickvals=x)
    fig.update_yaxes(range=[-0.05, 1.05], row=1, col=1)
    fig.update_layout(title=f"rounds of re-search on top of the minimal set (stopped: {d['stopped']})",
                      legend=dict(orientation="h", y=-0.3))
    body = [[str(r["round"]), esc(_feats(r["added"]["items"])), str(r["size"]), str(r["candidates"]),
             _f(r["train_score"], "+.3f"), _f(r["train_flipped"], ".2f"), _f(r["val_score"], "+.3f"),
             _rate_ci(r["complied"], r["val_n"]), ", ".join(f"{y:.2f}" for y in r["random_complied"]) or "–",
             _rate_ci(r["degenerate"], r["val_n"])] for r in rows]
    n = rows[0]["val_n"] if rows else 0
    n_val = v.config.get("n_val")
    sample = f"{n_val} sampled" if n_val else "the search's validation sample"
    return ("<h3>Rounds of re-search</h3>"
            f"<p class='lead'>Round 0 is the minimal set; each later round finds LA-IG candidates again with the set "
            f"clamped, filters them greedily (the set still clamped) and adds what every order keeps. Judged on the "
            f"{n} harmful_val prompts the model refuses (of {sample}; unclamped: complied 0 by selection); training "
            f"scores on {d['n_train']} harmful_train prompts. Stopped: "
            f"{esc(d['stopped'])}; final set: {len(d['final']['items'])} features.</p>"
            + ctx.figure(fig, height=360)
            + _table(["round", "added", "size", "candidates", "train score", "train flipped", "val score",
                      "complied [95% CI]", "random (per set)", "degenerate [95% CI]"], body, num_from=2))


def render_dormant(views: list[ResultView], ctx: ReportContext) -> str:
    silent, newly, rounds = (_one(views, k) for k in KINDS)
    out = []
    if silent is not None:
        sets = "; ".join(f"{esc(n)} ({len(s['items'])}): {esc(_feats(s['items'][:12]))}"
                         + (" …" if len(s["items"]) > 12 else "") for n, s in silent.data["sets"].items())
        out.append(f"<p class='lead'>Refusal features that stay silent until the others are removed (Prakash et al.). "
                   f"Sets tested: {sets}.</p>")
        out.append(_silent(silent, ctx))
    if newly is not None:
        out.append(_newly(newly, ctx))
    if rounds is not None:
        out.append(_rounds(rounds, ctx))
    elif silent is not None or newly is not None:
        out.append("<p class='note'>No rounds of re-search in this run directory (<code>max_rounds: 0</code>).</p>")
    return "".join(out)


register_section(SectionSpec("dormant", "Dormant features: critical but silent, newly active, rounds", KINDS, "dormant",
                             render_dormant))
