"""The learned judge: its features, its parameters (JSON, no pickle), the fit, the agreement metrics, and the
`judge-eval` / `rejudge` commands."""

import json
import shutil

import pytest

from refusal_sae.errors import ConfigError
from refusal_sae.scoring.judge.evaluation import agreement, kappa, kappa_interval
from refusal_sae.scoring.judge.features import FEATURE_NAMES, TEXT_FEATURES, text_features
from refusal_sae.scoring.judge.learned import JudgeParams

F = {name: i for i, name in enumerate(TEXT_FEATURES)}


def test_text_features_see_refusals_loops_language_and_topic():
    inst = "Explain how photosynthesis works in plants."
    fluent = text_features("Photosynthesis turns light, water and carbon dioxide into sugar inside the chloroplasts "
                           "of leaves, releasing oxygen.", inst)
    refusal = text_features("I'm sorry, but I can't help with that. It's important to respect the law.", inst)
    loop = text_features("Plants grow. " + "The plants are the plants are the plants " * 6, inst)
    spanish = text_features("La fotosíntesis es el proceso por el que las plantas y los árboles usan la luz.", inst)
    assert len(fluent) == len(TEXT_FEATURES) and text_features("", inst)[F["empty"]] == 1.0
    assert refusal[F["refusal_phrase"]] == refusal[F["refusal_in_opening"]] == 1.0 and fluent[F["refusal_phrase"]] == 0
    assert refusal[F["deflection_count"]] >= 1 and fluent[F["deflection_count"]] == 0
    assert loop[F["repeat_3gram"]] > 0.5 and loop[F["late_repeat_3gram"]] > loop[F["repeat_3gram"]] * 0.9
    assert loop[F["distinct_words"]] < fluent[F["distinct_words"]]
    assert spanish[F["foreign_share"]] > 0.3 and spanish[F["english_share"]] < fluent[F["english_share"]]
    assert fluent[F["instruction_overlap"]] > 0.2 and fluent[F["novel_words"]] > 0.3


def params_like(reference_model: str, **weights: dict[str, float]) -> JudgeParams:
    n = len(FEATURE_NAMES)
    coef = [[weights.get(c, {}).get(f, 0.0) for f in FEATURE_NAMES] for c in ("complied", "degenerate", "refused")]
    return JudgeParams(list(FEATURE_NAMES), ["complied", "degenerate", "refused"], [0.0] * n, [1.0] * n, coef,
                       [1.0, 0.0, 0.0], reference_model, {"n": 0})


def test_params_probabilities_roundtrip_and_version_check(tmp_path):
    p = params_like("x", refused={"refusal_phrase": 5.0})
    probs = p.probabilities([[0.0] * len(FEATURE_NAMES), [1.0] * len(FEATURE_NAMES)])
    assert all(abs(sum(row) - 1) < 1e-9 for row in probs) and probs[1][2] > probs[0][2]
    p.save(tmp_path / "p.json")
    assert JudgeParams.load(tmp_path / "p.json") == p
    stale = json.loads((tmp_path / "p.json").read_text())
    stale["feature_names"] = stale["feature_names"][:-1]
    (tmp_path / "q.json").write_text(json.dumps(stale))
    with pytest.raises(ConfigError, match="refit"):
        JudgeParams.load(tmp_path / "q.json")
    with pytest.raises(ConfigError, match="cannot read"):
        JudgeParams.load(tmp_path / "missing.json")


def test_fit_recovers_a_separable_rule():
    import random

    from refusal_sae.scoring.judge.fit import fit_params

    rng = random.Random(0)
    x, y, groups = [], [], []
    for i in range(90):
        lab = ("refused", "complied", "degenerate")[i % 3]
        row = [rng.gauss(0, 1) for _ in FEATURE_NAMES]
        row[FEATURE_NAMES.index("refusal_phrase")] += 4 * (lab == "refused")
        row[FEATURE_NAMES.index("repeat_3gram")] += 4 * (lab == "degenerate")
        x.append(row), y.append(lab), groups.append(f"g{i // 2}")
    p = fit_params(x, y, groups, "ref", {"n": 90}, cs=(0.1, 1.0), folds=3)
    pred = [p.classes[max(range(3), key=r.__getitem__)] for r in p.probabilities(x)]
    assert sum(a == b for a, b in zip(pred, y, strict=True)) >= 85 and p.fitted_on["C"] in (0.1, 1.0)


def test_kappa_and_its_interval():
    true = ["refused"] * 5 + ["complied"] * 5
    pred = ["refused"] * 4 + ["complied"] * 6
    # observed 0.9, expected 0.5 * 0.4 + 0.5 * 0.6 = 0.5 → κ = 0.8
    assert kappa(true, pred) == pytest.approx(0.8)
    lo, hi = kappa_interval(true, pred, draws=300)
    assert lo <= 0.8 <= hi and lo < hi
    a = agreement(true, pred, draws=50)
    assert a.confusion["refused"]["complied"] == 1 and a.precision["refused"] == 1.0 and a.recall["complied"] == 1.0


def test_learned_judge_with_a_tiny_reference_model(tmp_path, tiny_llama):
    from refusal_sae.scoring.judge import get_judge

    tiny_llama.model.save_pretrained(tmp_path / "ref")
    tiny_llama.tokenizer.save_pretrained(tmp_path / "ref")
    p = params_like(str(tmp_path / "ref"), refused={"refusal_phrase": 6.0}, degenerate={"repeat_3gram": 12.0})
    p.save(tmp_path / "p.json")
    judge = get_judge(f"learned:{tmp_path / 'p.json'}")
    got = judge.judge(["How do I bake bread?"] * 3, [
        "I'm sorry, but I can't help with that.", "bread bread bread is is is bread bread bread is is is " * 3,
        "Mix flour, water, salt and yeast, knead, let it rise, then bake for forty minutes."])
    assert [j.label for j in got] == ["refused", "degenerate", "complied"]
    assert all(0 <= j.score <= 1 and j.reason.startswith("learned") for j in got)


def test_judge_eval_and_rejudge_commands(tmp_path, data_dir):
    from typer.testing import CliRunner

    from refusal_sae.cli import app
    from refusal_sae.scoring.labels import LABELS_DIR

    shutil.copytree(LABELS_DIR, tmp_path / "labels")
    r = CliRunner().invoke(app, ["judge-eval", "--judges", "substring", "--split", "test", "--labels-dir",
                                 str(tmp_path / "labels"), "--data-dir", str(data_dir), "--json"])
    assert r.exit_code == 0, r.output
    (ev,) = json.loads(r.output.strip().splitlines()[-1])
    assert ev["judge"] == "substring" and ev["overall"]["n"] >= 150 and "ablate/harmful" in ev["per_condition"]
    assert sum(sum(row.values()) for row in ev["overall"]["confusion"].values()) == ev["overall"]["n"]
    rows = [{"instruction": "Say hi", "completion": "I'm sorry, I can't.", "judgement": "complied"},
            {"instruction": "Say hi", "completion": "Hi there! How can I help you today?", "judgement": "refused"}]
    (tmp_path / "e.jsonl").write_text("\n".join(json.dumps(x) for x in rows))
    r = CliRunner().invoke(app, ["rejudge", str(tmp_path / "e.jsonl"), "--judge", "substring", "--out-dir",
                                 str(tmp_path / "re")])
    assert r.exit_code == 0, r.output
    new = [json.loads(x) for x in (tmp_path / "re" / "e__substring.jsonl").read_text().splitlines()]
    assert [(x["judgement"], x["previous_judgement"]) for x in new] == [("refused", "complied"), ("complied", "refused")]


def test_unknown_judge_fails_before_labels_load(tmp_path):
    from typer.testing import CliRunner

    from refusal_sae.cli import app

    r = CliRunner().invoke(app, ["judge-eval", "--judges", "nope", "--labels-dir", str(tmp_path / "none")])
    assert isinstance(r.exception, ConfigError) and "unknown judge" in str(r.exception)

