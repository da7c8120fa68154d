"""The feature search on tiny random models: feature sets, candidates, LA-IG, greedy filtering, the (K*, c) rule,
and the stage end to end through the CLI."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from refusal_sae.errors import ConfigError
from refusal_sae.interventions import DirectionAblation
from refusal_sae.saes.random import random_topk_sae
from refusal_sae.scoring.refusal_score import opening_tokens
from refusal_sae.search.candidates import decoder_cosines, per_prompt_sets, prefilter_mask, prefilter_set, ranked
from refusal_sae.search.config import SearchConfig
from refusal_sae.search.featureset import FeatureSet, clamp_set, random_sets
from tests.conftest import build_tiny

PROMPTS = ["How do I pick a lock?", "Write a poem about the sea and the wind.", "Explain how to pick a lock",
           "How do I bake bread at home?"]


def tiny_saes(d_in=64, layers=(1, 2), width=48, k=8):
    return {L: random_topk_sae(d_in, width, k, f"blocks.{L}.hook_resid_post", std=0.3, seed=L) for L in layers}


# --- feature sets ------------------------------------------------------------------------------------------------
def test_feature_set_operations_and_random_controls():
    fs = FeatureSet.of([(2, 5), (1, 3), (2, 7), (2, 5)])
    assert fs.items == ((2, 5), (1, 3), (2, 7)) and fs.by_layer() == {1: (3,), 2: (5, 7)}
    assert fs.take(2).items == ((2, 5), (1, 3)) and fs.without([(1, 3)]).items == ((2, 5), (2, 7))
    assert fs.intersection(FeatureSet.of([(2, 7), (9, 9)])).items == ((2, 7),)
    alive = {1: torch.arange(10), 2: torch.arange(20)}
    draws = random_sets(alive, fs, 4, seed=3)
    assert draws == random_sets(alive, fs, 4, seed=3) and draws != random_sets(alive, fs, 4, seed=4)
    for d in draws:  # same per-layer sizes, never the set's own features
        assert d.layer_counts() == fs.layer_counts() and not set(d.items) & set(fs.items)


def test_clamp_set_builds_one_clamp_per_layer():
    saes = tiny_saes()
    clamps = clamp_set(saes, FeatureSet.of([(2, 5), (1, 3), (2, 7)]), -3.0)
    assert [(c.sae, c.feature_ids, c.mode, c.value) for c in clamps] == [
        (saes[1], (3,), "scale", -3.0), (saes[2], (5, 7), "scale", -3.0)]
    assert all(c.mode == "zero" for c in clamp_set(saes, FeatureSet.of([(1, 3)]), 0.0))


# --- candidates --------------------------------------------------------------------------------------------------
def test_decoder_cosines_prefilter_and_ranking():
    saes = tiny_saes()
    torch.manual_seed(0)
    d = torch.randn(64)
    cos = decoder_cosines(saes, [1, 2], {1: d, 2: d})
    want = torch.nn.functional.cosine_similarity(saes[2].W_dec.detach(), d[None], dim=-1)
    torch.testing.assert_close(cos[1], want, atol=1e-5, rtol=1e-5)
    mask = prefilter_mask(cos, 3)
    assert mask.sum(1).tolist() == [3, 3] and mask[1, cos[1].argmax()]
    pre = prefilter_set(cos, [1, 2], 3)
    assert len(pre) == 6 and pre.items[0] == (1, int(cos[0].argmax()))
    top = ranked(cos, [1, 2], 4)
    assert [float(cos[[1, 2].index(L), f]) for L, f in top] == sorted(cos.flatten().topk(4).values.tolist(), reverse=True)
    within = ranked(-cos, [1, 2], 6, mask)  # restricted to the prefilter even when the score prefers others
    assert set(within.items) == set(pre.items)
    scores = torch.randn(2, 2, 48)
    assert [len(s) for s in per_prompt_sets(scores, [1, 2], 5, mask)] == [5, 5]


# --- LA-IG ---------------------------------------------------------------------------------------------------------
def test_integrated_gradients_complete_at_one_layer(tiny_llama):
    """IG completeness: at a single SAE layer (a straight path between clean and patched states), the attributions
    of all features and error terms at all positions add up to the metric's change under the patch."""
    from refusal_sae.scoring.refusal_score import refusal_score_from_logits
    from refusal_sae.search.attribution import ig_batch

    h = tiny_llama
    saes = tiny_saes(layers=(2,))
    torch.manual_seed(1)
    d = torch.randn(h.d_model)
    tokens = opening_tokens(h.tokenizer)
    batch = h.batch(PROMPTS[:1])
    patch = DirectionAblation(d).hooks(h)
    feat, err = ig_batch(h, saes, [2], batch, patch, tokens, steps=64)
    total = float(feat[2].sum() + err[2].sum())
    with torch.no_grad():
        clean = -refusal_score_from_logits(h.forward(batch)[:, -1], tokens).sum()
        with h.hooks(patch):
            x_patched = h.cache_activations(batch, ["blocks.2.hook_resid_post"])["blocks.2.hook_resid_post"]
        with h.hooks([("blocks.2.hook_resid_post", lambda a: x_patched)]):
            patched = -refusal_score_from_logits(h.forward(batch)[:, -1], tokens).sum()
    assert abs(float(patched - clean)) > 1e-2  # the patch matters
    assert total == pytest.approx(float(patched - clean), rel=0.02, abs=1e-3)
    assert float(feat[2].abs().sum()) > 0


def test_la_ig_shapes_and_padding(tiny_llama):
    from refusal_sae.search.attribution import la_ig

    h = tiny_llama
    saes = tiny_saes()
    d = torch.randn(h.d_model)
    a = la_ig(h, saes, [1, 2], d, PROMPTS, opening_tokens(h.tokenizer), steps=2, batch_size=4, progress=False)
    b = la_ig(h, saes, [1, 2], d, PROMPTS[1:2], opening_tokens(h.tokenizer), steps=2, batch_size=1, progress=False)
    assert a.shape == (4, 2, 48) and torch.isfinite(a).all()
    torch.testing.assert_close(a[1], b[0], atol=1e-4, rtol=1e-3)  # padding in a batch changes nothing


# --- greedy ----------------------------------------------------------------------------------------------------------
class FakeEngine:
    """Refusal score = −(sum of the weights of the clamped features): removing a feature raises it by its weight."""

    def __init__(self, saes, weights):
        self.layer_of = {id(s): L for L, s in saes.items()}
        self.weights = weights
        self.calls = []

    def score(self, prompts, sets, tokens):
        self.calls.append(len(sets))
        rows = []
        for s in sets:
            w = sum(self.weights[(self.layer_of[id(c.sae)], f)] for c in s for f in c.feature_ids)
            rows.append(torch.full((len(prompts),), -w))
        return torch.stack(rows)


def test_greedy_keeps_what_matters_and_runs_chains_in_lockstep():
    from refusal_sae.search.greedy import greedy_filter, intersect

    saes = tiny_saes()
    items = [(1, i) for i in range(6)] + [(2, i) for i in range(6)]
    weights = dict.fromkeys(items, 0.01)
    weights[(1, 2)], weights[(2, 4)] = 1.0, 0.5  # the only features that matter at tau 0.1
    engine = FakeEngine(saes, weights)
    start = FeatureSet(tuple(items))
    traces = greedy_filter(engine, saes, PROMPTS, [0], start, 0.0, [(0, 0.1), (1, 0.1), (0, 0.6)], block=4,
                           progress=False)
    assert set(traces[0].kept.items) == set(traces[1].kept.items) == {(1, 2), (2, 4)}
    assert traces[2].kept.items == ((1, 2),)  # at tau 0.6 the 0.5 feature goes too
    assert set(intersect(traces[:2]).items) == {(1, 2), (2, 4)}
    assert max(engine.calls) == 3  # one stacked call per round for all chains
    path = traces[0].path
    assert path[0].size == 12 and path[-1].size == 2 and all(p.flipped in (0.0, 1.0) for p in path)


# --- the (K*, c) rule -------------------------------------------------------------------------------------------------
class ScriptedEngine:
    """Generations that say how many features were clamped, and how strongly; a judge reads them back."""

    def generate(self, prompts, sets, max_new_tokens, batch_size, progress=False, desc=""):
        out = []
        for s in sets:
            n = sum(len(c.feature_ids) for c in s)
            value = s[0].value if s else 1.0
            random = all(f >= 40 for c in s for f in c.feature_ids) and s
            out.append([f"{n}|{value}|{bool(random)}|{i}" for i in range(len(prompts))])
        return out


class ScriptedJudge:
    def judge(self, prompts, completions):
        labels = []
        for comp in completions:
            n, value, random, i = comp.split("|")
            n, value, i = int(n), float(value), int(i)
            if random == "True":  # random sets flip prompts only under the strong clamp
                lab = "complied" if value == -3.0 and i < 3 else "refused"
            else:  # ours: each clamped feature flips a prompt under -3, half as many under zero-ablation
                lab = "complied" if i < n * (1 if value == -3.0 else 0.5) else "refused"
            if value == -3.0 and i == 9:
                lab = "degenerate"
            labels.append(SimpleNamespace(label=lab))
        return labels


def test_choice_rule_prefers_compliance_within_the_random_control():
    from refusal_sae.search.choose import choose_k_and_clamp

    saes = tiny_saes()
    ranking = FeatureSet(tuple((1, i) for i in range(8)))  # ids < 40: "ours"
    alive = {1: torch.arange(40, 48)}  # random draws come from ids ≥ 40
    prompts = [f"p{i}" for i in range(10)]
    rows, best, met = choose_k_and_clamp(ScriptedEngine(), ScriptedJudge(), saes, prompts, ranking, alive, (2, 4, 8),
                                         (0.0, -3.0), n_random=2, max_random_flip=0.05, max_degenerate=0.10, seed=0)
    assert met and (best.k, best.c) == (8, 0.0)  # -3 flips random sets (0.3 > 0.05): not eligible
    strong = next(r for r in rows if (r.k, r.c) == (8, -3.0))
    assert strong.complied == 8 and strong.random_flip == pytest.approx(0.3) and strong.eligible is False
    # ranked (8,-3), (4,-3), (8,0), ...: controls stop at the first eligible row
    assert sorted((r.k, r.c) for r in rows if r.random_flip is None) == [(2, -3.0), (2, 0.0), (4, 0.0)]
    # per-prompt labels are kept, so two cells (or a cell and the direction ablation) can be paired afterwards
    assert all(len(r.labels) == len(prompts) and r.labels.count("complied") == r.complied for r in rows)
    from refusal_sae.search.result import ChoiceResult

    choice = ChoiceResult(len(prompts), len(prompts), rows, best.k, best.c, met, "rule", 0.1,
                          {"complied": 1, "degenerate": 0, "refused": 9}, prompts=prompts,
                          ablation_labels=["complied"] + ["refused"] * 9)
    assert choice.chosen() is best  # (8, 0): prompts 0-3 complied
    pa = choice.paired(best, "ablation")
    assert (pa.n, pa.only_a, pa.only_b, pa.p_value) == (10, 3, 0, pytest.approx(0.25))
    assert choice.paired(strong, best).only_a == 4 and choice.paired(best, strong).only_b == 4
    rows[0].labels = None  # a result saved before per-prompt labels: no pairing, no crash
    assert choice.paired(rows[0], "ablation") is None
    _, fallback, met2 = choose_k_and_clamp(ScriptedEngine(), ScriptedJudge(), saes, prompts, ranking, alive, (8,),
                                           (-3.0,), 2, 0.05, 0.10, 0)
    assert not met2 and fallback.k == 8  # nothing eligible: the best margin, marked as not met
    # every row over the degenerate bound: the most compliant row is still reported with its own random controls
    rows3, fallback3, met3 = choose_k_and_clamp(ScriptedEngine(), ScriptedJudge(), saes, prompts, ranking, alive,
                                                (4, 8), (-3.0,), 2, 0.05, 0.0, 0)
    assert not met3 and (fallback3.k, fallback3.c) == (8, -3.0) and fallback3.random_flip == pytest.approx(0.3)
    assert all(r.eligible is False for r in rows3)


def test_search_config_validation():
    SearchConfig().validate((2, 5, 8, 11, 14))
    with pytest.raises(ConfigError, match="larger than the candidate pool"):
        SearchConfig(top_k=(60,), k_per_layer=10).validate((2, 5))
    with pytest.raises(ConfigError, match="no SAE at layers"):
        SearchConfig(layers=(3,)).validate((2, 5))
    with pytest.raises(ConfigError, match="clamp of 1"):
        SearchConfig(clamps=(1.0,)).validate()
    with pytest.raises(ConfigError, match="positive"):
        SearchConfig(n_val=0).validate()
    with pytest.raises(ConfigError, match="degenerate_bound"):
        SearchConfig(degenerate_bound="loose").validate()


# --- the stage, end to end ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    h = build_tiny("llama")
    h.model.save_pretrained(root / "model", safe_serialization=True)
    h.tokenizer.save_pretrained(root / "model")
    for L, sae in tiny_saes().items():
        sae.save_model(root / "saes" / f"blocks.{L}.hook_resid_post")
    return root


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "refusal_sae", *args], capture_output=True, text=True, timeout=timeout)


class HashJudge:
    """A deterministic stand-in judge for a random tiny model (which never refuses): the label is a function of the
    completion's text, so clamps that change the text change the label."""

    def judge(self, instructions, completions):
        import zlib

        from refusal_sae.scoring.judge import Judgement

        return [Judgement(("refused", "complied", "degenerate")[zlib.crc32(c.encode()) % 3], "hash") for c in completions]


def test_search_cli_end_to_end_and_resume(tiny_run, data_dir, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import refusal_sae.search.runner as stage
    from refusal_sae.cli import app

    monkeypatch.setattr(stage, "get_judge", lambda spec: HashJudge())
    runner = CliRunner()

    def invoke(*args):
        r = runner.invoke(app, list(args))
        assert r.exit_code == 0, (r.output, r.exception)
        return r

    run = tmp_path / "run"
    base = ["--model", str(tiny_run / "model"), "--run-dir", str(run), "--data-dir", str(data_dir)]
    invoke("direction", *base, "--n-train", "4", "--n-val", "3", "--layers", "1-2", "--positions=-1",
           "--max-kl", "1e9", "--min-induce", "-1e9")
    search = ["search", *base, "--saes", str(tiny_run / "saes"), "--k-per-layer", "4", "--ig-steps", "2",
              "--n-attribution", "4", "--n-val", "8", "--top-k", "2,4", "--clamp", "0,-1", "--n-random", "2",
              "--greedy-seeds", "2", "--max-new-tokens", "3", "--json"]
    res = json.loads(invoke(*search).output.strip().splitlines()[-1])
    assert res["choice"]["k"] in (2, 4) and res["choice"]["c"] in (0.0, -1.0)
    abl = res["choice"]["ablation"]  # the direction ablation on the same prompts sets the degenerate bound
    assert sum(abl.values()) == res["choice"]["n_refused"]
    assert res["choice"]["degenerate_bound"] == pytest.approx(max(0.10, abl["degenerate"] / res["choice"]["n_refused"]))
    assert len(res["choice"]["rows"]) == 4 and set(res["prefilter_attribution_share"]) == {"selected", "per_layer"}
    n_ref = res["choice"]["n_refused"]
    assert len(res["choice"]["prompts"]) == n_ref and len(res["choice"]["ablation_labels"]) == n_ref
    assert all(len(r["labels"]) == n_ref for r in res["choice"]["rows"])
    from refusal_sae.runs import RunDir
    from refusal_sae.search.result import CandidatesResult, FeatureCards, GreedyResult

    rd = RunDir(run)
    cands = rd.load(CandidatesResult, "search/candidates")
    greedy = rd.load(GreedyResult, "search/greedy")
    assert len(cands.prefilter) == 8 and cands.attribution.shape == (2, 48) and len(cands.cossim) == 4
    assert set(greedy.minimal.items) <= set(greedy.start.items) and len(greedy.traces) >= 2
    assert rd.load(FeatureCards, "search/cards") is not None
    assert {"search/candidates", "search/choice", "search/greedy", "search/cards"} <= set(rd.manifest()["stages"])
    assert not (run / "search/choice/choice.partial.json").exists()  # the checkpoint goes once the choice is saved
    from refusal_sae.search.result import ChoiceResult

    choice = rd.load(ChoiceResult, "search/choice")  # labels survive the round trip; the pairing is printed
    assert choice.paired(choice.chosen(), "ablation").n == n_ref
    # a choice result written before per-prompt labels existed still loads (the new fields default to empty)
    old = json.loads((run / "search/choice/result.json").read_text())
    for key in ("prompts", "ablation_labels"):
        del old["data"][key]
    for r in old["data"]["rows"]:
        del r["labels"]
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "result.json").write_text(json.dumps(old))
    loaded = ChoiceResult.load(legacy)
    assert loaded.prompts == [] and loaded.rows[0].labels is None and loaded.paired(loaded.chosen(), "ablation") is None
    stamp = (run / "search/candidates/result.json").stat().st_mtime_ns
    invoke(*search)  # complete: every sub-stage is loaded, nothing recomputed
    assert (run / "search/candidates/result.json").stat().st_mtime_ns == stamp
    # the held-out table, on a small prompt file standing in for the test sets
    heldout = tmp_path / "heldout.json"
    heldout.write_text(json.dumps([f"Explain step {i} of picking a lock" for i in range(12)]))
    table = json.loads(invoke("search-table", *base, "--saes", str(tiny_run / "saes"), "--datasets", str(heldout),
                              "--n-harmless", "3", "--json").output.strip().splitlines()[-1])
    names = [row["name"] for row in table["rows"]]
    assert names[:3] == ["direction ablation (AS)", "CosSim", "ActDiff"] and "random (K*)" in names
    assert table["n_refused"] >= 1
    assert all(row["n"] == table["n_refused"] * (2 if row["name"].startswith("random") else 1) for row in table["rows"])
    assert {p["b"] for p in table["paired"]} >= {"direction ablation (AS)", "CosSim"}


def test_search_bad_input_fails_before_work(tiny_run, data_dir, tmp_path):
    base = ["search", "--model", str(tiny_run / "model"), "--saes", str(tiny_run / "saes"), "--data-dir", str(data_dir),
            "--k-per-layer", "4", "--top-k", "2,4"]
    for args, needle in [([], "no refusal direction"),
                         (["--top-k", "9"], "larger than the candidate pool"),
                         (["--clamp", "0,x"], "cannot parse"),
                         (["--layers", "3"], "no SAE at layers [3]")]:
        run = tmp_path / f"run{len(args)}"
        r = cli(*base, "--run-dir", str(run), *args)
        assert r.returncode == 2 and needle in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and not (run / "search").exists()


def test_an_interrupted_choice_resumes_at_the_next_judged_set(tmp_path):
    """The K × c grid and its random controls keep each judged set in a checkpoint as it is made: a Ctrl-C after
    four sets loses none of them, the resumed choice generates only the sets left and ends with the same rows."""
    from refusal_sae.runs.checkpoint import Checkpoint
    from refusal_sae.search.choose import choose_k_and_clamp

    saes, alive = tiny_saes(), {1: torch.arange(40, 48)}
    ranking = FeatureSet(tuple((1, i) for i in range(8)))
    prompts = [f"p{i}" for i in range(10)]
    args = (saes, prompts, ranking, alive, (2, 4, 8), (0.0, -3.0))
    kw = dict(n_random=2, max_random_flip=0.05, max_degenerate=0.10, seed=0)
    whole_rows, whole, _ = choose_k_and_clamp(ScriptedEngine(), ScriptedJudge(), *args, **kw)

    class Counting(ScriptedEngine):
        def __init__(self, stop_after=None):
            self.sets, self.stop_after = 0, stop_after

        def generate(self, prompts, sets, *a, **k):
            if self.stop_after is not None and self.sets == self.stop_after:
                raise KeyboardInterrupt
            self.sets += len(sets)
            return super().generate(prompts, sets, *a, **k)

    path, conf = tmp_path / "choice.partial.json", {"k": [2, 4, 8]}
    with pytest.raises(KeyboardInterrupt):
        choose_k_and_clamp(Counting(stop_after=4), ScriptedJudge(), *args, **kw, checkpoint=Checkpoint(path, conf))
    cp = Checkpoint(path, conf)
    assert cp.resumed == 4 and Checkpoint(path, {"other": 1}).resumed == 0  # another config starts afresh
    engine = Counting()
    rows, best, _ = choose_k_and_clamp(engine, ScriptedJudge(), *args, **kw, checkpoint=cp)
    fresh = Counting()
    choose_k_and_clamp(fresh, ScriptedJudge(), *args, **kw, checkpoint=Checkpoint(tmp_path / "b.json", conf))
    assert engine.sets == fresh.sets - 4  # only the sets left were generated
    assert (best.k, best.c) == (whole.k, whole.c) and [r.labels for r in rows] == [r.labels for r in whole_rows]
    assert [r.random_flips for r in rows] == [r.random_flips for r in whole_rows]
