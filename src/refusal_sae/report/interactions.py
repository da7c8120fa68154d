"""The report's interactions section (stage 3, :mod:`refusal_sae.search.interactions`): the factorization machine
against the linear probe (held-out accuracy and AUC with bootstrap intervals, beside the majority-class rate and
chance), the FM's interaction heatmap of its top features, the top interacting pairs, and the K sweep (FM top-K vs
probe top-K vs random sets of the same size, complied with Wilson intervals, beside the unclamped model and the
minimal set).

Reads the typed ``search/heldout`` and ``search/interactions/{data,fm,ksweep}`` results (the heatmap matrix is the
FM result's ``heatmap`` tensor).
"""

from __future__ import annotations

from refusal_sae.report.markup import STAR, bars, esc, num, rate, rate_ci, share, table, wilson
from refusal_sae.report.records import Balance, typed
from refusal_sae.report.render import ReportContext, ResultView, SectionSpec, register_section
from refusal_sae.report.summary import Finding

KINDS = ("interactions_data", "interactions_fm", "interactions_ksweep")
FM, PROBE, RANDOM = "FM", "linear probe", "random"  # the K sweep's rankings (and the two models)
MODELS = (FM, PROBE)
MODEL_COLOR = {FM: "#cf222e", PROBE: "#0969da", RANDOM: "#8c959f", "minimal set": "#a40e26"}
SPLITS = ("train", "val", "test")


def _feat(x) -> str:
    return f"L{x[0]}:{x[1]}"


def _ci(m, fmt: str = ".3f") -> str:
    """A metric (``value``, ``ci``) as ``value [lo, hi]`` (``–`` for a missing part)."""
    lo, hi = m.ci
    return f"{num(m.value, fmt)} [{num(lo, fmt)}, {num(hi, fmt)}]"


def _balance_of(data, split: str) -> Balance | None:
    b = data.balance.get(split) if data is not None else None
    return typed(Balance, b) if b else None


# --- lead and rows ----------------------------------------------------------------------------------------------
def _lead(data, heldout) -> str:
    parts = []
    if data is not None:
        n_min, n_pool = len(data.minimal), len(data.pool)
        parts.append(f"Inputs: each pool feature's SAE code, <b>{esc(data.reduce)} over the post-instruction tokens</b>; "
                     f"label: refused ⇔ refusal score &gt; {data.label_threshold:g}. Each prompt enters twice: "
                     f"unclamped and with the search's minimal set ({n_min} features) clamped at c = {data.c:g}. Pool: "
                     f"<b>{n_pool} features</b> = the minimal set + the {n_pool - n_min} that fire on the most harmful "
                     f"training prompts under its clamp (of {data.n_active} firing at SAE layers "
                     f"{esc(', '.join(map(str, data.layers)))}).")
    if heldout is not None:
        parts.append(f"Held out: the <b>{len(heldout.refused)} of {heldout.n_total}</b> prompts of "
                     f"{esc(', '.join(heldout.datasets))} the unclamped model refuses ({esc(heldout.source)}); no fit "
                     "or choice reads them.")
    return "<p class='lead'>" + " ".join(parts) + "</p>" if parts else ""


def _balance(data) -> str:
    rows = []
    for s in SPLITS:
        b = _balance_of(data, s)
        if b is None:
            continue
        rows.append([s, str(len(data.prompts[s])), str(b.rows), rate_ci(b.refused, b.rows),
                     f"{b.harmful_clean_refused} / {b.n_harmful}", f"{b.harmful_clamped_refused} / {b.n_harmful}",
                     f"{b.harmless_clean_refused} / {b.n_harmless}", f"{b.harmless_clamped_refused} / {b.n_harmless}"])
    return ("<h4>Rows and labels</h4>"
            + table(["split", "prompts", "rows", "refused [95% CI]", "harmful, unclamped", "harmful, clamped",
                     "harmless, unclamped", "harmless, clamped"], rows))


def _majority(data, split: str) -> float | None:
    """Accuracy of always predicting the split's more frequent label: the accuracy's chance control."""
    b = _balance_of(data, split)
    return b.majority if b is not None else None


# --- FM vs probe ------------------------------------------------------------------------------------------------
def _models_figure(d, splits: list[str], data, ctx: ReportContext) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=["accuracy", "ROC AUC"])
    for m in MODELS:
        for col, key in ((1, "accuracy"), (2, "auc")):
            ms = [getattr(d.metrics[m][s], key) for s in splits]
            vals = [x.value for x in ms]
            fig.add_trace(go.Bar(x=splits, y=vals, name=m, marker_color=MODEL_COLOR[m], legendgroup=m,
                                 showlegend=col == 1, error_y=bars(vals, [x.ci for x in ms]),
                                 hovertemplate=f"{m} %{{x}}: %{{y:.3f}}<extra></extra>"), 1, col)
    control = dict(symbol="line-ew-open", size=28, line=dict(width=2, color="#57606a"))
    maj = [_majority(data, s) for s in splits]
    if any(x is not None for x in maj):
        fig.add_trace(go.Scatter(x=splits, y=maj, mode="markers", name="majority class", legendgroup="control",
                                 marker=control, hovertemplate="majority class %{x}: %{y:.3f}<extra></extra>"), 1, 1)
    fig.add_trace(go.Scatter(x=splits, y=[0.5] * len(splits), mode="markers", name="chance (AUC 0.5)",
                             legendgroup="control", marker=control, hoverinfo="skip", showlegend=False), 1, 2)
    fig.update_yaxes(range=[0, 1.05])
    fig.update_layout(barmode="group", title="FM vs linear probe on the same inputs (95% bootstrap CI over prompts; "
                                             "— control)", legend=dict(orientation="h", y=-0.2))
    return ctx.figure(fig, height=340)


def _models(d, data, ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    splits = [s for s in SPLITS if all(s in d.metrics.get(m, {}) for m in MODELS)]
    rows = []
    for s in splits:
        for m in MODELS:
            sm = d.metrics[m][s]
            rows.append([s, esc(m), str(sm.n_rows), str(sm.n_prompts), _ci(sm.accuracy), _ci(sm.auc)])
        if s in d.paired:
            p = d.paired[s]
            rows.append([s, "<b>FM − probe</b> (paired)", "", "", _ci(p.accuracy, "+.3f"), _ci(p.auc, "+.3f")])
        maj = _majority(data, s)
        if maj is not None:
            rows.append([s, "<span class='note'>majority class (control)</span>", "", "", num(maj), "0.500"])
    figs = [_models_figure(d, splits, data, ctx)]
    if d.curve:
        fig = go.Figure()
        ep = [r.epoch for r in d.curve]
        fig.add_trace(go.Scatter(x=ep, y=[r.train_loss for r in d.curve], mode="lines+markers", name="train loss"))
        fig.add_trace(go.Scatter(x=ep, y=[r.val_loss for r in d.curve], mode="lines+markers", name="validation loss"))
        fig.add_vline(x=d.best_epoch, line_dash="dot", line_color="#888", annotation_text="kept")
        fig.update_layout(title=f"FM training (rank {d.rank}): the epoch of lowest validation loss is kept",
                          xaxis_title="epoch", yaxis_title="log loss", legend=dict(orientation="h", y=-0.25))
        figs.append(ctx.figure(fig, height=340))
    note = (f"<p class='note'>Accuracy: logit &gt; 0; intervals resample prompts (a prompt's two rows together). The "
            f"probe is an L2 logistic regression, C = {d.probe_c:g} chosen by validation AUC "
            f"({esc(', '.join(f'{k}: {num(v)}' for k, v in d.probe_val_auc.items()))}). The held-out (test) "
            "split is the only one neither model saw.</p>")
    return ("<h3>Predicting refusal: FM vs linear probe</h3>"
            + table(["split", "model", "rows", "prompts", "accuracy [95% CI]", "AUC [95% CI]"], rows, num_from=2)
            + "<div class='grid'>" + "".join(figs) + "</div>" + note)


# --- interactions -----------------------------------------------------------------------------------------------
def _heatmap(fm, minimal: set, ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    feats = list(fm.heatmap_features)
    if not feats or fm.heatmap.numel() == 0:
        return ""
    z = fm.heatmap.tolist()
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


def _pairs(fm) -> str:
    rows = [[_feat(p.a), _feat(p.b), num(p.weight, "+.3f"), num(p.mean_term, "+.4f"), num(p.strength, ".4f"),
             f"{100 * p.both_active:.0f}%"] for p in fm.pairs]
    if not rows:
        return ""
    return ("<h4>Top interacting pairs</h4>"
            + table(["feature a", "feature b", "⟨v_a, v_b⟩", "mean term", "strength", "both fire"], rows, num_from=2)
            + "<p class='note'>Strength: |⟨v_a, v_b⟩| · mean |x_a x_b| over the training rows (the mean size of the "
              "pair's term in the logit); mean term: its signed mean (positive pushes towards refusal).</p>")


# --- the K sweep --------------------------------------------------------------------------------------------------
def _sweep_figure(d, ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    for name in (FM, PROBE, RANDOM):
        pts = sorted((r for r in d.rows if r.ranking == name), key=lambda r: r.k)
        if not pts:
            continue
        rates = [share(r.complied, r.n) for r in pts]
        fig.add_trace(go.Scatter(x=[r.k for r in pts], y=rates, mode="lines+markers", name=name,
                                 line=dict(color=MODEL_COLOR[name], dash="dot" if name == RANDOM else "solid"),
                                 error_y=bars(rates, [r.complied_ci for r in pts])))
        draws = [(r.k, x) for r in pts for x in r.draws]
        if draws:
            fig.add_trace(go.Scatter(x=[k for k, _ in draws], y=[x for _, x in draws], mode="markers",
                                     name="each random draw", marker=dict(symbol="diamond-open", size=9,
                                                                          color=MODEL_COLOR[RANDOM])))
    ref = next((r for r in d.rows if r.ranking == "minimal set"), None)
    if ref is not None:
        fig.add_trace(go.Scatter(x=[ref.k], y=[share(ref.complied, ref.n)], mode="markers", name="minimal set",
                                 marker=STAR | dict(size=15),
                                 error_y=bars([share(ref.complied, ref.n)], [ref.complied_ci])))
    fig.add_hline(y=0, line_dash="dash", line_color="#888", annotation_text="unclamped (refuses every prompt)",
                  annotation_position="top left")
    ks = sorted({r.k for r in d.rows if r.k > 0})
    fig.update_xaxes(type="log" if ks and ks[-1] / max(ks[0], 1) > 8 else "linear", tickvals=ks)
    fig.update_layout(title="K sweep: complied on held-out refused prompts (95% Wilson CI), clamped at c = "
                            f"{d.c:g}", xaxis_title="K (features clamped)", yaxis_title="complied rate",
                      yaxis_range=[-0.05, 1.05], legend=dict(orientation="h", y=-0.25))
    return ctx.figure(fig, height=380)


def _sweep(d, ctx: ReportContext) -> str:
    order = {"unintervened": 0, "minimal set": 1, "FM": 2, "linear probe": 3, "random": 4}
    body = [[str(r.k), esc(r.ranking), str(r.n_features), str(r.n), rate_ci(r.complied, r.n),
             rate_ci(r.degenerate, r.n), "–" if r.overlap_fm is None else str(r.overlap_fm),
             ", ".join(f"{x:.2f}" for x in r.draws) or "–"]
            for r in sorted(d.rows, key=lambda r: (r.k if r.ranking not in ("unintervened", "minimal set") else -1,
                                                   order.get(r.ranking, 9)))]
    paired = [[str(p.k), esc(p.a), esc(p.b), str(p.n), str(p.complied_a), str(p.complied_b), str(p.only_a),
               str(p.only_b), num(p.p_value, ".3g")] for p in d.paired]
    lo, hi = wilson(0, len(d.prompts))
    return (f"<h3>K sweep (held out)</h3><p class='lead'>On {len(d.prompts)} of the {d.n_refused} held-out prompts "
            f"the unclamped model refuses (complied 0 by selection, 95% CI [{lo:.3f}, {hi:.3f}]): the top K features of "
            "the FM ranking (contribution to refusal on the refused training rows), of the probe ranking, and random "
            "sets with the FM set's per-layer counts drawn from the pool (pooled over the draws), judged greedy "
            "answers.</p>" + _sweep_figure(d, ctx)
            + table(["K", "set", "features", "n", "complied [95% CI]", "degenerate [95% CI]", "∩ FM", "per draw"], body,
                    num_from=2, num_to=7)
            + ("<h4>Paired on the same prompts (McNemar exact)</h4>"
               + table(["K", "A", "B", "n", "complied A", "complied B", "only A", "only B", "p"], paired, num_from=3)
               if paired else ""))


def render_interactions(views: list[ResultView], ctx: ReportContext) -> str:
    data, fm, sweep = (next((v.result for v in views if v.kind == k), None) for k in KINDS)
    out = [_lead(data, ctx.one("refused_prompts"))]
    if data is not None:
        out.append(_balance(data))
    if fm is not None:
        out.append(_models(fm, data, ctx))
        minimal = set(data.minimal.items) if data is not None else set()
        out.append("<h3>Interactions</h3>" + _heatmap(fm, minimal, ctx) + _pairs(fm))
    if sweep is not None:
        out.append(_sweep(sweep, ctx))
    return "".join(out)


def summarize_interactions(views: list[ResultView], ctx: ReportContext) -> list[Finding]:
    fm, sweep = ctx.one("interactions_fm"), ctx.one("interactions_ksweep")
    out = []
    split = next((s for s in ("test", "val") if fm is not None and all(s in fm.metrics.get(m, {}) for m in MODELS)), None)
    if split is not None:
        fm_auc, probe_auc = (fm.metrics[m][split].auc for m in MODELS)
        paired = fm.paired.get(split)
        out.append(Finding(f"predicting refusal ({split} split): FM ROC AUC", _ci(fm_auc, ".2f"),
                           f"linear probe {_ci(probe_auc, '.2f')}"
                           + (f"; FM − probe {_ci(paired.auc, '+.2f')}" if paired is not None else "") + "; chance 0.50"))
    ks = sorted({r.k for r in sweep.rows if r.ranking == FM}) if sweep is not None else []
    if ks:
        at = [r for r in sweep.rows if r.k == ks[0]]
        ours = next(r for r in at if r.ranking == FM)
        beside = [f"{esc(r.ranking)}: {rate(r.complied, r.n, r.complied_ci)}" for r in at if r is not ours]
        out.append(Finding(f"K sweep (held out), FM top {ks[0]} complied", rate(ours.complied, ours.n, ours.complied_ci),
                           "; ".join([*beside, "unclamped: 0 (refused by selection)"])))
    return out


register_section(SectionSpec("interactions", "Feature interactions (FM): heatmap and K-sweep", KINDS, "interactions",
                             render_interactions, summarize_interactions))
