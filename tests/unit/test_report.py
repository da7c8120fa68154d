"""report.html from a synthetic run directory of small, fake but typed results (every stage's result types, the
feature search's included): sections, escaping, offline, and (where Debian's chromium and chromedriver are installed)
a real headless browser: every figure drew, no console errors, a screenshot."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from refusal_sae.direction.calibrate import ActAddCalibration
from refusal_sae.direction.result import CandidateScore, DirectionResult, HarmRefusalRow, HarmVsRefusalResult, KlRow
from refusal_sae.report import render_report
from refusal_sae.runs import RunDir
from refusal_sae.saes.features import FeatureExample, FeatureSummary
from refusal_sae.saes.runner import SaeMetricsResult, SaeRow
from refusal_sae.scoring.evaluation import EvalResult
from refusal_sae.scoring.stats import wilson_interval
from refusal_sae.search.choose import GridRow
from refusal_sae.search.featureset import FeatureSet
from refusal_sae.search.greedy import GreedyTrace, PathPoint
from refusal_sae.search.result import CandidatesResult, ChoiceResult, FeatureCards, GreedyResult
from refusal_sae.search.table import PairedRow, SearchTable, row_of

EVIL = "<script>alert('x')</script> & <b>bold</b>"


def _eval(dataset: str, intervention: str, labels: list[str], coeff: float = 1.0) -> tuple[EvalResult, dict]:
    rows = [{"instruction": f"prompt {i} about {dataset}", "category": None, "label": "harmful",
             "completion": (EVIL if i == 0 else f"I'm sorry, I can't help with that ({intervention}).\nSecond line."),
             "judgement": lab, "reason": "", "relevance": None, "judge_score": None, "refusal_score": 1.0}
            for i, lab in enumerate(labels)]
    counts = {k: labels.count(k) for k in ("refused", "complied", "degenerate")}
    cfg = {"dataset": dataset, "n": len(labels), "seed": 0, "judge": "substring", "intervention": intervention,
           "coeff": coeff, "ablate_layers": None}
    return EvalResult("tiny", dataset, len(labels), counts, [5, 6], 0.5, rows), cfg


def synthetic_run(root: Path, search: bool = True) -> Path:
    run = RunDir(root)
    cands = [CandidateScore(p, L, bypass=-0.5 * L + p, induce=0.3 * L, kl=0.01 * (L + 1) * (1 - p),
                            kept=L < 3, reason="" if L < 3 else "last 20% of layers")
             for p in (-2, -1) for L in range(4)]
    cands[1].bypass = math.nan  # an unscored candidate
    chosen = cands[2]
    direction = DirectionResult(torch.ones(8), torch.randn(4, 8), chosen, [5, 6], (6, 6), (4, 4), 1, cands,
                                [0.1, 0.4, 0.7, 0.2], [KlRow("a harmless <prompt>", 0.3, [("In", 0.5)], [("The", 0.4)])])
    run.save(direction, {"seed": 0})
    run.save(HarmVsRefusalResult(-1, -2.0, 1.5, [HarmRefusalRow(L, 0.2 * L, 0.1 * L, -0.1, -1.0 * L, 0.5) for L in (1, 2)]),
             {"layers": [1, 2]})
    rows = [SaeRow(f"blocks.{L}.hook_resid_post", L, f"/saes/{L}", 96, 12, 300, 0.1 * L, 8.0, 0.05, 3.0, 3.2, 6.0,
                   0.9, 12, 0.5, 0.4, 100) for L in (1, 2)]
    run.save(SaeMetricsResult("tiny", ["harmful_val", "harmless_val"], 12, rows), {"seed": 0})
    run.save(ActAddCalibration("harmless_val", 4, 0.5, [1.0, 2.0], [0.25, 0.75], 2.0, True, 2), {"seed": 0})
    for dataset, iv, labels in (("jailbreakbench", "none", ["refused", "refused", "complied", "degenerate"]),
                                ("jailbreakbench", "ablate", ["complied", "refused", "complied", "complied"]),
                                ("harmless_test", "actadd", ["refused", "complied"])):
        res, cfg = _eval(dataset, iv, labels, 2.0 if iv == "actadd" else 1.0)
        run.save(res, cfg, name=f"eval/tiny__{dataset}{'' if iv == 'none' else '__' + iv}")
    if search:
        from tests.unit.test_report_interactions import synthetic_dormant, synthetic_interactions

        synthetic_search(run)
        synthetic_interactions(run)
        synthetic_dormant(run)
    return root


def synthetic_search(run: RunDir, rng_seed: int = 0) -> None:
    """Typed search results (candidates, choice, greedy, cards, table) of a pretend 2-layer search."""
    g = torch.Generator().manual_seed(rng_seed)
    layers = [1, 2]
    t = lambda: torch.randn(2, 48, generator=g)  # noqa: E731
    ours = FeatureSet(tuple((L, f) for f in range(4) for L in layers))
    cands = CandidatesResult(layers, "selected", 8, 8, [5, 6], t(), t(), t(), t(), ours, ours,
                             FeatureSet(((1, 9), (2, 9), (1, 10), (2, 10))), FeatureSet(((2, 20), (1, 21))),
                             FeatureSet(((1, 30), (2, 31), (1, 0))), {1: list(range(48)), 2: list(range(48))},
                             {"selected": 0.6, "per_layer": 0.4})
    rows = [GridRow(2, 0.0, 10, 1, 0, 9), GridRow(4, 0.0, 10, 2, 0, 8, 0.0, [0.0, 0.0], True),
            GridRow(2, -3.0, 10, 2, 1, 7), GridRow(4, -3.0, 10, 4, 1, 5, 0.3, [0.2, 0.4], False)]
    choice = ChoiceResult(12, 10, rows, 4, 0.0, True, "eligible: ... chosen: most complied")
    start = ours.take(4)
    traces = [GreedyTrace(s, 0.1, FeatureSet(((1, 0), (2, 0))),
                          [PathPoint(4, -1.0, 0.6), PathPoint(3, -0.95, 0.6), PathPoint(2, -0.9, 0.5)]) for s in (0, 1)]
    traces.append(GreedyTrace(0, 0.4, FeatureSet(((1, 0),)), [PathPoint(4, -1.0, 0.6), PathPoint(1, -0.5, 0.3)]))
    greedy = GreedyResult(start, 0.0, 0.1, traces, FeatureSet(((1, 0), (2, 0))),
                          [{"tau": 0.1, "size": 2, "score": -0.9, "flipped": 0.5},
                           {"tau": 0.4, "size": 1, "score": -0.5, "flipped": 0.3}],
                          {"full": {"complied": 4, "degenerate": 0, "refused": 6},
                           "minimal": {"complied": 3, "degenerate": 1, "refused": 6}}, 0.75)
    ex = FeatureExample(2.5, 0, 3, ["How", " to", " make", " a", " <bomb>", "?", "\n"], 4, "How to make a bomb")
    cards = FeatureCards([FeatureSummary(f"blocks.{L}.hook_resid_post", L, 0, 1.1, 2.5, 0.01, [ex, ex]) for L in layers],
                         {"1:0": 0.31, "2:0": -0.12})
    prompts = [f"held-out prompt {i} <i>" for i in range(6)]
    names = ["direction ablation (AS)", "CosSim", "ActDiff", "AP", "ours, per-prompt", "ours, global",
             "cosine prefilter alone", "greedy minimal set", "random (K*)", "random (minimal size)"]
    trows = []
    for j, name in enumerate(names):
        labels = ["complied"] * (6 - j % 5) + ["refused"] * (j % 5)
        if name.startswith("random"):
            labels = ["refused"] * 11 + ["complied"]
        r = row_of(name, f"what {name}", 4.0, labels)
        if name.startswith("random"):
            r.draws = [0.0, 1 / 6]
        if name != "ours, per-prompt":
            r.harmless_kl, r.harmless_refused, r.harmless_n = 0.05 * j, j % 3, 8
        trows.append(r)
    gens = [{"row": "unclamped", "instruction": p, "completion": "I'm sorry, I can't.", "judgement": "refused"}
            for p in prompts]
    gens += [{"row": n, "instruction": p, "completion": f"Sure <b>{n}</b> step {i}",
              "judgement": "complied" if i % 2 else "degenerate"} for n in names[:8] for i, p in enumerate(prompts)]
    table = SearchTable(["jailbreakbench", "harmbench_test"], 8, 6, 4, 0.0, trows,
                        [PairedRow("ours, global", "CosSim", 6, 5, 3, 2, 0, 0.5)], gens)
    ident = {"seed": 0, "k_per_layer": 4, "ig_steps": 4, "n_random": 2, "max_random_flip": 0.05, "judge": "default"}
    run.save(cands, ident, name="search/candidates")
    run.save(choice, ident, name="search/choice")
    run.save(greedy, ident, name="search/greedy")
    run.save(cards, ident, name="search/cards")
    run.save(table, {"datasets": ["jailbreakbench", "harmbench_test"]}, name="search/table")


def test_report_sections_escaping_and_offline(tmp_path):
    path = render_report(synthetic_run(tmp_path / "run"))
    assert path == tmp_path / "run" / "report.html"
    page = path.read_text()
    for sid in ("run", "direction", "sae-quality", "search", "interactions", "dormant", "calibration", "evals", "cards"):
        assert f'<section id="{sid}">' in page, sid
    # stages the run did not run: one short line each
    assert '<section id="upstream" class="off">' in page and "not run in this run directory" in page
    # self-contained: no external script, style sheet or image
    assert not re.search(r"<(script|img|link)[^>]+(src|href)=[\"']?(https?:)?//", page)
    assert "cdn.plot.ly" not in page.split("</head>")[1]
    assert EVIL not in page and "&lt;script&gt;alert(" in page  # generations are escaped
    assert "<mark> &lt;bomb&gt;</mark>" in page and "a harmless &lt;prompt&gt;" in page
    n = int(re.search(r'data-figures="(\d+)"', page).group(1))
    assert n == len(re.findall(r'<div id="figure-\d+"', page)) >= 8
    assert "0.500 [0.150, 0.850]" in page  # jailbreakbench, none: 2 of 4 refused, 95% Wilson interval
    # the same prompts under each condition: prompt 0 changes label (refused → complied) and comes first
    jbb = page.split("<h3>jailbreakbench <span")[1]
    assert "(2 of 4 prompts change label)" in jbb


def test_search_section_table_choice_greedy_examples_and_cards(tmp_path):
    page = render_report(synthetic_run(tmp_path / "run")).read_text()
    search = page.split('<section id="search">')[1].split("</section>")[0]
    # the held-out comparison: rates with 95% Wilson intervals, random controls pooled over draws, paired tests
    assert "<b>ours, global</b></td><td class='num'>4</td><td class='num'>6</td><td class='num'>1.000 [0.610, 1.000]" in search
    lo, hi = wilson_interval(1, 12)
    assert f"0.083 [{lo:.3f}, {hi:.3f}]" in search and "(per draw: 0.00, 0.17)" in search
    assert "McNemar exact" in search and "<td>ours, global</td><td>CosSim</td>" in search
    # the choice, the greedy set and its confirmation
    assert "<b>K* = 4, c = 0</b> (zero-ablated)" in search and "<b>2 of 4</b> features (tau 0.1): L1:0, L2:0" in search
    assert "c grid on harmful_val" in search and "random-flip bound 0.05" in search  # figure titles (JSON)
    assert "greedy pruning of the K* = 4 set" in search and "0.400 [0.168, 0.687]" in search  # full: 4/10 complied
    assert "<td>L1</td><td class='num'>0</td><td class='num'>0.310</td>" in search  # decoder cosine from the cards
    # before / after on held-out prompts, escaped, the prompts the global set flips first
    ex = search.split("Example generations before / after (held out)")[1]
    assert "<th>unclamped</th><th>direction ablation (AS)</th><th>ours, global</th><th>greedy minimal set</th>" in ex
    assert "<b>ours" not in ex and "Sure &lt;b&gt;ours, global&lt;/b&gt; step 1" in ex
    order = [int(m) for m in re.findall(r"held-out prompt (\d) &lt;i&gt;</td>", ex)]
    assert order == [1, 3, 5]  # report.examples = 3, flipped ones first
    # feature cards: the highlighted token, decoder cosine with the direction, who found it
    cards = page.split('<section id="cards">')[1].split("</section>")[0]
    assert "latent 0 @ blocks.1.hook_resid_post" in cards and "decoder cos to the direction 0.310" in cards
    assert "found by <code>search: greedy minimal set</code>" in cards and cards.count("<mark>") == 4
    # a run stopped before the table: choice and greedy still drawn, the table said to be missing
    (tmp_path / "run" / "search" / "table" / "result.json").unlink()
    page = render_report(tmp_path / "run").read_text()
    search = page.split('<section id="search">')[1].split("</section>")[0]
    assert "<code>search_table</code> stage (not run" in search and "c grid on harmful_val" in search


def test_report_without_later_stages_and_missing_run_dir(tmp_path):
    run = RunDir(tmp_path / "run")
    res, cfg = _eval("harmful_val", "none", ["refused"])
    run.save(res, cfg, name="eval/x")
    page = render_report(run.root).read_text()
    assert '<section id="direction" class="off">' in page and "not run in this run directory" in page
    r = subprocess.run([sys.executable, "-m", "refusal_sae", "report", str(tmp_path / "nope")], capture_output=True, text=True)
    assert r.returncode == 2 and "not a run directory" in r.stderr and "Traceback" not in r.stderr


def test_report_draws_in_headless_chromium(tmp_path):
    from refusal_sae.report.browser import browser_missing, check_in_browser

    why = browser_missing()
    if why:
        pytest.skip(why)
    path = render_report(synthetic_run(tmp_path / "run"))
    shot = tmp_path / "report.png"
    res = check_in_browser(path, shot)
    assert res.figures >= 21 and res.drawn == res.figures  # every figure has a non-empty SVG (search: 6,
    # interactions: 4, dormant: 3)
    assert res.errors == [], res.errors
    assert res.overflowing == 0  # each figure fits its column (sized after the layout, not while parsing)
    assert shot.stat().st_size > 20_000 and res.height > 2000
