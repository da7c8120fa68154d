"""The report's analysis sections (jailbreaks, upstream, probes, hardening) from a synthetic run directory of small,
fake but typed results: what each section shows (rates with intervals beside their controls), escaping, a run with
only some analyses, and (where Debian's chromium and chromedriver are installed) that every figure draws."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from refusal_sae.analysis.harden import GateCandidate, GateFit, HardeningResult, HardenPoint, MatchedRow, PairedRow, Rate
from refusal_sae.analysis.jailbreaks import CONTROL, JailbreakResult, family_row, pair_with_control
from refusal_sae.analysis.probes import GainRow, ProbeResult, ProbeRow
from refusal_sae.analysis.upstream import DropRow, FamilyTokens, ThresholdRow, TokenScore, UpstreamResult
from refusal_sae.report import render_report
from refusal_sae.runs import RunDir
from refusal_sae.scoring.stats import wilson_interval
from refusal_sae.search.featureset import FeatureSet
from tests.unit.test_report import EVIL, synthetic_run

NAN = math.nan


def synthetic_jailbreaks(run: RunDir) -> JailbreakResult:
    fams = {"distractors": ["complied"] * 3 + ["degenerate"] * 2 + ["refused"],
            "leetspeak": ["refused"] * 6, EVIL: ["degenerate"] * 4 + ["refused"] * 2}
    ctl = ["refused"] * 5 + ["complied"]
    table = [pair_with_control(family_row(f, labs, f"what {f} does"), labs, ctl) for f, labs in fams.items()]
    rows = [{"index": i, "family": f, "instruction": f"instruction {i}", "prompt": f"{f} wrapper: instruction {i}",
             "source": "jailbreakbench", "seed": i, "template": 0, "completion": f"answer {EVIL}", "judgement": lab,
             "plain_judgement": "refused", "outcome": {"complied": "jailbroken", "refused": "failed"}.get(lab, lab)}
            for f, labs in [*fams.items(), (CONTROL, ctl)] for i, lab in enumerate(labs)]
    plain = [{"instruction": f"instruction {i}", "source": "jailbreakbench", "completion": "No.",
              "judgement": "refused"} for i in range(6)]
    res = JailbreakResult("wrap", ["jailbreakbench", "harmbench_test"], True, list(fams), 8, 6, 6, table,
                          family_row(CONTROL, ctl, "neutral wrapper: polite text, no attack"),
                          {"jailbroken": 3, "failed": 9, "degenerate": 6}, rows, plain)
    run.save(res, {"seed": 0, "judge": "default", "max_new_tokens": 32}, name="analysis/jailbreaks")
    return res


def synthetic_upstream(run: RunDir) -> UpstreamResult:
    ci = (0.1, 0.5)
    table = [DropRow("jailbroken", 3, 2, 0.4, ci, 0.5, (0.3, 0.7), 0.6, (0.4, 0.8), 0.1, (-0.1, 0.2), 1.2, -0.3, 1.1),
             DropRow("failed", 9, 5, 0.1, ci, 0.1, (0.0, 0.2), 0.5, (0.3, 0.7), 0.05, (-0.1, 0.2), 1.3, 0.2, 1.2),
             DropRow("degenerate", 0, 0, NAN, (NAN, NAN), NAN, (NAN, NAN), NAN, (NAN, NAN), NAN, (NAN, NAN), NAN, NAN,
                     NAN),
             DropRow("all pairs", 12, 6, 0.2, ci, 0.2, (0.1, 0.3), 0.55, (0.4, 0.7), 0.07, (-0.05, 0.2), 1.25, 0.0,
                     1.15)]
    thresholds = [ThresholdRow(x, 10 - int(10 * x), 9 - int(10 * x), x / 2) for x in (0.25, 0.5, 0.75)]
    tokens = [FamilyTokens("distractors", 6, -0.8, 0.2, 0.5, {"jailbroken": -1.0, "failed": -0.5},
                           [TokenScore(" Sure", -0.3, 4), TokenScore(EVIL, -0.1, 2)])]
    instructions = [{"instruction": f"instruction {i}", "n_tokens": 20, "set": [[1, i]], "upstream": [[1, i]],
                     "positions": {f"1:{i}": 3}, "ablated": [[1, i]], "measured": [[2, 0]],
                     "ablation_drop": 0.1 * i, "random_drop": 0.05 * (5 - i) if i != 2 else None,
                     "score_plain": 1.0, "score_ablated": 0.5, "score_random": 0.9} for i in range(5)]
    res = UpstreamResult(FeatureSet(((2, 0), (2, 7))), 0.5, "max Jaccard", thresholds, 8, 8, 12, -3.0, 5,
                         "analysis/jailbreaks", table,
                         {"refusal_drop": {"diff": 0.4, "ci": [0.2, 0.6], "n_jailbroken": 3, "n_failed": 9},
                          "ablation_drop": {"diff": None, "ci": None, "n_jailbroken": 0, "n_failed": 9}},
                         tokens, {"no upstream feature": 1}, ["only 3 jailbroken pairs"], instructions, [])
    run.save(res, {"seed": 0, "n_random": 3, "ig_steps": 2}, name="analysis/upstream")
    return res


def _probe_row(probe: str, test: str, acc: float, draws=None) -> ProbeRow:
    return ProbeRow(probe, f"what {probe}", test, 4 if probe != "dense" else 64, 1.0, 2 if probe == "dense" else None,
                    0.8, 12, 6, acc, (acc - 0.1, min(acc + 0.1, 1.0)), acc, (acc - 0.15, 1.0),
                    {"harmful": acc, "harmless": acc - 0.05}, draws)


def synthetic_probes(run: RunDir) -> ProbeResult:
    rows = []
    for test, shift in (("in_distribution", 0.0), ("ood", -0.2)):
        rows += [_probe_row("minimal", test, 0.9 + shift), _probe_row("random (minimal size)", test, 0.6 + shift,
                                                                      [0.5 + shift, 0.7 + shift]),
                 _probe_row("dense", test, 0.95 + shift)]
    gains = [GainRow(t, "minimal", b, 0.3, (0.1, 0.5), 0.2, (0.0, 0.4)) for t in ("in_distribution", "ood")
             for b in ("random (minimal size)", "dense")]
    counts = {t: {"n": 12, "positive": 6, "negative": 6} for t in ("train", "val", "in_distribution", "ood")}
    res = ProbeResult("judged greedy answers", "analysis/jailbreaks (wrapped, not refused) + plain refused",
                      {"minimal": FeatureSet(((1, 0), (2, 0)))}, {"minimal": [FeatureSet(((1, 3), (2, 4)))] * 2},
                      {"shared": "no analysis/upstream result"}, 2,
                      [{"layer": L, "C": 1.0, "val_accuracy": 0.6 + 0.1 * L, "val_auc": 0.7} for L in range(4)],
                      counts, rows, gains, [])
    run.save(res, {"seed": 0, "n_random": 2, "n_boot": 50}, name="analysis/probes")
    return res


def _rate(k: int, n: int) -> Rate:
    return Rate(k, n, wilson_interval(k, n))


def _hpoint(name: str, method: str, value: float, jb: int, att: int, xs: int, loss: float, draw=None, gated=None):
    return HardenPoint(name, method, value, _rate(jb, 8), _rate(att, 8), _rate(xs, 10), _rate(xs // 2, 6),
                       {"jailbreak": _rate(1, 8)}, loss, (loss - 0.01, loss + 0.02), loss / 2, gated, draw)


def synthetic_harden(run: RunDir) -> HardeningResult:
    gated = {"jailbreak": _rate(6, 8), "attack": _rate(5, 8), "xstest": _rate(2, 10), "harmless": _rate(1, 6)}
    points = [_hpoint("none", "none", 0.0, 2, 6, 3, 0.0), _hpoint("steer m=1", "steer", 1.0, 1, 4, 4, 0.02),
              _hpoint("steer m=2", "steer", 2.0, 0, 2, 6, 0.05), _hpoint("actadd c=0.5", "actadd", 0.5, 1, 4, 5, 0.03),
              _hpoint("actadd c=1", "actadd", 1.0, 0, 1, 9, 0.2), _hpoint("random m=2 #0", "random", 2.0, 2, 6, 3,
                                                                          0.01, draw=0),
              _hpoint("conditional m=1", "conditional", 1.0, 1, 4, 3, 0.005, gated=gated),
              _hpoint("conditional m=2", "conditional", 2.0, 1, 3, 4, 0.01, gated=gated)]
    gate = GateFit(2, [5, 9], 1.5, True, (16, 8), (16, 8), 0.9, 0.1, 0.8, 0.7, 0.2,
                   [GateCandidate(2, [5], [0.3], 1.0, 0.8, 0.2), GateCandidate(2, [5, 9], [0.3, 0.2], 1.5, 0.9, 0.1)])
    res = HardeningResult("minimal", FeatureSet(((14, 3), (20, 5))), [1.5, 0.0], "max", "post_inst", "floor", 8, 7, 1,
                          [FeatureSet(((14, 9), (20, 11)))], 20, gate,
                          {"jailbreak": [True] * 6 + [False] * 2}, ["jailbreakbench", "harmbench_test"],
                          ["roleplay", "distractors"], "prefill", "Sure, here is",
                          {"jailbreak": 8, "attack": 8, "xstest": 10, "harmless": 6}, points,
                          [PairedRow("steer m=2", "none", 8, 2, 6, 0, 4, 0.125, label="complied", group="attack")],
                          [MatchedRow("steer m=1", 0.4, 0.125, 0.5, 0.02, 0.6, 0.1, 0.45, 0.05),
                           MatchedRow("steer m=2", 0.6, 0.0, 0.25, 0.05, None)],
                          generations=[{"point": "none", "group": "attack", "prompt": EVIL, "completion": EVIL,
                                        "judgement": "complied"}])
    run.save(res, {"seed": 0, "n_boot": 50}, name="analysis/harden")
    return res


def synthetic_analyses(root: Path) -> Path:
    """A synthetic run directory (the other stages' results) plus one result of each analysis."""
    synthetic_run(root)
    run = RunDir(root)
    synthetic_jailbreaks(run)
    synthetic_upstream(run)
    synthetic_probes(run)
    synthetic_harden(run)
    return root


def _section(page: str, sid: str) -> str:
    return page.split(f'<section id="{sid}">')[1].split("</section>")[0]


def _figures(html: str) -> int:
    return len(re.findall(r'<div id="figure-\d+"', html))


def test_analysis_sections_show_rates_with_intervals_beside_their_controls(tmp_path):
    page = render_report(synthetic_analyses(tmp_path / "run")).read_text()
    ids = re.findall(r'<section id="([\w-]+)"', page)
    assert ids.index("search") < ids.index("jailbreaks") < ids.index("upstream") < ids.index("probes") \
        < ids.index("hardening")
    assert EVIL not in page  # family names, tokens, prompts and answers are escaped
    jb = _section(page, "jailbreaks")
    lo, hi = wilson_interval(5, 6)  # distractors: 5 of 6 not refused
    assert f"5/6 = 0.83 [{lo:.2f}, {hi:.2f}]" in jb and "neutral control" in jb and "McNemar" in jb
    lo, hi = wilson_interval(1, 6)  # the control: 1 of 6 not refused, in the table and drawn beside every family
    assert f"1/6 = 0.17 [{lo:.2f}, {hi:.2f}]" in jb and _figures(jb) == 1
    up = _section(page, "upstream")
    assert "L2:0, L2:7" in up and "random" in up and "0.55 [0.40, 0.70]" in up and "only 3 jailbroken pairs" in up
    assert "&#x27; Sure&#x27;" in up or "&#39; Sure&#39;" in up or "' Sure'" in up
    assert _figures(up) == 3  # drops by group, per instruction (upstream vs random clamp), the threshold sweep
    pr = _section(page, "probes")
    assert "0.900 [0.800, 1.000]" in pr and "random (minimal size)" in pr and "dense" in pr and "layer 2" in pr
    assert "skipped" in pr and "no analysis/upstream result" in pr and _figures(pr) == 2
    hd = _section(page, "hardening")
    lo, hi = wilson_interval(6, 8)
    assert f"6/8 = 0.75 [{lo:.2f}, {hi:.2f}]" in hd  # the unsteered model's prefill-attack success
    assert "actadd c=1" in hd and "conditional m=2" in hd and "random m=2 #0" in hd and "beyond the" in hd
    assert "0.050 [0.040, 0.070]" in hd and _figures(hd) == 2  # Δloss with its bootstrap interval


def test_analysis_sections_are_drawn_only_for_the_results_present(tmp_path):
    root = tmp_path / "run"
    synthetic_run(root, search=False)
    synthetic_jailbreaks(RunDir(root))
    page = render_report(root).read_text()
    assert '<section id="jailbreaks">' in page
    for sid in ("upstream", "probes", "hardening"):
        assert f'<section id="{sid}" class="off">' in page


def test_analysis_sections_draw_in_headless_chromium(tmp_path):
    from refusal_sae.report.browser import browser_missing, check_in_browser

    if (why := browser_missing()) is not None:
        pytest.skip(why)
    path = render_report(synthetic_analyses(tmp_path / "run"))
    res = check_in_browser(path)
    assert res.figures >= 14 + 8 and res.drawn == res.figures and res.errors == [] and res.overflowing == 0
