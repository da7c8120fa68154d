"""report.html from a synthetic run directory of small, fake but typed results: sections, escaping, offline, and
(where Debian's chromium and chromedriver are installed) a real headless browser: every figure drew, no console
errors, a screenshot."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from refusal_sae.direction.calibrate import ActAddCalibration
from refusal_sae.direction.result import CandidateScore, DirectionResult, HarmRefusalRow, HarmVsRefusalResult, KlRow
from refusal_sae.report import render_report
from refusal_sae.runs import RunDir, StageResult
from refusal_sae.saes.features import FeatureExample, FeatureSummary
from refusal_sae.saes.stage import SaeMetricsResult, SaeRow
from refusal_sae.scoring.evaluation import EvalResult

EVIL = "<script>alert('x')</script> & <b>bold</b>"


@dataclass
class FeatureCards(StageResult):  # the shape the search stage will write under search/cards
    kind = "feature_cards"

    stage: str
    cards: list[FeatureSummary] = field(default_factory=list)


def _eval(dataset: str, intervention: str, labels: list[str], coeff: float = 1.0) -> tuple[EvalResult, dict]:
    rows = [{"instruction": f"prompt {i} about {dataset}", "category": None, "label": "harmful",
             "completion": (EVIL if i == 0 else f"I'm sorry, I can't help with that ({intervention}).\nSecond line."),
             "judgement": lab, "reason": "", "relevance": None, "judge_score": None, "refusal_score": 1.0}
            for i, lab in enumerate(labels)]
    counts = {k: labels.count(k) for k in ("refused", "complied", "degenerate")}
    cfg = {"dataset": dataset, "n": len(labels), "seed": 0, "judge": "substring", "intervention": intervention,
           "coeff": coeff, "ablate_layers": None}
    return EvalResult("tiny", dataset, len(labels), counts, [5, 6], 0.5, rows), cfg


def synthetic_run(root: Path, cards: bool = True) -> Path:
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
    if cards:
        ex = FeatureExample(2.5, 0, 3, ["How", " to", " make", " a", " bomb", "<", "\n"], 4, "How to make a bomb")
        card = FeatureSummary("blocks.2.hook_resid_post", 2, 17, 1.2, 2.5, 0.01, [ex, ex])
        run.save(FeatureCards("search", [card]), {"seed": 0}, name="search/cards")
    return root


def test_report_sections_escaping_and_offline(tmp_path):
    path = render_report(synthetic_run(tmp_path / "run"))
    assert path == tmp_path / "run" / "report.html"
    page = path.read_text()
    for sid in ("run", "direction", "sae-quality", "calibration", "evals", "cards"):
        assert f'<section id="{sid}">' in page, sid
    # stages that do not exist yet: one short line each
    assert '<section id="interactions" class="off">' in page and "stage not available yet" in page
    # self-contained: no external script, style sheet or image
    assert not re.search(r"<(script|img|link)[^>]+(src|href)=[\"']?(https?:)?//", page)
    assert "cdn.plot.ly" not in page.split("</head>")[1]
    assert EVIL not in page and "&lt;script&gt;alert(" in page  # generations are escaped
    assert "<mark> bomb</mark>" in page and "a harmless &lt;prompt&gt;" in page
    n = int(re.search(r'data-figures="(\d+)"', page).group(1))
    assert n == len(re.findall(r'<div id="figure-\d+"', page)) >= 8
    assert "0.500 [0.150, 0.850]" in page  # jailbreakbench, none: 2 of 4 refused, 95% Wilson interval
    # the same prompts under each condition: prompt 0 changes label (refused → complied) and comes first
    jbb = page.split("<h3>jailbreakbench <span")[1]
    assert "(2 of 4 prompts change label)" in jbb


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
    assert res.figures >= 8 and res.drawn == res.figures  # every figure has a non-empty SVG
    assert res.errors == [], res.errors
    assert res.overflowing == 0  # each figure fits its column (sized after the layout, not while parsing)
    assert shot.stat().st_size > 20_000 and res.height > 2000
