"""The report's built-in sections, one renderer per result kind, in report order.

Planned sections (stages that do not exist yet) are registered without a renderer and show "stage not available
yet"; the stage that lands gives its section a renderer with :func:`~refusal_sae.report.render.register_section`
under the same id.
"""

from __future__ import annotations

import math
from collections import defaultdict

from refusal_sae.report.render import ReportContext, ResultView, SectionSpec, esc, register_section

LABELS = ("refused", "complied", "degenerate")
COLORS = {"refused": "#1a7f37", "complied": "#cf222e", "degenerate": "#9a6700"}


def _f(x, fmt: str = ".3f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return format(x, fmt)


def _table(head: list[str], rows: list[list], num_from: int = 1, num_to: int | None = None) -> str:
    """An HTML table; columns ``num_from`` to ``num_to`` (exclusive; default: the last) are numbers, right-aligned."""
    out = ["<table><tr>", *(f"<th>{esc(h)}</th>" for h in head), "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(
            f"<td class='num'>{c}</td>" if num_from <= i < (num_to or len(r)) else f"<td>{c}</td>"
            for i, c in enumerate(r)) + "</tr>")
    out.append("</table>")
    return "".join(out)


def wilson(k: int, n: int) -> tuple[float, float]:
    from refusal_sae.scoring.stats import wilson_interval

    return wilson_interval(k, n)


# --- run / manifest -----------------------------------------------------------------------------------------------
def render_run(views: list[ResultView], ctx: ReportContext) -> str:
    m = ctx.manifest
    model = m.get("model") or {}
    git = m.get("git") or {}
    pipe = m.get("pipeline") or {}
    facts = [
        ("model", esc(model.get("name", "?"))), ("weights", f"<code>{esc(model.get('revision'))}</code>"),
        ("adapter", esc(model.get("adapter") or "–")),
        ("shape", f"{model.get('n_layers', '?')} layers, d_model {model.get('d_model', '?')}, {esc(model.get('dtype', '?'))}"),
        ("package", f"refusal-sae {esc(m.get('package_version', '?'))}" + (
            f", commit <code>{esc(git.get('commit', '')[:12])}</code>{' (local changes)' if git.get('dirty') else ''}"
            if git else "")),
        ("created / updated", f"{esc(m.get('created', '?'))} / {esc(m.get('updated', '?'))}"),
    ]
    if pipe:
        facts.append(("config", f"{esc(pipe.get('config') or '–')} (hash <code>{esc(pipe.get('config_hash'))}</code>)"))
        facts.append(("command", f"<code>{esc(pipe.get('command', ''))}</code>"))
    out = ["<table>", *(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts), "</table>"]
    stages = m.get("stages") or {}
    if stages:
        rows = [[f"<code>{esc(name)}</code>", esc(e.get("kind")), f"<code>{esc(e.get('config_hash'))}</code>",
                 esc(e.get("seed") if e.get("seed") is not None else "–"), _f(e.get("wall_s"), ".1f"), esc(e.get("finished"))]
                for name, e in sorted(stages.items())]
        total = sum(e.get("wall_s") or 0 for e in stages.values())
        out.append(f"<h3>Stage results ({len(stages)}; {total / 60:.1f} min of compute in total)</h3>")
        out.append(_table(["result folder", "kind", "config hash", "seed", "wall s", "finished"], rows, num_from=3, num_to=5))
    saes = m.get("saes") or {}
    if saes:
        rows = [[f"<code>{esc(h)}</code>", esc(s.get("source")), esc(s.get("d_sae")),
                 f"<code>{esc((s.get('sha256') or '–')[:16])}</code>"] for h, s in saes.items()]
        out.append(f"<details><summary>SAEs ({len(saes)})</summary>"
                   + _table(["hook", "source", "d_sae", "weights sha256"], rows, num_from=2, num_to=3) + "</details>")
    cfg = ctx.run_dir / "config.yaml"
    if cfg.is_file():
        out.append(f"<details><summary>resolved config (config.yaml)</summary><pre>{esc(cfg.read_text())}</pre></details>")
    out.append("<p class='note'>Results are deterministic for a config; <code>meta</code> in each result.json holds wall "
               "times and finish stamps, which differ between runs.</p>")
    return "".join(out)


# --- direction ----------------------------------------------------------------------------------------------------
def _heatmap(ctx: ReportContext, cands: list[dict], key: str, title: str, chosen: dict, log: bool = False,
             reverse: bool = False) -> str:
    import plotly.graph_objects as go

    layers = sorted({c["layer"] for c in cands})
    positions = sorted({c["pos"] for c in cands})
    z, text = [], []
    for p in positions:
        zr, tr = [], []
        for L in layers:
            c = next((c for c in cands if c["layer"] == L and c["pos"] == p), None)
            v = None if c is None else c.get(key)
            if v is not None and log:
                v = math.log10(max(v, 1e-6))
            zr.append(v)
            tr.append("" if c is None else (
                f"layer {L}, pos {p}<br>bypass {_f(c.get('bypass'))} induce {_f(c.get('induce'))} KL {_f(c.get('kl'), '.4f')}"
                + ("" if c.get("kept") else f"<br>filtered: {esc(c.get('reason', ''))}")))
        z.append(zr)
        text.append(tr)
    fig = go.Figure(go.Heatmap(z=z, x=layers, y=[str(p) for p in positions], text=text, hoverinfo="text",
                               colorscale="RdBu" if not log else "Viridis", reversescale=reverse,
                               colorbar=dict(title="log10 KL" if log else key, thickness=12)))
    rejected = [c for c in cands if not c.get("kept")]
    if rejected:
        fig.add_trace(go.Scatter(x=[c["layer"] for c in rejected], y=[str(c["pos"]) for c in rejected], mode="markers",
                                 marker=dict(symbol="x-thin", size=6, line=dict(width=1, color="rgba(0,0,0,0.45)")),
                                 name="filtered", hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=[chosen["layer"]], y=[str(chosen["pos"])], mode="markers", name="chosen",
                             marker=dict(symbol="star", size=16, color="#ffd33d", line=dict(width=1.5, color="black")),
                             hoverinfo="skip"))
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title="position", showlegend=False)
    return ctx.figure(fig, height=320)


def render_direction(views: list[ResultView], ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    out = []
    d = next((v for v in views if v.kind == "direction"), None)
    hv = next((v for v in views if v.kind == "harm_vs_refusal"), None)
    if d is not None:
        data, c = d.data, d.data["chosen"]
        sel = (d.config.get("selection") or {})
        out.append(
            f"<p class='lead'>Chosen: <b>position {c['pos']}, layer {c['layer']}</b> — bypass {_f(c['bypass'])} (mean "
            f"refusal score of harmful prompts with it ablated), induce {_f(c['induce'])} (harmless prompts with it "
            f"added), KL {_f(c['kl'], '.4f')} (median {_f(c.get('kl_median'), '.4f')}, max {_f(c.get('kl_max'))}). "
            f"{data['n_train'][0]} + {data['n_train'][1]} training prompts, {data['n_val'][0]} + {data['n_val'][1]} "
            f"validation prompts; {data['massive_directions_removed']} massive-activation directions projected out; "
            f"filters: KL ≤ {sel.get('max_kl', '?')}, induce ≥ {sel.get('min_induce', '?')}, last "
            f"{sel.get('prune_layer_fraction', '?')} of layers pruned.</p>")
        cands = data["candidates"]
        out.append("<div class='grid3'>")
        out.append(_heatmap(ctx, cands, "bypass", "bypass (lower = better)", c))
        out.append(_heatmap(ctx, cands, "induce", "induce (higher = better)", c, reverse=True))
        out.append(_heatmap(ctx, cands, "kl", "KL on harmless prompts", c, log=True))
        out.append("</div><p class='note'>Each cell is one candidate (difference in means at that layer and "
                   "post-instruction position), scored on the validation prompts; × marks candidates the filters "
                   "discarded, ★ the chosen one. Hover for values.</p>")
    cos = d.data.get("harm_refusal_cosine_by_layer") if d is not None else None
    figs = []
    if cos or hv is not None:
        fig = go.Figure()
        if cos:
            fig.add_trace(go.Scatter(x=list(range(len(cos))), y=cos, mode="lines+markers", name="cos(harm_L, refusal)"))
        if hv is not None:
            rows = hv.data["rows"]
            fig.add_trace(go.Scatter(x=[r["layer"] for r in rows], y=[r["cosine"] for r in rows], mode="markers",
                                     marker=dict(size=11, symbol="circle-open", line=dict(width=2)),
                                     name="layers compared causally"))
        fig.update_layout(title="harm direction (t_inst) vs refusal direction: cosine by layer", xaxis_title="layer",
                          yaxis_title="cosine", yaxis_range=[-1, 1], legend=dict(orientation="h", y=-0.25))
        figs.append(ctx.figure(fig, height=340))
    if hv is not None:
        rows = hv.data["rows"]
        x = [r["layer"] for r in rows]
        fig = go.Figure()
        lines = (("add_refusal", "harmless + refusal dir.", "solid"), ("add_harm", "harmless + harm dir.", "dot"),
                 ("ablate_refusal", "harmful − refusal dir.", "solid"), ("ablate_harm", "harmful − harm dir.", "dot"))
        for key, name, dash in lines:
            fig.add_trace(go.Scatter(x=x, y=[r[key] for r in rows], mode="lines+markers", name=name, line=dict(dash=dash)))
        fig.add_hline(y=hv.data["baseline_harmless"], line_dash="dash", line_color="#888",
                      annotation_text="harmless baseline", annotation_position="bottom right")
        fig.add_hline(y=hv.data["baseline_harmful"], line_dash="dash", line_color="#444",
                      annotation_text="harmful baseline", annotation_position="top right")
        fig.update_layout(title=f"causal: refusal score with each direction added / ablated (position {hv.data['position']})",
                          xaxis_title="layer", yaxis_title="mean refusal score", legend=dict(orientation="h", y=-0.25))
        figs.append(ctx.figure(fig, height=340))
    if figs:
        out.append("<h3>Harm vs refusal</h3><div class='grid'>" + "".join(figs) + "</div>")
    if d is not None and d.data.get("kl_by_prompt"):
        rows = [[esc(r["instruction"][:120]), _f(r["kl"]), esc(repr(r["clean_top"][0][0])) + " → " +
                 esc(repr(r["ablated_top"][0][0]))] for r in d.data["kl_by_prompt"][:5]]
        out.append("<h3>Harmless prompts the ablation moves most</h3>"
                   + _table(["prompt", "KL", "most likely first token: clean → ablated"], rows, num_from=1, num_to=2))
    return "".join(out)


# --- SAE quality --------------------------------------------------------------------------------------------------
def render_saes(views: list[ResultView], ctx: ReportContext) -> str:
    from plotly.subplots import make_subplots

    v = views[0]
    rows = sorted(v.data["rows"], key=lambda r: r["layer"])
    x = [r["layer"] for r in rows]
    panels = (("fvu", "FVU (lower = better)"), ("mean_l0", "L0"), ("dead_fraction", "dead fraction"),
              ("loss_recovered", "loss recovered"))
    fig = make_subplots(rows=1, cols=4, subplot_titles=[t for _, t in panels])
    import plotly.graph_objects as go

    for i, (key, title) in enumerate(panels, 1):
        fig.add_trace(go.Scatter(x=x, y=[r[key] for r in rows], mode="lines+markers", name=title, showlegend=False), 1, i)
        fig.update_xaxes(title_text="layer", row=1, col=i)
    out = [f"<p class='lead'>{len(rows)} SAEs measured on {v.data['n_sequences']} held-out sequences "
           f"({esc(', '.join(v.data['datasets']))} prompts + the model's greedy responses), ordinary positions "
           f"(massive-norm positions reported apart).</p>", ctx.figure(fig, height=300)]
    table = [[str(r["layer"]), esc(r["d_sae"]), esc(r["n_tokens"]), _f(r["fvu"], ".4f"), _f(r["mean_l0"], ".1f"),
              _f(r["dead_fraction"]), _f(r["ce_base"], ".3f"), _f(r["ce_spliced"], ".3f"), _f(r["loss_recovered"]),
              esc(r["n_massive"]), _f(r["massive_rel_error"], ".4f")] for r in rows]
    out.append(_table(["layer", "d_sae", "tokens", "FVU", "L0", "dead", "CE base", "CE spliced", "loss recovered",
                       "massive pos.", "massive rel. err"], table))
    return "".join(out)


# --- activation-addition calibration ------------------------------------------------------------------------------
def render_calibration(views: list[ResultView], ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    d = views[0].data
    fig = go.Figure(go.Scatter(x=d["coeffs"], y=d["refusal_rates"], mode="lines+markers", name="refusal rate"))
    fig.add_hline(y=d["target"], line_dash="dash", annotation_text=f"target {d['target']:.2f}")
    fig.add_trace(go.Scatter(x=[d["chosen"]], y=[d["refusal_rates"][d["coeffs"].index(d["chosen"])]], mode="markers",
                             marker=dict(symbol="star", size=16, color="#ffd33d", line=dict(width=1.5, color="black")),
                             name="chosen"))
    fig.update_layout(title=f"{d['dataset']} (n={d['n']}): refusal rate with the direction added at layer {d['layer']}",
                      xaxis_title="coefficient", yaxis_title="refusal rate", yaxis_range=[0, 1.05], showlegend=False)
    met = "reaches" if d["met"] else "does not reach (largest tried)"
    return (f"<p class='lead'>Chosen coefficient <b>×{d['chosen']:g}</b>: the smallest that {met} the target on "
            f"{esc(d['dataset'])}, a validation split.</p><div class='grid'>" + ctx.figure(fig, height=300) + "</div>")


# --- evaluations --------------------------------------------------------------------------------------------------
def judge_named(config: dict) -> str:
    """The judge that counted a result: its spec and, where recorded, the implementation behind it (``default`` has
    meant different judges across versions)."""
    spec, impl = config.get("judge", "?"), config.get("judge_impl")
    return f"{spec} ({impl})" if impl and impl.lower() != f"{spec}judge" else spec


def eval_label(v: ResultView) -> str:
    c = v.config
    iv = c.get("intervention", "none")
    tag = "" if iv == "none" else f" · {iv}"
    if iv == "actadd":
        tag += f" ×{c.get('coeff', 1):g}"
    if c.get("ablate_layers"):
        tag += f" (layers {','.join(map(str, c['ablate_layers']))})"
    return f"{v.data['dataset']}{tag}"


def render_evals(views: list[ResultView], ctx: ReportContext) -> str:
    import plotly.graph_objects as go

    order = {"none": 0, "ablate": 1, "actadd": 2}
    views = sorted(views, key=lambda v: (v.data["dataset"], order.get(v.config.get("intervention", "none"), 3),
                                         v.config.get("coeff", 1), v.name))
    rows, labels = [], []
    for v in views:
        n, counts = v.data["n"], v.data["counts"]
        cells = [esc(eval_label(v)), str(n)]
        for lab in LABELS:
            lo, hi = wilson(counts.get(lab, 0), n)
            cells.append(f"{counts.get(lab, 0) / max(n, 1):.3f} [{lo:.3f}, {hi:.3f}]")
        cells += [_f(v.data.get("mean_refusal_score")), esc(judge_named(v.config)), f"<code>{esc(v.name)}</code>"]
        rows.append(cells)
        labels.append(eval_label(v))
    out = [_table(["evaluation", "n", "refused [95% CI]", "complied [95% CI]", "degenerate [95% CI]",
                   "mean refusal score", "judge", "folder"], rows, num_from=1, num_to=6)]
    fig = go.Figure()
    for lab in LABELS:
        ys, lo_err, hi_err = [], [], []
        for v in views:
            n, k = v.data["n"], v.data["counts"].get(lab, 0)
            lo, hi = wilson(k, n)
            p = k / max(n, 1)
            ys.append(p)
            lo_err.append(p - lo)
            hi_err.append(hi - p)
        fig.add_trace(go.Bar(x=labels, y=ys, name=lab, marker_color=COLORS[lab],
                             error_y=dict(type="data", symmetric=False, array=hi_err, arrayminus=lo_err, thickness=1.2)))
    fig.update_layout(barmode="group", title="judged generations (95% Wilson intervals)", yaxis_title="rate",
                      yaxis_range=[0, 1.05], legend=dict(orientation="h", y=1.12))
    out.append(ctx.figure(fig, height=380))
    out.append(_examples(views, ctx))
    return "".join(out)


def _badge(label: str) -> str:
    return f"<span class='badge {esc(label)}'>{esc(label)}</span>"


def _examples(views: list[ResultView], ctx: ReportContext) -> str:
    """A few prompts per prompt set, side by side under each intervention (same prompts: same dataset, n and seed);
    prompts whose judgement changes between interventions first."""
    if ctx.examples <= 0:
        return ""
    groups: dict[tuple, list[ResultView]] = defaultdict(list)
    for v in views:
        groups[(v.data["dataset"], v.config.get("n"), v.config.get("seed"))].append(v)
    out = ["<h3>Example generations before / after each intervention</h3>"
           "<p class='note'>Greedy completions with the judge's label; the same prompts under each condition of a "
           "prompt set. Prompts whose label changes between conditions are shown first.</p>"]
    for (dataset, _, _), vs in groups.items():
        table = [v.rows() for v in vs]
        if not table or not table[0]:
            continue
        n = min(len(t) for t in table)
        if any(t[i]["instruction"] != table[0][i]["instruction"] for t in table for i in range(n)):
            n = 0  # not the same prompts: show each on its own below
        if n == 0:
            continue
        changed = [i for i in range(n) if len({t[i]["judgement"] for t in table}) > 1]
        order = changed + [i for i in range(n) if i not in changed]
        picks = order[: ctx.examples]
        head = "".join(f"<th>{esc(eval_label(v))} <span class='note'>({esc(judge_named(v.config))})</span></th>" for v in vs)
        body = []
        for i in picks:
            cells = "".join(f"<td>{_badge(t[i]['judgement'])}<div class='gen'>{esc(t[i]['completion'])}</div></td>"
                            for t in table)
            body.append(f"<tr><td class='prompt'>{esc(table[0][i]['instruction'])}</td>{cells}</tr>")
        out.append(f"<h3>{esc(dataset)} <span class='note'>({len(changed)} of {n} prompts change label)</span></h3>"
                   f"<table><tr><th>prompt</th>{head}</tr>{''.join(body)}</table>")
    return "".join(out)


# --- feature cards ------------------------------------------------------------------------------------------------
def looks_like_card(x) -> bool:
    return isinstance(x, dict) and "feature" in x and "examples" in x


def _cards_of(data: dict) -> list[tuple[str, dict]]:
    """Every FeatureSummary-shaped dict in a result's data: ``(group, card)`` (group = the field or key it sits in)."""
    found = []
    for key, val in data.items():
        if isinstance(val, list):
            found += [(key, c) for c in val if looks_like_card(c)]
        elif isinstance(val, dict):
            for k2, v2 in val.items():
                if isinstance(v2, list):
                    found += [(f"{key}: {k2}", c) for c in v2 if looks_like_card(c)]
    return found


def render_card(card: dict, group: str, stage: str) -> str:
    extra = []
    cos = card.get("decoder_cosine", card.get("cosine"))
    if cos is not None:
        extra.append(f"decoder cos to the direction {_f(cos)}")
    extra.append(f"decoder norm {_f(card.get('decoder_norm'))}")
    extra.append(f"max {_f(card.get('max_activation'))}")
    if card.get("frequency") is not None:
        extra.append(f"fires on {100 * card['frequency']:.2f}% of tokens")
    found = card.get("found_by") or card.get("stage") or stage
    lines = []
    for e in card.get("examples", []):
        toks, c = e.get("tokens", []), e.get("center", 0)

        def show(ts):
            return esc("".join(ts)).replace("\n", "⏎")

        mid = show(toks[c : c + 1])
        lines.append(f"<div class='ctx'><span class='act'>{_f(e.get('activation'), '.2f')}</span>"
                     f"{show(toks[:c])}<mark>{mid}</mark>{show(toks[c + 1:])}</div>")
    where = card.get("hook_name") or f"layer {card.get('layer')}"
    return (f"<div class='card'><h4>latent {esc(card['feature'])} @ {esc(where)}</h4>"
            f"<div class='note'>{' · '.join(extra)} · found by <code>{esc(found)}</code>"
            f"{' (' + esc(group) + ')' if group else ''}</div>{''.join(lines) or '<p class=note>no activating tokens</p>'}</div>")


def render_cards(views: list[ResultView], ctx: ReportContext) -> str:
    """Cards of every result holding them; a result's ``cosine`` map (``"layer:feature"`` → decoder cosine with the
    direction) and ``found_by`` (e.g. the search's cards: "greedy minimal set") annotate its cards."""
    out = []
    for v in views:
        cards = _cards_of(v.data)
        if not cards:
            continue
        stage = v.data.get("stage") or v.name.split("/")[0]
        cosine = v.data.get("cosine") if isinstance(v.data.get("cosine"), dict) else {}
        found_by = v.data.get("found_by")
        cards = [(g, {**c, **({"decoder_cosine": cosine[f"{c.get('layer')}:{c['feature']}"]}
                                if f"{c.get('layer')}:{c['feature']}" in cosine else {}),
                      **({"found_by": f"{stage}: {found_by}"} if found_by and "found_by" not in c else {})})
                 for g, c in cards]
        out.append(f"<h3><code>{esc(v.name)}</code>: {len(cards)} latents</h3><div class='cards'>"
                   + "".join(render_card(c, "" if g == "cards" else g, stage) for g, c in cards) + "</div>")
    if not out:
        return ""
    out.insert(0, "<p class='note'>Top-activating contexts of each latent (activating token highlighted, its activation "
                  "on the left), its decoder direction's cosine with the refusal direction where known, and the stage "
                  "that found it.</p>")
    return "".join(out)


# --- registry, in report order ------------------------------------------------------------------------------------
for spec in (
    SectionSpec("run", "Run", (), "run", render_run),
    SectionSpec("direction", "Refusal direction", ("direction", "harm_vs_refusal"), "direction", render_direction),
    SectionSpec("sae-quality", "SAE quality per layer", ("sae_metrics",), "sae_metrics", render_saes),
    SectionSpec("search", "Feature search: comparison with CIs, flip curves", ("search_table",), "search"),  # report/search.py
    SectionSpec("interactions", "Feature interactions (FM): heatmap and K-sweep", ("interactions",), "interactions"),
    SectionSpec("dormant", "Dormant features by round", ("dormant",), "dormant"),
    SectionSpec("jailbreaks", "Jailbreak families vs a neutral wrapper", ("analysis_jailbreaks",), "jailbreaks"),
    SectionSpec("upstream", "Upstream → downstream features", ("upstream",), "analyses"),
    SectionSpec("probes", "Probe accuracies", ("probes",), "probes"),
    SectionSpec("hardening", "Hardening curve", ("hardening",), "hardening"),
    SectionSpec("calibration", "Activation-addition calibration", ("actadd_calibration",), "calibrate_actadd",
                render_calibration),
    SectionSpec("evals", "Evaluations and example generations", ("eval",), "eval", render_evals),
    SectionSpec("cards", "Feature cards", ("*",), "search", render_cards),  # any result holding FeatureSummary lists
):
    register_section(spec)
