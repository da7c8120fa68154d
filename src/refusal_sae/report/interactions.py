"""The report's interactions section (stage 3, :mod:`refusal_sae.search.interactions`): the factorization machine
against the linear probe (held-out accuracy and AUC with bootstrap intervals, beside the majority-class rate and
chance), the FM's interaction heatmap of its top features, the top interacting pairs, and the K sweep (FM top-K vs
probe top-K vs random sets of the same size, complied with Wilson intervals, beside the unclamped model and the
minimal set).

Reads ``search/heldout`` and ``search/interactions/{data,fm,ksweep}`` as plain JSON; the heatmap matrix is a tensor
(``search/interactions/fm/tensors.safetensors``), read with safetensors' numpy loader (no torch).
"""

from __future__ import annotations

from refusal_sae.report.render import ReportContext, ResultView, SectionSpec, esc, register_section
from refusal_sae.report.search import _error_bars, _one, _rate_ci
from refusal_sae.report.sections import _f, _table, wilson

KINDS = ("interactions_data", "interactions_fm", "interactions_ksweep")
MODELS = ("FM", "linear probe")
MODEL_COLOR = {"FM": "#cf222e", "linear probe": "#0969da", "random": "#8c959f", "minimal set": "#a40e26"}
SPLITS = ("train", "val", "test")


def _feat(x) -> str:
    return f"L{x[0]}:{x[1]}"


def _ci(m: dict, fmt: str = ".3f") -> str:
    lo, hi = m["ci"]
    return f"{_f(m['value'], fmt)} [{_f(lo, fmt)}, {_f(hi, fmt)}]"


def _safe_bars(vals: list, cis: list) -> dict:
    """Error bars for values and intervals that may be missing (``None``: a metric undefined on one class)."""
    ok = [v is not None and None not in ci for v, ci in zip(vals, cis, strict=True)]
    return _error_bars([v if good else 0.0 for v, good in zip(vals, ok, strict=True)],
                       [tuple(ci) if good else (0.0, 0.0) for ci, good in zip(cis, ok, strict=True)])


def tensor(view: ResultView, name: str) -> list | None:
    """One tensor of a result's ``tensors.safetensors`` as nested lists (``None`` when absent)."""
    path = view.folder / "tensors.safetensors"
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return f.get_tensor(name).tolist() if name in f.keys() else None


# --- lead and rows ----------------------------------------------------------------------------------------------
def _lead(data: ResultView | None, heldout: ResultView | None) -> str:
    parts = []
    if data is not None:
        d = data.data
        n_min, n_pool = len(d["minimal"]["items"]), len(d["pool"]["items"])
        parts.append(f"Inputs: each pool feature's SAE code, <b>{esc(d['reduce'])} over the post-instruction tokens</b>; "
                     f"label: refused ⇔ refusal score &gt; {d['label_threshold']:g}. Each prompt enters twice: unclamped "
                     f"and with the search's minimal set ({n_min} features) clamped at c = {d['c']:g}. Pool: <b>{n_pool} "
                     f"features</b> = the minimal set + the {n_pool - n_min} that fire on the most harmful training "
                     f"prompts under its clamp (of {d['n_active']} firing at SAE layers "
                     f"{esc(', '.join(map(str, d['layers'])))}).")
    if heldout is not None:
        h = heldout.data
        parts.append(f"Held out: the <b>{len(h['refused'])} of {h['n_total']}</b> prompts of "
                     f"{esc(', '.join(h['datasets']))} the unclamped model refuses ({esc(h['source'])}); no fit or "
                     "choice reads them.")
    return "<p class='lead'>" + " ".join(parts) + "</p>" if parts else ""


def _balance(data: ResultView) -> str:
    rows = []
    for s in SPLITS:
        b = data.data["balance"].get(s)
        if not b:
            continue
        rows.append([s, str(len(data.data["prompts"][s])), str(b["rows"]), _rate_ci(b["refused"], b["rows"]),
                     f"{b['harmful_clean_refused']} / {b['n_harmful']}", f"{b['harmful_clamped_refused']} / {b['n_harmful']}",
                     f"{b['harmless_clean_refused']} / {b['n_harmless']}",
                     f"{b['harmless_clamped_refused']} / {b['n_harmless']}"])
    return ("<h4>Rows and labels</h4>"
            + _table(["split", "prompts", "rows", "refused [95% CI]", "harmful, unclamped", "harmful, clamped",
                      "harmless, unclamped", "harmless, clamped"], rows))


def _majority(data: ResultView | None, split: str) -> float | None:
    """Accuracy of always predicting the split's more frequent label: the accuracy's chance control."""
    b = (data.data["balance"].get(split) if data is not None else None) or {}
    return max(b["refused"], b["rows"] - b["refused"]) / b["rows"] if b.get("rows") else None


# --- FM vs probe ------------------------------------------------------------------------------------------------
def _models(fm: ResultView, data: ResultView | None, ctx: ReportContext) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    d = fm.data
    splits = [s for s in SPLITS if all(s in d["metrics"].get(m, {}) for m in MODELS)]
    rows = []
    for s in splits:
        for m in MODELS:
            sm = d["metrics"][m][s]
            rows.append([s, esc(m), str(sm["n_rows"]), str(sm["n_prompts"]), _ci(sm["accuracy"]), _ci(sm["auc"])])
        if s in d.get("paired", {}):
            p = d["paired"][s]
            rows.append([s, "<b>FM − probe</b> (paired)", "", "", _ci(p["accuracy"], "+.3f"), _ci(p["auc"], "+.3f")])
        maj = _majority(data, s)
        if maj is not None:
            rows.append([s, "<span class='note'>majority class (control)</span>", "", "", _f(maj), "0.500"])
    fig = make_subplots(rows=1, cols=2, subplot_titles=["accuracy", "ROC AUC"])
    for m in MODELS:
        for col, key in ((1, "accuracy"), (2, "auc")):
            vals = [d["metrics"][m][s][key]["value"] for s in splits]
            cis = [tuple(d["metrics"][m][s][key]["ci"]) for s in splits]
            fig.add_trace(go.Bar(x=splits, y=vals, name=m, marker_color=MODEL_COLOR[m], legendgroup=m,
                                 showlegend=col == 1, error_y=_safe_bars(vals, cis),
                                 hovertemplate=f"{m} %{{x}}: %{{y:.3f}}<extra></extra>"), 1, col)
    maj = [_majority(data, s) for s in splits]
    if any(x is not None for x in maj):
        fig.add_trace(go.Scatter(x=splits, y=maj, mode="markers", name="majority class", legendgroup="control",
                                 marker=dict(symbol="line-ew-open", size=28, line=dict(width=2, color="#57606a")),
                                 hovertemplate="majority class %{x}: %{y:.3f}<extra></extra>"), 1, 1)
    fig.add_trace(go.Scatter(x=splits, y=[0.5] * len(splits), mode="markers", name="chance (AUC 0.5)",
                             legendgroup="control", marker=dict(symbol="line-ew-open", size=28,
                                                                line=dict(width=2, color="#57606a")),
                             hoverinfo="skip", showlegend=False), 1, 2)
    fig.update_yaxes(range=[0, 1.05])
    fig.update_layout(barmode="group", title="FM vs linear probe on the same inputs (95% bootstrap CI over prompts; "
                                             "— control)", legend=dict(orientation="h", y=-0.2))
    figs = [ctx.figure(fig, height=340)]
    curve = d.get("curve") or []
    if curve:
        fig = go.Figure()
        ep = [r["epoch"] for r in curve]
        fig.add_trace(go.Scatter(x=ep, y=[r["train_loss"] for r in curve], mode="lines+markers", name="train loss"))
        fig.add_trace(go.Scatter(x=ep, y=[r["val_loss"] for r in curve], mode="lines+markers", name="validation loss"))
        fig.add_vline(x=d["best_epoch"], line_dash="dot", line_color="#888", annotation_text="kept")
        fig.update_layout(title=f"FM training (rank {d['rank']}): the epoch of lowest validation loss is kept",
                          xaxis_title="epoch", yaxis_title="log loss", legend=dict(orientation="h", y=-0.25))
        figs.append(ctx.figure(fig, height=340))
    note = (f"<p class='note'>Accuracy: logit &gt; 0; intervals resample prompts (a prompt's two rows together). The "
            f"probe is an L2 logistic regression, C = {d['probe_c']:g} chosen by validation AUC "
            f"({esc(', '.join(f'{k}: {_f(v)}' for k, v in d.get('probe_val_auc', {}).items()))}). The held-out (test) "
            "split is the only one neither model saw.</p>")
    return ("<h3>Predicting refusal: FM vs linear probe</h3>"
            + _table(["split", "model", "rows", "prompts", "accuracy [95% CI]", "AUC [95% CI]"], rows, num_from=2)
            + "<div class='grid'>" + "".join(figs) + "</div>" + note)


# --- interactions -----------------------------------------------------------------------------------------------
def _heatmap(fm: ResultView, minimal: set, ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    feats = [tuple(x) for x in fm.data["heatmap_features"]["items"]]
    z = tensor(fm, "heatmap")
    if not feats or z is None:
        return ""
    labels = [_feat(f) + (" ★" if f in minimal else "") for f in feats]
    for i in range(len(z)):
        z[i][i] = None  # no self-interaction
    top = max((abs(v) for row in z for v in row if v is not None), default=0.0) or 1.0
    fig = go.Figure(go.Heatmap(z=z, x=labels, y=labels, colorscale="RdBu", reversescale=True, zmin=-top, zmax=top,
                               colorbar=dict(title="mean term", thickness=12),
                               hovertemplate="%{y} × %{x}<br>mean ⟨v_i,v_j⟩ x_i x_j: %{z:.4f}<extra></extra>"))
    fig.update_layout(title=f"FM pair terms of the top {len(feats)} features by FM contribution (red: pushes towards "
                            "refusal; ★ minimal set)", xaxis=dict(tickangle=-60, automargin=True),
                      yaxis=dict(autorange="reversed", automargin=True))
    return ctx.figure(fig, height=max(360, 120 + 16 * len(feats)))


def _pairs(fm: ResultView) -> str:
    rows = [[_feat(p["a"]), _feat(p["b"]), _f(p["weight"], "+.3f"), _f(p["mean_term"], "+.4f"), _f(p["strength"], ".4f"),
             f"{100 * p['both_active']:.0f}%"] for p in fm.data.get("pairs", [])]
    if not rows:
        return ""
    return ("<h4>Top interacting pairs</h4>"
            + _table(["feature a", "feature b", "⟨v_a, v_b⟩", "mean term", "strength", "both fire"], rows, num_from=2)
            + "<p class='note'>Strength: |⟨v_a, v_b⟩| · mean |x_a x_b| over the training rows (the mean size of the "
              "pair's term in the logit); mean term: its signed mean (positive pushes towards refusal).</p>")


# --- the K sweep --------------------------------------------------------------------------------------------------
def _sweep(v: ResultView, ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    d = v.data
    rows = d["rows"]
    fig = go.Figure()
    for name in ("FM", "linear probe", "random"):
        pts = sorted((r for r in rows if r["ranking"] == name), key=lambda r: r["k"])
        if not pts:
            continue
        rates = [r["complied"] / max(r["n"], 1) for r in pts]
        fig.add_trace(go.Scatter(x=[r["k"] for r in pts], y=rates, mode="lines+markers", name=name,
                                 line=dict(color=MODEL_COLOR[name], dash="dot" if name == "random" else "solid"),
                                 error_y=_error_bars(rates, [tuple(r["complied_ci"]) for r in pts])))
        draws = [(r["k"], x) for r in pts for x in r.get("draws") or []]
        if draws:
            fig.add_trace(go.Scatter(x=[k for k, _ in draws], y=[x for _, x in draws], mode="markers",
                                     name="each random draw", marker=dict(symbol="diamond-open", size=9,
                                                                          color=MODEL_COLOR["random"])))
    ref = next((r for r in rows if r["ranking"] == "minimal set"), None)
    if ref is not None:
        rate = ref["complied"] / max(ref["n"], 1)
        fig.add_trace(go.Scatter(x=[ref["k"]], y=[rate], mode="markers", name="minimal set",
                                 marker=dict(symbol="star", size=15, color="#ffd33d", line=dict(width=1.5, color="black")),
                                 error_y=_error_bars([rate], [tuple(ref["complied_ci"])])))
    fig.add_hline(y=0, line_dash="dash", line_color="#888", annotation_text="unclamped (refuses every prompt)",
                  annotation_position="top left")
    ks = sorted({r["k"] for r in rows if r["k"] > 0})
    fig.update_xaxes(type="log" if ks and ks[-1] / max(ks[0], 1) > 8 else "linear", tickvals=ks)
    fig.update_layout(title="K sweep: complied on held-out refused prompts (95% Wilson CI), clamped at c = "
                            f"{d['c']:g}", xaxis_title="K (features clamped)", yaxis_title="complied rate",
                      yaxis_range=[-0.05, 1.05], legend=dict(orientation="h", y=-0.25))
    order = {"unintervened": 0, "minimal set": 1, "FM": 2, "linear probe": 3, "random": 4}
    body = [[str(r["k"]), esc(r["ranking"]), str(r["n_features"]), str(r["n"]), _rate_ci(r["complied"], r["n"]),
             _rate_ci(r["degenerate"], r["n"]), "–" if r.get("overlap_fm") is None else str(r["overlap_fm"]),
             ", ".join(f"{x:.2f}" for x in r.get("draws") or []) or "–"]
            for r in sorted(rows, key=lambda r: (r["k"] if r["ranking"] not in ("unintervened", "minimal set") else -1,
                                                 order.get(r["ranking"], 9)))]
    paired = [[str(p["k"]), esc(p["a"]), esc(p["b"]), str(p["n"]), str(p["complied_a"]), str(p["complied_b"]),
               str(p["only_a"]), str(p["only_b"]), _f(p["p_value"], ".3g")] for p in d.get("paired", [])]
    lo, hi = wilson(0, len(d["prompts"]))
    return (f"<h3>K sweep (held out)</h3><p class='lead'>On {len(d['prompts'])} of the {d['n_refused']} held-out prompts "
            f"the unclamped model refuses (complied 0 by selection, 95% CI [{lo:.3f}, {hi:.3f}]): the top K features of "
            "the FM ranking (contribution to refusal on the refused training rows), of the probe ranking, and random "
            "sets with the FM set's per-layer counts drawn from the pool (pooled over the draws), judged greedy "
            "answers.</p>" + ctx.figure(fig, height=380)
            + _table(["K", "set", "features", "n", "complied [95% CI]", "degenerate [95% CI]", "∩ FM", "per draw"], body,
                     num_from=2, num_to=7)
            + ("<h4>Paired on the same prompts (McNemar exact)</h4>"
               + _table(["K", "A", "B", "n", "complied A", "complied B", "only A", "only B", "p"], paired, num_from=3)
               if paired else ""))


def render_interactions(views: list[ResultView], ctx: ReportContext) -> str:
    data, fm, sweep = (_one(views, k) for k in KINDS)
    heldout = next((v for v in ctx.views if v.kind == "refused_prompts"), None)
    out = [_lead(data, heldout)]
    if data is not None:
        out.append(_balance(data))
    if fm is not None:
        out.append(_models(fm, data, ctx))
        minimal = {tuple(x) for x in data.data["minimal"]["items"]} if data is not None else set()
        heat = _heatmap(fm, minimal, ctx)
        out.append("<h3>Interactions</h3>" + heat + _pairs(fm))
    if sweep is not None:
        out.append(_sweep(sweep, ctx))
    return "".join(out)


register_section(SectionSpec("interactions", "Feature interactions (FM): heatmap and K-sweep", KINDS, "interactions",
                             render_interactions))
