"""The report's interactions and dormant sections from typed synthetic results (stages 3–5): FM vs probe with
intervals and the controls, the interaction heatmap (the FM result's tensor), the top pairs, the K sweep beside
random sets and the minimal set, critical-but-silent counts beside the active members, newly active features by
position kind beside random clamps, and the rounds. (``tests/unit/test_report.py`` adds these results to its
synthetic run, so the browser check there draws every figure of both sections.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch

from refusal_sae.report import render_report
from refusal_sae.runs import RunDir
from refusal_sae.scoring.stats import wilson_interval
from refusal_sae.search.featureset import FeatureSet
from refusal_sae.search.fm import EpochRow, Metric, PairedDelta, SplitMetrics

POOL = FeatureSet(((1, 0), (2, 0), (1, 5), (2, 7), (1, 9), (2, 11)))
MINIMAL = FeatureSet(((1, 0), (2, 0)))
PROMPTS = [f"held-out prompt {i} <i>" for i in range(6)]


def _section(page: str, sid: str) -> str:
    return page.split(f'<section id="{sid}">')[1].split("</section>")[0]


def synthetic_interactions(run: RunDir) -> None:
    """search/heldout and search/interactions/{data,fm,ksweep} of a pretend 6-feature pool."""
    from refusal_sae.scoring.compare import PairedRow
    from refusal_sae.search.interactions import (
        InteractionData,
        InteractionModel,
        KSweepResult,
        PairRow,
        RefusedPrompts,
        sweep_row,
    )

    run.save(RefusedPrompts(["jailbreakbench", "harmbench_test"], 8, PROMPTS, "judged here"),
             {"datasets": ["jailbreakbench", "harmbench_test"]}, name="search/heldout")
    g = torch.Generator().manual_seed(0)
    n = len(POOL)

    def split(p: int):
        return torch.rand(2 * p, n, generator=g), torch.randn(2 * p, generator=g), (torch.arange(2 * p) % 3 == 0).float()

    (xt, st, yt), (xv, sv, yv), (xs, ss, ys) = split(8), split(4), split(6)
    bal = {s: {"rows": 2 * p, "refused": int(y.sum()), "harmful_clean_refused": p // 2, "harmful_clamped_refused": 1,
               "harmless_clean_refused": 0, "harmless_clamped_refused": 0, "n_harmful": p // 2, "n_harmless": p - p // 2}
           for s, p, y in (("train", 8, yt), ("val", 4, yv), ("test", 6, ys))}
    texts = {s: [f"{s} prompt {i}" for i in range(p)] for s, p in (("train", 8), ("val", 4), ("test", 6))}
    harm = {s: [i < len(t) // 2 for i in range(len(t))] for s, t in texts.items()}
    data = InteractionData([1, 2], 0.0, "max", 0.0, MINIMAL, POOL, 40, texts, harm, bal, xt, xv, xs, st, sv, ss, yt,
                           yv, ys, torch.rand(n, generator=g), torch.ones(n))
    ident = {"seed": 0, "rank": 4}
    run.save(data, ident, name="search/interactions/data")

    def sm(acc: float, auc: float, rows: int) -> SplitMetrics:
        return SplitMetrics(rows, rows // 2, rows // 3, Metric(acc, (acc - 0.1, min(1.0, acc + 0.1))),
                            Metric(auc, (auc - 0.15, min(1.0, auc + 0.1))))

    metrics = {"FM": {"train": sm(0.95, 0.98, 16), "val": sm(0.875, 0.9, 8), "test": sm(0.833, 0.88, 12)},
               "linear probe": {"train": sm(0.9, 0.93, 16), "val": sm(0.75, 0.8, 8), "test": sm(0.667, 0.71, 12)}}
    paired = {s: PairedDelta(Metric(0.1, (-0.05, 0.25)), Metric(0.12, (-0.02, 0.3))) for s in ("train", "val", "test")}
    fm_rank = FeatureSet(((2, 7), (1, 0), (1, 5), (2, 0), (1, 9), (2, 11)))
    pairs = [PairRow((2, 7), (1, 5), 0.8, 0.12, 0.2, 0.5), PairRow((1, 0), (2, 0), -0.3, -0.05, 0.07, 0.25)]
    heat = torch.randn(4, 4, generator=g)
    model = InteractionModel(4, [EpochRow(e, 0.7 - 0.05 * e, 0.72 - 0.03 * e + 0.01 * (e > 3), 0.7) for e in range(1, 6)],
                             4, 1.0, {"0.1": 0.7, "1": 0.8}, metrics, paired, fm_rank, POOL, pairs, fm_rank.take(4),
                             torch.zeros(1), torch.randn(n, generator=g), torch.randn(n, 4, generator=g),
                             torch.randn(n, generator=g), torch.randn(n, generator=g), torch.randn(n, generator=g),
                             (heat + heat.T) / 2)
    run.save(model, ident, name="search/interactions/fm")
    labels = {"FM": ["complied"] * 4 + ["refused"] * 2, "linear probe": ["complied"] * 2 + ["refused"] * 4,
              "random": ["refused"] * 11 + ["complied"]}
    rows = [sweep_row(0, "unintervened", 0, ["refused"] * 6), sweep_row(2, "minimal set", 2, ["complied"] * 3 + ["refused"] * 3)]
    for k in (2, 4):
        for name, lab in labels.items():
            r = sweep_row(k, name, k, lab, 1 if name != "FM" else k)
            if name == "random":
                r.draws = [0.0, 1 / 6]
            rows.append(r)
    sweep = KSweepResult(["jailbreakbench", "harmbench_test"], 6, PROMPTS, 0.0, [2, 4], rows,
                         [PairedRow("FM", "linear probe", 6, 4, 2, 2, 0, 0.5, k=k) for k in (2, 4)])
    run.save(sweep, ident, name="search/interactions/ksweep")


def synthetic_dormant(run: RunDir) -> None:
    """search/dormant/{silent,newly_active,rounds} of the same pretend search."""
    from refusal_sae.search.clamped import KINDS
    from refusal_sae.search.dormant import NewlyActive, NewlyActiveResult, RoundRow, RoundsResult, SilentResult, SilentSummary

    sets = {"global": FeatureSet(((1, 0), (2, 0), (1, 5), (2, 7))), "minimal": MINIMAL}
    summaries = [SilentSummary("global", 4, 6, 4, wilson_interval(4, 6), 5, 11, 3, 6, 2, 5, 1, [1, 0, 1, 0], 2,
                               [{"feature": [1, 5], "prompts": 2}], 9),
                 SilentSummary("minimal", 2, 6, 3, wilson_interval(3, 6), 1, 5, 0, 3, 0, 3, 0, [0, 0, 0], 0, [], 3)]
    run.save(SilentResult(0.0, "score", 0.0, PROMPTS, sets, summaries), {"seed": 0}, name="search/dormant/silent")

    def na(name: str, scale: int) -> NewlyActive:
        return NewlyActive(name, 2, {k: scale * (i + 1) for i, k in enumerate(KINDS)}, 7 * scale,
                           {k: scale for k in KINDS}, {1: 3 * scale, 2: 4 * scale}, scale)

    positions = {k: 6 * (i + 2) for i, k in enumerate(KINDS)}
    run.save(NewlyActiveResult(0.0, list(KINDS), 6, positions, na("minimal set", 5), [na("random 1", 1), na("random 2", 2)],
                               [{"feature": [2, 33], "prompts": 4, "kinds": {"post_instruction": 6, "instruction": 1}}]),
             {"seed": 0}, name="search/dormant/newly_active")
    rows = [RoundRow(0, MINIMAL, 2, 0, -0.5, 0.6, -0.2, 5, 2, 0, 3, wilson_interval(2, 5), [0.0]),
            RoundRow(1, FeatureSet(((1, 12),)), 3, 6, -0.9, 0.8, -0.6, 5, 4, 1, 0, wilson_interval(4, 5), [0.2])]
    run.save(RoundsResult(0.0, 4, PROMPTS[:5], rows, FeatureSet(((1, 0), (2, 0), (1, 12))), "max_rounds (1) reached"),
             {"seed": 0, "n_val": 8}, name="search/dormant/rounds")


def _run(root: Path) -> Path:
    from tests.unit.test_report import synthetic_run

    return synthetic_run(root)  # the search's results, and (through it) those above


def test_interactions_section(tmp_path):
    page = render_report(_run(tmp_path / "run")).read_text()
    sec = _section(page, "interactions")
    # held out and the pool
    assert "<b>6 of 8</b> prompts of jailbreakbench, harmbench_test" in sec and "<b>6 features</b>" in sec
    # FM vs probe with intervals, the paired difference and the majority-class control (test: 4 of 12 refused)
    assert "<td>test</td><td>FM</td><td class='num'>12</td><td class='num'>6</td><td class='num'>0.833 [0.733, 0.933]" in sec
    assert "<b>FM − probe</b> (paired)" in sec and "+0.100 [-0.050, +0.250]" in sec
    assert "majority class (control)</span></td><td class='num'></td><td class='num'></td><td class='num'>0.667" in sec
    # the heatmap's labels (from the tensor file) and the pairs
    assert "L2:7" in sec and r"L1:0 \u2605" in sec and "FM pair terms of the top 4 features" in sec  # ★: the minimal set
    assert "<td>L2:7</td><td>L1:5</td><td class='num'>+0.800</td>" in sec
    # the K sweep: random pooled over draws with its Wilson interval, each draw, the minimal set and the paired tests
    lo, hi = wilson_interval(1, 12)
    assert f"0.083 [{lo:.3f}, {hi:.3f}]" in sec and "0.00, 0.17" in sec and "McNemar exact" in sec
    assert "<td>0</td><td>unintervened</td>" in sec and "<td>2</td><td>minimal set</td>" in sec
    assert sec.count('<div id="figure-') == 4  # FM vs probe, training curve, heatmap, K sweep


def test_dormant_section(tmp_path):
    page = render_report(_run(tmp_path / "run")).read_text()
    sec = _section(page, "dormant")
    # critical-but-silent beside the active members, Wilson intervals, the screen said
    lo, hi = wilson_interval(2, 5)
    assert "<td>global</td><td class='num'>4</td><td class='num'>0.667" in sec and f"0.400 [{lo:.3f}, {hi:.3f}]" in sec
    assert "judged counts are lower bounds" in sec and "<td>global</td><td>L1:5</td><td class='num'>2</td>" in sec
    # newly active by position kind beside random clamps: minimal 35 pairs vs mean 10.5
    assert "<b>35</b> (prompt, feature) pairs vs 10.5" in sec and "<td>post_instruction</td>" in sec
    assert "<td>L2:33</td><td class='num'>4</td><td>post_instruction 6, instruction 1</td>" in sec
    # rounds: complied per round with intervals, the random set per round, why they stopped
    lo, hi = wilson_interval(4, 5)
    assert f"0.800 [{lo:.3f}, {hi:.3f}]" in sec and "max_rounds (1) reached" in sec and "<td>L1:12</td>" in sec
    assert "of 8 sampled" in sec
    assert sec.count('<div id="figure-') == 3  # critical shares, newly active, rounds


def test_sections_draw_what_exists_and_the_report_command_needs_no_model(tmp_path):
    root = _run(tmp_path / "run")
    for sub in ("search/interactions/fm", "search/dormant/rounds"):
        (root / sub / "result.json").unlink()
    page = render_report(root).read_text()
    inter, dormant = _section(page, "interactions"), _section(page, "dormant")
    assert "K sweep" in inter and "FM vs linear probe" not in inter
    assert "No rounds of re-search" in dormant and "Critical but silent" in dormant
    n = int(re.search(r'data-figures="(\d+)"', page).group(1))
    assert n == len(re.findall(r'<div id="figure-\d+"', page))
    # the typed results load with torch (their tensors), never the model's or the SAEs' libraries
    code = ("import sys; from refusal_sae.report import render_report; render_report(sys.argv[1]); "
            "bad = [m for m in ('transformers', 'sae_lens', 'transformer_lens') if m in sys.modules]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
