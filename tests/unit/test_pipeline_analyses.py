"""The analyses as `run` stages (jailbreaks, upstream, probes, harden): their checks before any work, their plan, and
direction → search → the four analyses end to end on a tiny random Llama with two random SAEs through the config path,
resumed (every stage skipped), with the report's analysis sections drawn."""

from __future__ import annotations

import json

import pytest

from refusal_sae.analysis.config import jailbreak_stage_name
from refusal_sae.errors import ConfigError, DataError
from refusal_sae.pipeline.config import load_config
from tests.unit.test_pipeline import _check, sae_dir, tiny_dir  # noqa: F401  (fixtures)

ANALYSES = ["direction", "search", "jailbreaks", "upstream", "probes", "harden"]
SEARCH = {"k_per_layer": 4, "top_k": [2], "clamps": [0], "ig_steps": 2, "n_attribution": 4, "n_harmless": 4,
          "n_val": 6, "n_random": 1, "greedy_seeds": 1, "greedy_taus": [0.1], "n_card_prompts": 2, "max_new_tokens": 3}


@pytest.mark.parametrize("raw, error, needle", [
    ({"stages": ["direction", "search", "upstream"]}, ConfigError,
     "stage 'upstream' needs stage 'jailbreaks' before it in stages"),
    ({"stages": ["direction", "search", "jailbreaks", "probes"]}, ConfigError,
     "stage 'probes' needs stage 'upstream' before it"),  # the shared feature set is the upstream stage's
    ({"stages": ["direction", "harden"]}, ConfigError, "stage 'harden' needs stage 'search' before it"),
    ({"jailbreaks": {"families": ["roleplay", "nope"]}}, ConfigError, "jailbreaks: unknown jailbreak family 'nope'"),
    ({"jailbreaks": {"datasets": ["nope"]}}, DataError, "jailbreaks: unknown dataset 'nope'"),
    ({"jailbreaks": {"n_instructions": 0}}, ConfigError, "jailbreaks: these settings must be positive: n_instructions=0"),
    ({"jailbreaks": {"datasets": ["jailbreakbench"]}}, ConfigError,
     f"upstream: jailbreaks: reads the jailbreak table analysis/jailbreaks, but the jailbreaks stage writes "
     f"{jailbreak_stage_name(('jailbreakbench',))}; set jailbreaks: {jailbreak_stage_name(('jailbreakbench',))}"),
    ({"jailbreaks": {"datasets": ["harmful_val"]}, "upstream": {"jailbreaks": jailbreak_stage_name(("harmful_val",))},
      "probes": {"jailbreaks": jailbreak_stage_name(("harmful_val",))}}, ConfigError,
     "probes: the jailbreak table wraps ['harmful_val'], none a held-out test split"),
    ({"upstream": {"k": 99}}, ConfigError, "upstream: k = 99 is larger than the search's candidate pool (4 per layer × "
                                           "1 layers)"),
    ({"upstream": {"clamp": 1.0}}, ConfigError, "upstream: clamp must be a finite multiplier other than 1"),
    ({"probes": {"feature_sets": ["minimal", "best"]}}, ConfigError, "probes: feature sets must be among"),
    ({"probes": {"ood_dataset": "missing.jsonl"}}, DataError, "probes: dataset file not found: missing.jsonl"),
    ({"harden": {"gate_layers": [3]}}, ConfigError, "harden: no SAE at gate layers [3]; the SAEs cover layers [1]"),
    ({"harden": {"jailbreak_datasets": ["harmful_train"]}}, ConfigError, "harden: ['harmful_train'] choose the "),
    ({"harden": {"judge": "oracle"}}, ConfigError, "harden: unknown judge 'oracle'"),
    ({"harden": {"multipliers": []}}, ConfigError, "harden: no steering multipliers given"),
])
def test_analysis_settings_fail_before_any_work(tiny_dir, data_dir, sae_dir, raw, error, needle):  # noqa: F811
    raw = {"stages": ANALYSES, "saes": {"folder": str(sae_dir)}, "search": {"top_k": [2], "k_per_layer": 4}} | raw
    with pytest.raises(error) as e:
        _check(raw, tiny_dir, data_dir)
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_plan_of_the_analyses(tiny_dir, data_dir, sae_dir):  # noqa: F811
    plan = _check({"stages": ANALYSES, "saes": {"folder": str(sae_dir)}, "search": {"top_k": [2], "k_per_layer": 4},
                   "jailbreaks": {"families": ["roleplay", "leetspeak"], "n_instructions": 5, "batch_size": 8,
                                  "max_new_tokens": 10},
                   "upstream": {"n_train": 6, "n_val": 4, "ig_steps": 2, "n_random": 2, "max_instructions": 3},
                   "probes": {"n_train": 6, "n_val": 4, "n_test": 5, "max_new_tokens": 10},
                   "harden": {"multipliers": [1, 2], "actadd_coeffs": [1], "random_multipliers": [2], "n_random": 1,
                              "n_calib": 4, "n_gate": 3, "n_jailbreak": 4, "n_xstest": 5, "n_harmless": 2,
                              "max_new_tokens": 10}}, tiny_dir, data_dir)
    rows = {s: [r for r in plan.rows if r.stage == s] for s in ("jailbreaks", "upstream", "probes", "harden")}
    (jb,) = rows["jailbreaks"]
    assert jb.prompts == 8 + 5 * 3 and jb.generated == (8 + 15) * 10  # a chunk of 8 plain, 5 × (2 families + control)
    attr, pairs = rows["upstream"]
    assert attr.prompts == 10 and attr.forwards == 10 + (10 + 3) * (3 * 2 + 2)  # LA-IG on 6 + 4 and 3 plain
    assert pairs.prompts == 3 + 6 and pairs.forwards == 3 * (2 + 2) + 4 * 6  # 3 instructions × 2 families
    (pr,) = rows["probes"]
    assert pr.generated == (12 + 8 + 5) * 10 and "3 sets" in pr.what
    calib, points = rows["harden"]
    assert calib.prompts == 4 + (2 * 3 + 3) * 2 and points.prompts == 4 * 2 + 5 + 2
    assert points.generated == 5 * 15 * 10 and points.what.startswith("5 points × 15 held-out (+2 conditional)")


def test_pipeline_runs_the_analyses_resumes_and_reports(tiny_dir, data_dir, tmp_path, monkeypatch):  # noqa: F811
    """direction → search → jailbreaks → upstream → probes → harden on a tiny random Llama. A random model never
    refuses, so the judges are stand-ins: the search's labels hash the answer; the analyses' judge refuses a harmful
    prompt unless it injects a compliant opening (prefix injection does), and answers every harmless one."""
    import refusal_sae.search.runner as search_stage
    from refusal_sae.pipeline.runner import run_pipeline
    from tests.unit.test_pipeline import analysis_judges
    from tests.unit.test_search import HashJudge, tiny_saes

    monkeypatch.setattr(search_stage, "get_judge", lambda spec: HashJudge())
    analysis_judges(monkeypatch, data_dir)
    saes = tmp_path / "saes"
    for L, sae in tiny_saes().items():
        sae.save_model(saes / f"blocks.{L}.hook_resid_post")
    run = tmp_path / "run"
    raw = {"model": {"model": str(tiny_dir), "device": "cpu", "dtype": "float32"}, "saes": {"folder": str(saes)},
           "data_dir": str(data_dir), "run_dir": str(run), "seed": 0, "stages": ANALYSES,
           "direction": {"n_train": 4, "n_val": 3, "selection": {"layers": [1, 2], "positions": [-1], "max_kl": 1e9,
                                                                 "min_induce": -1e9}},
           "search": SEARCH,
           "jailbreaks": {"families": ["prefix_injection", "style_injection"], "n_instructions": 3, "batch_size": 4,
                          "max_new_tokens": 2},
           "upstream": {"n_train": 4, "n_val": 4, "ig_steps": 1, "last": 3, "n_random": 1, "thresholds": [0.25, 0.5],
                        "max_new_tokens": 2, "batch_size": 4},
           "probes": {"n_train": 4, "n_val": 3, "n_test": 3, "n_random": 2, "n_boot": 20, "cs": [1.0],
                      "max_new_tokens": 2},
           "harden": {"features": "global", "multipliers": [2], "actadd_coeffs": [1], "random_multipliers": [2],
                      "n_calib": 4, "n_gate": 3, "gate_sizes": [1], "n_jailbreak": 2, "n_xstest": 2, "n_harmless": 2,
                      "max_new_tokens": 3, "n_boot": 20}}
    logs: list[str] = []
    report = run_pipeline(load_config(raw=raw), logs.append)
    text = "\n".join(logs)
    assert "[3/6] jailbreaks" in text and "[6/6] harden" in text, text
    assert "3 refused instructions; not refused: prefix_injection 3/3" in text  # the one-line summaries
    assert "refusal features (in ≥" in text and "accuracy in distribution:" in text and "steer m=2: jailbreak" in text
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert {"analysis/jailbreaks", "analysis/upstream", "analysis/probes", "analysis/harden"} <= set(stages)
    probes = json.loads((run / "analysis/probes/result.json").read_text())["data"]
    assert "shared" in probes["feature_sets"] and probes["counts"]["ood"]["negative"] == 3  # upstream's set is probed
    harden = json.loads((run / "analysis/harden/result.json").read_text())["data"]
    assert [p["name"] for p in harden["points"]] == ["none", "steer m=2", "actadd c=1", "random m=2 #0",
                                                     "conditional m=2"]
    page = report.read_text()
    for sid in ("jailbreaks", "upstream", "probes", "hardening"):
        assert f'<section id="{sid}">' in page, sid
    logs.clear()
    run_pipeline(load_config(raw=raw), logs.append)  # complete: every stage skipped
    assert sum("complete for this config: skipped" in line for line in logs) == 6
    logs.clear()
    raw["harden"]["multipliers"] = [2, 4]  # one more point: only the harden stage runs again
    run_pipeline(load_config(raw=raw), logs.append)
    assert sum("complete for this config: skipped" in line for line in logs) == 5 and "[6/6] harden" in "\n".join(logs)
    from refusal_sae.report.browser import browser_missing, check_in_browser

    if (why := browser_missing()) is not None:
        pytest.skip(f"browser check: {why}")
    res = check_in_browser(report)
    assert res.drawn == res.figures and res.errors == [] and res.overflowing == 0
