"""Stages 4–5 on planted cases and tiny random models: critical-but-silent removals, newly active features by position
kind, the engine that keeps a base set clamped, and the `dormant` command end to end and on bad input."""

import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from refusal_sae.search.featureset import FeatureSet, clamp_set
from tests.unit.test_interactions import PROMPTS, searched  # noqa: F401  (the module fixture)
from tests.unit.test_search import HashJudge, tiny_saes


class PlantedEngine:
    """Refusal score of prompt p = base − Σ weight[feature][p] over the clamped features; answers carry the score,
    so a judge can read it back (refused when positive)."""

    def __init__(self, saes, weights, base=5.0):
        self.layer_of = {id(s): L for L, s in saes.items()}
        self.weights, self.base = weights, base
        self.prompt_ids: dict[str, int] = {}
        self.generated = 0

    def _score(self, p: int, clamps) -> float:
        return self.base - sum(self.weights[(self.layer_of[id(c.sae)], f)][p] for c in clamps for f in c.feature_ids)

    def score(self, prompts, sets, tokens):
        return torch.tensor([[self._score(self.prompt_ids[q], s) for q in prompts] for s in sets])

    def generate_per_prompt(self, prompts, sets, max_new_tokens, batch_size, progress=False, desc=""):
        self.generated += len(prompts)
        return [f"{self._score(self.prompt_ids[q], s):.3f}" for q, s in zip(prompts, sets, strict=True)]


class ScoreJudge:
    def judge(self, prompts, completions):
        return [SimpleNamespace(label="refused" if float(c) > 0 else "complied") for c in completions]


A, B, C = (1, 1), (1, 2), (2, 3)


def planted():
    saes = tiny_saes()
    engine = PlantedEngine(saes, {A: [3.0, 3.0], B: [3.0, 3.0], C: [0.2, 0.2]})
    engine.prompt_ids = {"p0": 0, "p2": 1}
    fs = FeatureSet((A, B, C))
    silent = torch.tensor([[False, True, True], [False, False, True]])  # B silent on p0, C silent on both
    woken = torch.tensor([[True, True, False], [True, True, False]])  # B wakes up under the clamp on p0
    return saes, engine, fs, silent, woken


@pytest.mark.parametrize("screen", ["score", "none"])
def test_removal_tests_find_a_planted_critical_silent_feature(screen):
    from refusal_sae.search.dormant import removal_tests, summarize_silent

    saes, engine, fs, silent, woken = planted()
    tests = removal_tests(engine, ScoreJudge(), saes, ["p0", "p2"], "global", fs, 0.0, silent, woken, [0], screen, 0.0,
                          3, 2, progress=False)
    assert len(tests) == 6 and all(t.score_with == pytest.approx(-1.2) for t in tests)
    by = {(t.prompt, t.feature): t for t in tests}
    assert by[(0, B)].silent and by[(0, B)].critical and by[(0, B)].woken  # removing B restores refusal on p0
    assert by[(0, C)].silent and not by[(0, C)].critical  # C carries almost nothing
    assert by[(0, A)].critical and not by[(0, A)].silent
    # the score screen: only removals whose score rises above 0 are judged
    assert engine.generated == (4 if screen == "score" else 6)
    assert (by[(0, C)].judged is None) == (screen == "score")
    s = summarize_silent("global", fs, 5, [0, 1], tests, 0.0)
    assert (s.n_flipped, s.silent_pairs, s.active_pairs) == (2, 3, 3)
    assert (s.silent_critical, s.active_critical, s.silent_critical_woken) == (1, 3, 1)
    assert s.silent_critical_by_score == 1 and s.active_critical_by_score == 3
    assert s.critical_silent_per_prompt == [1, 0] and s.prompts_with_critical_silent == 1
    assert s.features == [{"feature": [1, 2], "prompts": 1}] and s.flipped_ci[0] < 0.4 < s.flipped_ci[1]


def test_with_base_keeps_the_current_set_clamped():
    from refusal_sae.search.dormant import WithBase

    saes = tiny_saes()
    seen = []

    class Recorder:
        def score(self, prompts, sets, tokens):
            seen.extend(sets)
            return torch.zeros(len(sets), len(prompts))

    base = FeatureSet(((1, 4), (2, 0)))
    eng = WithBase(Recorder(), saes, [1, 2], base, -1.0)
    eng.score(["x"], [clamp_set(saes, FeatureSet(((2, 5), (1, 4))), -1.0), []], [0])
    got = [{(L, f) for c in s for f in c.feature_ids for L in [1 if c.sae is saes[1] else 2]} for s in seen]
    assert got == [{(1, 4), (2, 0), (2, 5)}, {(1, 4), (2, 0)}]
    assert all(c.value == -1.0 and c.mode == "scale" for s in seen for c in s)


def test_member_activity_and_newly_active_by_position_kind(tiny_llama):
    """Against a brute-force count over the per-position codes; a clamp that changes nothing (c = 1) wakes nothing."""
    from refusal_sae.search.clamped import KINDS, iter_codes, position_kinds
    from refusal_sae.search.dormant import member_activity, newly_active

    h = tiny_llama
    saes = tiny_saes()
    layers = [1, 2]
    (idx, batch, clean), = list(iter_codes(h, saes, layers, PROMPTS, None, batch_size=8))
    order = torch.tensor(idx)
    kinds = position_kinds(batch)
    real = kinds >= 0
    top = ((clean[1] > 0) & real[..., None]).sum((0, 1)).argsort(descending=True)
    fs = FeatureSet(((1, int(top[0])), (1, int(top[1]))))
    members = FeatureSet(((1, int(top[0])), (2, 3), (2, 7)))
    act = member_activity(h, saes, PROMPTS, members, batch_size=3)
    for m, (L, f) in enumerate(members):
        want = ((clean[L][..., f] > 0) & real).any(1)
        assert act[order, m].tolist() == want.tolist()
    assert act[:, 0].all()  # the most active feature fires on every prompt
    (_, _, clamped), = list(iter_codes(h, saes, layers, PROMPTS, fs, -3.0, batch_size=8))
    res, positions, tops = newly_active(h, saes, layers, PROMPTS, fs, -3.0, "minimal set", batch_size=8, top=5)
    events, pairs = dict.fromkeys(KINDS, 0), 0
    for L in layers:
        before = ((clean[L] > 0) & real[..., None]).any(1)
        new = (clamped[L] > 0) & real[..., None] & ~before[:, None, :]
        if L == 1:
            new[..., [f for _, f in fs]] = False
        pairs += int(new.any(1).sum())
        for k, kind in enumerate(KINDS):
            events[kind] += int(new[kinds == k].sum())
    assert res.pairs == pairs > 0 and res.events == events and sum(res.pairs_by_first_kind.values()) == pairs
    assert positions == {kind: int((kinds == k).sum()) for k, kind in enumerate(KINDS)}
    assert sum(res.per_layer.values()) == pairs and res.per_layer[1] >= 0 and len(tops) <= 5
    assert all(t["prompts"] >= 1 and sum(t["kinds"].values()) >= 1 for t in tops)
    same, _, _ = newly_active(h, saes, layers, PROMPTS, fs, 1.0, "identity", batch_size=8)
    assert same.pairs == 0 and same.silenced_pairs == 0 and sum(same.events.values()) == 0


# --- the command ---------------------------------------------------------------------------------------------------------------
def test_dormant_cli_end_to_end_and_resume(searched, tmp_path, monkeypatch):  # noqa: F811
    from typer.testing import CliRunner

    import refusal_sae.search.dormant as dormant
    import refusal_sae.search.interactions as inter
    from refusal_sae.cli import app
    from refusal_sae.runs import RunDir
    from refusal_sae.search.dormant import NewlyActiveResult, RoundsResult, SilentResult

    run = tmp_path / "run"
    shutil.copytree(searched.run, run)
    monkeypatch.setattr(dormant, "get_judge", lambda spec: HashJudge())
    monkeypatch.setattr(inter, "get_judge", lambda spec: HashJudge())
    args = ["dormant", "--model", str(searched.root / "model"), "--run-dir", str(run), "--saes", str(searched.root / "saes"),
            "--datasets", str(searched.heldout), "--n-prompts", "6", "--screen", "none", "--max-rounds", "1",
            "--n-attribution", "3", "--ig-steps", "2", "--max-new-tokens", "3", "--batch-size", "8", "--json"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, (r.output, r.exception)
    res = json.loads(r.output.strip().splitlines()[-1])
    rd = RunDir(run)
    silent = rd.load(SilentResult, "search/dormant/silent")
    newly = rd.load(NewlyActiveResult, "search/dormant/newly_active")
    rounds = rd.load(RoundsResult, "search/dormant/rounds")
    assert [s["set_name"] for s in res["silent"]] == ["global", "minimal"]
    for s in silent.summaries:
        assert s.silent_pairs + s.active_pairs == s.n_flipped * s.size == s.judged_pairs  # screen none: all judged
    assert len(silent.tests) == sum(s.judged_pairs for s in silent.summaries)
    assert all(0 <= t.prompt < len(silent.prompts) for t in silent.tests)
    assert newly.kinds == ["first", "template", "instruction", "post_instruction"] and len(newly.random) == 2
    assert sum(newly.positions.values()) > 0 and newly.minimal.size == len(silent.sets["minimal"])
    assert [row.round for row in rounds.rows][0] == 0 and 1 <= len(rounds.rows) <= 2 and rounds.stopped
    assert rounds.rows[0].size == len(silent.sets["minimal"]) and len(rounds.rows[0].random_complied) == 2
    if len(rounds.rows) == 2:
        assert rounds.rows[1].size == rounds.rows[0].size + len(rounds.rows[1].added)
    assert res["rounds"]["stopped"] == rounds.stopped
    stamps = {p: p.stat().st_mtime_ns for p in (run / "search/dormant").rglob("result.json")}
    r = CliRunner().invoke(app, args)  # complete: nothing recomputed
    assert r.exit_code == 0 and all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    r = CliRunner().invoke(app, [*args, "--min-drop", "5"])  # another stopping rule: the rounds done are reused
    assert r.exit_code == 0, (r.output, r.exception)
    per_round = {p: t for p, t in stamps.items() if p.parent.parent.name == "rounds"}  # rounds/r<i>, rounds/val_refused
    assert len(per_round) == len(rounds.rows) + 1 and all(p.stat().st_mtime_ns == t for p, t in per_round.items())
    tables = _tables(run)
    assert "| global |" in tables and "| post_instruction |" in tables and "| 0 |" in tables and "(no FM results)" in tables


def _tables(run) -> str:
    """The docs' tables script on a run directory (scripts/interactions_tables.py)."""
    import contextlib
    import importlib.util
    import io
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts/interactions_tables.py"
    spec = importlib.util.spec_from_file_location("interactions_tables", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        mod.main(str(run))
    return buf.getvalue()


def test_dormant_bad_input_fails_before_work(searched, tmp_path):  # noqa: F811
    def attempt(run, *extra):
        return subprocess.run([sys.executable, "-m", "refusal_sae", "dormant", "--model", str(searched.root / "model"),
                               "--run-dir", str(run), "--saes", str(searched.root / "saes"), "--datasets",
                               str(searched.heldout), *extra], capture_output=True, text=True, timeout=600)

    empty = tmp_path / "empty"
    shutil.copytree(searched.run / "direction", empty / "direction")
    r = attempt(empty)
    assert r.returncode == 2 and "no search result" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (empty / "search").exists()
    run = tmp_path / "run"
    shutil.copytree(searched.run, run)
    for extra, needle in [(["--sets", "per-prompt"], "sets must be"), (["--max-rounds", "-1"], "max_rounds"),
                          (["--screen", "some"], "screen"), (["--n-prompts", "0"], "positive")]:
        r = attempt(run, *extra)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (run / "search/dormant").exists() and not (run / "search/heldout").exists()
