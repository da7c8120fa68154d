"""Probes on planted activations (a separable feature is recovered; the dense layer is the one chosen on validation,
not the last; bootstrap intervals and paired gains), the OOD split from a jailbreak table, and the stage end to end on
a tiny model with bad input rejected before the model loads."""

import json

import numpy as np
import pytest
import torch

import refusal_sae.analysis.jailbreaks as jbmod
from refusal_sae.analysis.config import ProbeConfig
from refusal_sae.analysis.jailbreaks import CONTROL, JailbreakResult
from refusal_sae.analysis.probes import (
    LastToken,
    ProbeInputs,
    Split,
    accuracy,
    bootstrap,
    fit_probe,
    interval,
    ood_from_jailbreaks,
    run_probe_stage,
    score_probes,
)
from refusal_sae.errors import ConfigError, RefusalSaeError
from refusal_sae.runs import RunDir
from refusal_sae.search.featureset import FeatureSet
from tests.unit.test_upstream import ScriptedJudge, _files, tiny_upstream_run  # noqa: F401  (the fixture)


def test_fit_probe_recovers_a_planted_separable_feature():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    x = rng.normal(size=(300, 10))
    x[:, 3] += 4 * y  # the only informative column (Bayes accuracy 0.98)
    model, c, acc, auc = fit_probe(x[:200], y[:200], x[200:], y[200:], (0.01, 1.0))
    assert acc > 0.9 and auc > 0.95 and c in (0.01, 1.0)
    coef = np.abs(model[-1].coef_[0])
    assert coef.argmax() == 3


def planted(n: int, rng, signal_layer: int, ood: bool = False) -> tuple[LastToken, np.ndarray]:
    """Residual stream with the label at dimension 0 of ``signal_layer`` (flipped out of distribution), SAE codes with
    the label at feature (2, 5) everywhere; other features fire at random."""
    y = rng.integers(0, 2, n)
    resid = torch.randn(n, 4, 8)
    resid[:, signal_layer, 0] += torch.tensor(3.0 * (1 - 2 * y if ood else 2 * y - 1))
    codes = torch.relu(torch.randn(n, 2, 48))
    codes[:, 1, 5] = torch.tensor(2.0 * y) + 0.1 * torch.rand(n)
    return LastToken(resid, codes, [1, 2]), y


def test_score_probes_on_planted_activations():
    rng = np.random.default_rng(1)
    torch.manual_seed(1)
    acts, splits = {}, {}
    for name, n, ood in (("train", 120, False), ("val", 60, False), ("in_distribution", 80, False), ("ood", 80, True)):
        acts[name], y = planted(n, rng, signal_layer=1, ood=ood)
        splits[name] = Split([f"{name}{i}" for i in range(n)], y, ["pos" if v else "neg" for v in y])
    fs = FeatureSet(((2, 5), (1, 7)))
    inputs = ProbeInputs(splits["train"], splits["val"], splits["in_distribution"], splits["ood"], "planted",
                         {"minimal": fs}, {"shared": "not in this run"})
    res = score_probes(acts, inputs, ProbeConfig(n_random=5, n_boot=200, cs=(0.1, 1.0)))
    assert res.dense_layer == 1  # chosen on validation: the layer holding the signal, not the last
    assert [r["layer"] for r in res.dense_layers] == [0, 1, 2, 3]
    rows = {(r.probe, r.test): r for r in res.rows}
    assert rows[("minimal", "in_distribution")].accuracy > 0.95 and rows[("minimal", "ood")].accuracy > 0.95
    assert rows[("dense", "in_distribution")].accuracy > 0.9 and rows[("dense", "in_distribution")].layer == 1
    assert rows[("dense", "ood")].accuracy < 0.2  # its direction flips out of distribution
    rnd = rows[("random (minimal size)", "ood")]
    assert 0.3 < rnd.accuracy < 0.7 and len(rnd.draws) == 5 and rnd.n_features == 2
    assert all((2, 5) not in d.items for d in res.random_sets["minimal"])  # never the set's own features
    for r in res.rows:
        lo, hi = r.accuracy_ci
        assert lo - 1e-9 <= r.accuracy <= hi + 1e-9 and set(r.group_accuracy) == {"pos", "neg"}
    gains = {(g.test, g.b): g for g in res.gains}
    assert gains[("ood", "dense")].accuracy_diff > 0.7 and gains[("ood", "dense")].accuracy_ci[0] > 0.5
    assert gains[("ood", "random (minimal size)")].accuracy_ci[0] > 0.2
    assert len(res.predictions) == 160 and {"minimal", "dense"} <= set(res.predictions[0])


def test_bootstrap_intervals_are_paired():
    y = np.array([0, 1] * 20)
    p = np.linspace(0.1, 0.9, 40)
    boots = bootstrap({"a": [p], "b": [p.copy()]}, y, 300, 0)
    assert interval(boots["a"][0] - boots["b"][0]) == (0.0, 0.0)  # the same resamples for every probe
    lo, hi = interval(boots["a"][0])
    assert lo <= accuracy(p, y) <= hi


def test_ood_split_from_a_jailbreak_table():
    def row(fam, lab):
        return {"family": fam, "judgement": lab, "prompt": f"{fam}:{lab}", "plain_judgement": "refused"}

    jb = JailbreakResult("wrap", ["jailbreakbench"], True, ["a", "b"], 3, 3, 3, [], None, {},
                         [row("a", "complied"), row("a", "refused"), row("b", "degenerate"), row(CONTROL, "complied")])
    s = ood_from_jailbreaks(jb, ["p1", "p2"])
    assert s.prompts == ["p1", "p2", "a:complied", "b:degenerate"] and s.y.tolist() == [1, 1, 0, 0]
    assert s.groups[2:] == ["wrapped complied", "wrapped degenerate"] and s.dropped == {"wrapped refused": 1}


# --- the stage end to end -------------------------------------------------------------------------------------------------
def _judge(data_dir):
    from refusal_sae.data import load_dataset

    return ScriptedJudge([p for n in ("harmless_train", "harmless_val", "harmless_test")
                          for p in load_dataset(n, data_dir).instructions])


def _saes(saes):
    from refusal_sae.saes.loading import SaeSet

    out = SaeSet()
    for L, s in saes.items():
        out.add(s, f"tiny-{L}")
    return out


def test_probe_stage_end_to_end(tiny_upstream_run, data_dir, monkeypatch):  # noqa: F811
    from refusal_sae.analysis.probes import ProbeResult

    h, saes, run = tiny_upstream_run
    monkeypatch.setattr(jbmod, "get_judge", lambda spec: _judge(data_dir))
    cfg = ProbeConfig(n_train=6, n_val=4, n_test=4, n_random=5, n_boot=50, cs=(1.0,), max_new_tokens=2)
    res = run_probe_stage(h, _saes(saes), run, cfg, data_dir, progress=False)
    assert set(res.feature_sets) == {"minimal", "global"} and "no analysis/upstream result" in res.skipped["shared"]
    probes = {r.probe for r in res.rows}
    assert probes == {"minimal", "random (minimal size)", "global", "random (global size)", "dense"}
    assert res.counts["train"] == {"n": 12, "positive": 6, "negative": 6, "dropped harmful not refused": 0,
                                   "dropped harmless refused": 0}
    assert res.counts["ood"]["negative"] == 3 and res.counts["ood"]["positive"] == 8  # prefix injection × 3 complied
    assert 0 <= res.dense_layer < h.n_layers and len(res.gains) == 8
    assert RunDir(run.root).load(ProbeResult, "analysis/probes") is not None


def test_probe_cli_bad_input_fails_before_the_model_loads(tmp_path, tiny_upstream_run):  # noqa: F811
    from typer.testing import CliRunner

    from refusal_sae.cli import app

    _, _, run = tiny_upstream_run
    RunDir(tmp_path / "bare").path("direction")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"adversarial": "no instruction field"}]))
    cases = [(tmp_path / "bare", [], "run `refusal-sae search"),
             (run.root, ["--features", "minimal,best"], "feature sets must be among"),
             (run.root, ["--ood-dataset", str(bad)], "none of the fields"),
             (run.root, ["--jailbreak-datasets", "harmful_train"], "no jailbreak table"),
             (run.root, ["--cs", "0,1"], "C must be positive")]
    for root, args, needle in cases:
        before = _files(root)
        r = CliRunner().invoke(app, ["probe", "--model", str(tmp_path / "no-model"), "--run-dir", str(root), *args])
        assert isinstance(r.exception, RefusalSaeError) and needle in str(r.exception), (args, r.exception)
        assert _files(root) == before  # nothing written, nothing half-written
    with pytest.raises(ConfigError):
        ProbeConfig(n_random=0).validate()


def test_analysis_cli_end_to_end(tmp_path, data_dir, monkeypatch):
    """The three commands in order through the CLI (tables printed, one JSON object as the last line), on a saved tiny
    model with a fake search run: jailbreaks → upstream → probe with the upstream analysis's shared features."""
    from typer.testing import CliRunner

    from refusal_sae.cli import app
    from tests.conftest import build_tiny
    from tests.unit.test_search import tiny_saes
    from tests.unit.test_upstream import fake_search_run

    h = build_tiny("llama")
    h.model.save_pretrained(tmp_path / "model", safe_serialization=True)
    h.tokenizer.save_pretrained(tmp_path / "model")
    saes = tiny_saes()
    for L, sae in saes.items():
        sae.save_model(tmp_path / "saes" / f"blocks.{L}.hook_resid_post")
    run = fake_search_run(tmp_path / "run", h, saes)
    monkeypatch.setattr(jbmod, "get_judge", lambda spec: _judge(data_dir))
    base = ["--model", str(tmp_path / "model"), "--run-dir", str(run.root), "--data-dir", str(data_dir)]
    runner = CliRunner()

    def invoke(*args) -> dict:
        r = runner.invoke(app, list(args))
        assert r.exit_code == 0, (r.output, r.exception)
        return json.loads(r.output.strip().splitlines()[-1])

    jb = invoke("jailbreaks", *base, "--families", "prefix_injection,style_injection", "--n-instructions", "3",
                "--max-new-tokens", "2", "--json")
    assert jb["pair_counts"] == {"jailbroken": 3, "failed": 3, "degenerate": 0}
    saes_opt = ["--saes", str(tmp_path / "saes")]
    up = invoke("upstream", *base, *saes_opt, "--n-train", "4", "--n-val", "4", "--ig-steps", "2", "--last", "3",
                "--n-random", "2", "--max-new-tokens", "2", "--thresholds", "0.25,0.5,1", "--json")
    assert up["threshold"] in (0.25, 0.5, 1.0) and len(up["table"]) == 4
    pr = invoke("probe", *base, *saes_opt, "--features", "minimal,shared", "--n-train", "6", "--n-val", "4",
                "--n-test", "4", "--n-random", "5", "--n-boot", "20", "--cs", "1", "--max-new-tokens", "2", "--json")
    assert {r["probe"] for r in pr["rows"]} == {"minimal", "random (minimal size)", "shared", "random (shared size)",
                                                "dense"}
    assert pr["skipped"] == {} and len(pr["dense_layers"]) == h.n_layers
