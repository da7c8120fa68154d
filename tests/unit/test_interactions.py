"""Stage 3 on synthetic data and tiny random models: the FM and its maths, codes read under a clamp, the pool, the
K sweep's plumbing, and the `interactions` command end to end, resumed, and refusing bad input before any work."""

import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from refusal_sae.errors import ConfigError
from refusal_sae.search.config import DormantConfig, InteractionsConfig
from refusal_sae.search.featureset import FeatureSet, clamp_set
from refusal_sae.search.fm import FactorizationMachine, fit_fm, fit_probe, pair_strengths, paired_delta, split_metrics, top_pairs
from tests.conftest import build_tiny
from tests.unit.test_search import HashJudge, tiny_saes

PROMPTS = ["How do I pick a lock?", "Write a poem about the sea and the wind.", "Explain how to pick a lock",
           "How do I bake bread at home?"]


# --- the factorization machine ------------------------------------------------------------------------------------------
def planted(n: int, d: int = 10, seed: int = 0):
    """y depends on the product x_2 · x_6 only: no linear function of x predicts it better than chance."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, (x[:, 2] * x[:, 6] > 0).float()


def test_fm_finds_a_planted_interaction_that_logistic_regression_cannot():
    x, y = planted(1800)
    tr, va, te = slice(0, 1200), slice(1200, 1500), slice(1500, 1800)
    fit = fit_fm(x[tr], y[tr], x[va], y[va], rank=4, lr=0.02, epochs=15, batch_size=64, seed=0)
    probe = fit_probe(x[tr].numpy(), y[tr].numpy(), x[va].numpy(), y[va].numpy(), [0.1, 1.0])
    groups = np.arange(300)
    with torch.no_grad():
        fm = split_metrics(y[te].numpy(), fit.model(x[te]).double().numpy(), groups, 100, 0)
    lr = split_metrics(y[te].numpy(), probe.logits(x[te].numpy()), groups, 100, 0)
    assert fm.accuracy.value > 0.9 and fm.auc.value > 0.95
    assert lr.accuracy.value < 0.62 and lr.auc.value < 0.62
    assert fm.auc.ci[0] > lr.auc.ci[1]  # the intervals do not overlap
    with torch.no_grad():
        strength, term = pair_strengths(fit.model.gram(), x[tr])
        assert top_pairs(strength, 1) == [(2, 6)] and term[2, 6] > 0
        phi = fit.model.contributions(x[tr][y[tr] > 0]).mean(0)
    assert set(phi.argsort(descending=True)[:2].tolist()) == {2, 6}
    assert 1 <= fit.best_epoch <= 15 and len(fit.curve) == 15
    again = fit_fm(x[tr], y[tr], x[va], y[va], rank=4, lr=0.02, epochs=2, batch_size=64, seed=0)
    same = fit_fm(x[tr], y[tr], x[va], y[va], rank=4, lr=0.02, epochs=2, batch_size=64, seed=0)
    torch.testing.assert_close(again.model.v, same.model.v)  # seeded


def test_fm_forward_and_contributions_match_the_explicit_sums():
    torch.manual_seed(0)
    fm = FactorizationMachine(5, 3)
    with torch.no_grad():
        fm.w.normal_()
        fm.w0.fill_(0.3)
    x = torch.randn(7, 5)
    v = fm.v.detach()
    explicit = torch.stack([fm.w0 + row @ fm.w + sum((v[i] @ v[j]) * row[i] * row[j]
                                                    for i in range(5) for j in range(i + 1, 5)) for row in x])
    with torch.no_grad():
        torch.testing.assert_close(fm(x), explicit.detach())
        phi = fm.contributions(x)
        torch.testing.assert_close(fm.w0 + phi.sum(-1), fm(x))  # the shares add up to the logit
        g = fm.gram()
        assert torch.allclose(g, g.T) and torch.all(torch.diag(g) == 0)
        # each pair's term is split equally: φ_0 of a row with only x_0, x_1 non-zero
        row = torch.zeros(1, 5)
        row[0, 0], row[0, 1] = 2.0, -1.5
        want = fm.w[0] * 2.0 + 0.5 * (v[0] @ v[1]) * 2.0 * -1.5
        torch.testing.assert_close(fm.contributions(row)[0, 0], want)


def test_pair_strengths_and_top_pairs():
    gram = torch.tensor([[0.0, 2.0, -1.0], [2.0, 0.0, 0.5], [-1.0, 0.5, 0.0]])
    x = torch.tensor([[1.0, 1.0, 0.0], [1.0, -1.0, 2.0]])
    strength, term = pair_strengths(gram, x)
    # pair (0,1): |2| * mean(|1*1|, |1*-1|) = 2; mean term 2 * mean(1, -1) = 0
    assert float(strength[0, 1]) == pytest.approx(2.0) and float(term[0, 1]) == pytest.approx(0.0)
    # pair (0,2): |-1| * mean(0, 2) = 1; term -1 * 1 = -1
    assert float(strength[0, 2]) == pytest.approx(1.0) and float(term[0, 2]) == pytest.approx(-1.0)
    assert top_pairs(strength, 2) == [(0, 1), (0, 2)] and torch.all(torch.diag(strength) == 0)


def test_metrics_bootstrap_by_prompt_and_paired_delta():
    y = np.array([1, 0, 1, 0, 1, 0, 1, 0.0])
    perfect = np.array([2, -2, 3, -1, 1, -3, 2, -2.0])
    noisy = np.array([2, 2, -3, -1, 1, -3, 2, 2.0])
    groups = np.arange(8) % 4  # two rows per prompt
    m = split_metrics(y, perfect, groups, 200, 0)
    assert m.accuracy.value == 1.0 and m.auc.value == 1.0 and m.accuracy.ci == (1.0, 1.0) and m.n_prompts == 4
    d = paired_delta(y, perfect, noisy, groups, 200, 0)
    assert d.accuracy.value == pytest.approx(1 - 5 / 8) and d.accuracy.ci[0] >= 0
    assert split_metrics(y, perfect, groups, 200, 0) == m  # seeded


# --- config ---------------------------------------------------------------------------------------------------------------
def test_config_validation():
    InteractionsConfig().validate(50)
    for cfg, needle in [(InteractionsConfig(rank=0), "rank"), (InteractionsConfig(rank=-2), "rank"),
                        (InteractionsConfig(k_values=(10, 60)), "larger than the pool"),
                        (InteractionsConfig(reduce="sum"), "reduce"), (InteractionsConfig(lr=0), "lr"),
                        (InteractionsConfig(datasets=("harmful_train",)), "not held-out"),
                        (InteractionsConfig(n_sweep=0), "positive")]:
        with pytest.raises(ConfigError, match=needle):
            cfg.validate(50)
    DormantConfig().validate()
    for cfg, needle in [(DormantConfig(sets=("perprompt",)), "sets"), (DormantConfig(screen="x"), "screen"),
                        (DormantConfig(max_rounds=-1), "max_rounds"), (DormantConfig(datasets=("harmful_val",)), "held-out"),
                        (DormantConfig(n_val=0), "positive")]:
        with pytest.raises(ConfigError, match=needle):
            cfg.validate()


# --- codes under a clamp --------------------------------------------------------------------------------------------------
def test_position_kinds_follow_the_template(tiny_llama):
    from refusal_sae.search.clamped import KINDS, position_kinds

    h = tiny_llama
    batch = h.batch(PROMPTS[:2])
    kinds = position_kinds(batch)
    for b, p in enumerate(batch.prompts):
        off = int(batch.pad_offsets[b])
        row = kinds[b].tolist()
        assert row[:off] == [-1] * off and row[off] == KINDS.index("first")
        assert set(row[off + p.inst_start: off + p.inst_end]) == {KINDS.index("instruction")}
        assert set(row[off + p.inst_end:]) == {KINDS.index("post_instruction")}
        assert set(row[off + 1: off + p.inst_start]) <= {KINDS.index("template")}


def test_codes_are_read_where_the_clamp_acts(tiny_llama):
    """Unclamped: the SAE's own codes of the cached stream. Clamped: a layer's codes are read before its own edit
    (equal to the unclamped ones at the first clamped layer) and after every earlier layer's edit (equal to the codes
    of the stream the engine's clamp hooks produce)."""
    from refusal_sae.interventions.base import set_hooks
    from refusal_sae.search.clamped import KINDS, effective, position_kinds, reduced_codes

    h = tiny_llama
    saes = tiny_saes()
    layers = [1, 2]
    clean = reduced_codes(h, saes, layers, PROMPTS, None, batch_size=3)
    batch = h.batch(PROMPTS)
    post = (position_kinds(batch) == KINDS.index("post_instruction"))[..., None]
    acts = h.cache_activations(batch, ["blocks.1.hook_resid_post", "blocks.2.hook_resid_post"])
    for j, L in enumerate(layers):
        want = saes[L].encode(acts[f"blocks.{L}.hook_resid_post"]).masked_fill(~post, 0).amax(1)
        torch.testing.assert_close(clean[:, j], want, atol=1e-5, rtol=1e-4)
    on = clean[:, 0].sum(0).argsort(descending=True)[:4]
    fs = FeatureSet(tuple((1, int(f)) for f in on))
    clamped = reduced_codes(h, saes, layers, PROMPTS, fs, -2.0, batch_size=3)
    torch.testing.assert_close(clamped[:, 0], clean[:, 0], atol=1e-5, rtol=1e-4)  # before layer 1's own edit
    assert not torch.allclose(clamped[:, 1], clean[:, 1])  # layer 2 sees layer 1's edit
    with h.hooks(set_hooks(h, clamp_set(saes, fs, -2.0))):
        after = h.cache_activations(batch, ["blocks.2.hook_resid_post"])["blocks.2.hook_resid_post"]
    torch.testing.assert_close(clamped[:, 1], saes[2].encode(after).masked_fill(~post, 0).amax(1), atol=1e-5, rtol=1e-4)
    eff = effective(clamped, layers, fs, -2.0)
    torch.testing.assert_close(eff[:, 0, on], -2.0 * clamped[:, 0, on])
    mean = reduced_codes(h, saes, layers, PROMPTS, None, reduce="mean", batch_size=4)
    assert torch.all(mean <= clean + 1e-6) and float(mean.sum()) > 0


# --- the pool and the K sweep's sets ---------------------------------------------------------------------------------------
def test_pool_ks_and_random_draws():
    from refusal_sae.search.interactions import k_values, pool_columns, pool_draws, select_pool

    codes = torch.zeros(10, 2, 8)
    codes[:, 0, 3] = 1.0  # fires on every prompt
    codes[:6, 1, 5] = 2.0
    codes[:2, 1, 1] = 5.0
    codes[:, 0, 0] = 4.0  # the minimal set's feature: never in the rest of the pool
    minimal = FeatureSet(((1, 0),))
    pool, freq, n_active = select_pool(codes, [1, 2], minimal, 2)
    assert pool.items == ((1, 0), (1, 3), (2, 5)) and n_active == 4
    assert freq.tolist() == pytest.approx([1.0, 1.0, 0.6])
    big, _, _ = select_pool(codes, [1, 2], minimal, 100)
    assert len(big) == 4  # only features that fire
    torch.testing.assert_close(pool_columns(codes, [1, 2], pool), torch.stack([codes[:, 0, 0], codes[:, 0, 3],
                                                                             codes[:, 1, 5]], 1))
    assert k_values(InteractionsConfig(), 3, 30) == [3, 6, 12, 24, 30]
    assert k_values(InteractionsConfig(k_values=(2, 5)), 3, 30) == [2, 5]
    with pytest.raises(ConfigError, match="larger than the pool"):
        k_values(InteractionsConfig(k_values=(31,)), 3, 30)
    pool = FeatureSet(tuple((1, i) for i in range(10)) + tuple((2, i) for i in range(5)))
    like = FeatureSet(((1, 0), (1, 1), (2, 0)))
    draws = pool_draws(pool, like, 4, seed=1)
    assert draws == pool_draws(pool, like, 4, seed=1) and len({d.items for d in draws}) > 1
    assert all(d.layer_counts() == like.layer_counts() and set(d.items) <= set(pool.items) for d in draws)


class GenEngine:
    """Answers that say which features were clamped; counts the sets it generated."""

    def __init__(self, saes):
        self.layer_of = {id(s): L for L, s in saes.items()}
        self.generated = 0

    def generate(self, prompts, sets, max_new_tokens, batch_size, progress=False, desc=""):
        self.generated += len(sets)
        return [[",".join(f"{self.layer_of[id(c.sae)]}:{f}" for c in s for f in c.feature_ids) + f"|{i}"
                 for i in range(len(prompts))] for s in sets]


class FeatureJudge:
    """Complied when feature 1:7 was clamped, on even prompts; degenerate when 2:9 was."""

    def judge(self, prompts, completions):
        out = []
        for comp in completions:
            feats, i = comp.split("|")
            lab = "degenerate" if "2:9" in feats else "complied" if "1:7" in feats and int(i) % 2 == 0 else "refused"
            out.append(SimpleNamespace(label=lab))
        return out


def test_sweep_point_and_summary():
    from refusal_sae.search.interactions import summarize_sweep, sweep_point

    saes = tiny_saes()
    engine = GenEngine(saes)
    prompts = [f"p{i}" for i in range(6)]
    fm_set = FeatureSet(((1, 7), (1, 3)))
    sets = {"FM": fm_set, "linear probe": FeatureSet(((1, 3), (1, 4))), "random 1": FeatureSet(((1, 7), (1, 3))),
            "random 2": FeatureSet(((2, 9), (1, 1)))}
    pt = sweep_point(engine, FeatureJudge(), saes, prompts, 2, sets, 0.0, 3, 2, progress=False)
    assert engine.generated == 3  # "random 1" equals the FM set: generated once
    assert pt.labels["FM"] == ["complied", "refused"] * 3 and pt.labels["random 1"] == pt.labels["FM"]
    assert set(pt.labels["random 2"]) == {"degenerate"} and len(pt.generations) == 4 * 6
    ref = sweep_point(engine, FeatureJudge(), saes, prompts, 1, {"minimal set": FeatureSet(((1, 3),))}, 0.0, 3, 2,
                      progress=False)
    res = summarize_sweep([pt], ref, prompts, ["x"], 9, 0.0)
    rows = {r.ranking: r for r in res.rows}
    assert rows["unintervened"].complied == 0 and rows["unintervened"].refused == 6
    assert rows["FM"].complied == 3 and rows["linear probe"].complied == 0 and rows["linear probe"].overlap_fm == 1
    assert rows["random"].n == 12 and rows["random"].draws == [0.5, 0.0] and rows["random"].degenerate == 6
    assert rows["FM"].complied_ci[0] < 0.5 < rows["FM"].complied_ci[1]
    fm_vs_probe = next(p for p in res.paired if p.b == "linear probe")
    assert (fm_vs_probe.only_a, fm_vs_probe.only_b) == (3, 0) and fm_vs_probe.p_value == pytest.approx(0.25)
    assert [p.b for p in res.paired] == ["linear probe", "random 1", "random 2"]


# --- the command -------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def searched(tmp_path_factory, data_dir):
    """A tiny model with random SAEs, its direction and a finished feature search (hash judge)."""
    from typer.testing import CliRunner

    import refusal_sae.search.runner as stage
    from refusal_sae.cli import app

    root = tmp_path_factory.mktemp("interactions")
    h = build_tiny("llama")
    h.model.save_pretrained(root / "model", safe_serialization=True)
    h.tokenizer.save_pretrained(root / "model")
    for L, sae in tiny_saes().items():
        sae.save_model(root / "saes" / f"blocks.{L}.hook_resid_post")
    heldout = root / "heldout.json"
    heldout.write_text(json.dumps([f"Explain step {i} of picking a lock" for i in range(12)]))
    run = root / "run"
    base = ["--model", str(root / "model"), "--run-dir", str(run), "--data-dir", str(data_dir)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stage, "get_judge", lambda spec: HashJudge())
        runner = CliRunner()
        for args in (["direction", *base, "--n-train", "4", "--n-val", "3", "--layers", "1-2", "--positions=-1",
                      "--max-kl", "1e9", "--min-induce", "-1e9"],
                     ["search", *base, "--saes", str(root / "saes"), "--k-per-layer", "4", "--ig-steps", "2",
                      "--n-attribution", "4", "--n-val", "8", "--top-k", "2,4", "--clamp", "0,-1", "--n-random", "2",
                      "--greedy-seeds", "2", "--max-new-tokens", "3"]):
            r = runner.invoke(app, args)
            assert r.exit_code == 0, (r.output, r.exception)
    from refusal_sae.runs import RunDir
    from refusal_sae.search.result import GreedyResult

    greedy = RunDir(run).load(GreedyResult, "search/greedy")
    if not len(greedy.minimal):  # the random tiny model's greedy filter may prune everything: plant one feature
        greedy.minimal = greedy.start.take(2)
        greedy.save(run / "search/greedy", GreedyResult.read_meta(run / "search/greedy"))
    return SimpleNamespace(root=root, run=run, heldout=heldout, base=base)


def _median_labels(scores, threshold):
    """Both classes in every split of a random tiny model (which never refuses): above the split's median."""
    return (scores > scores.median()).float()


SMALL = ["--n-train", "6", "--n-val", "4", "--n-test-harmless", "4", "--pool-size", "12", "--epochs", "3",
         "--n-sweep", "5", "--n-random", "2", "--max-new-tokens", "3", "--batch-size", "8"]


def test_interactions_cli_end_to_end_and_resume(searched, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import refusal_sae.search.interactions as inter
    from refusal_sae.cli import app
    from refusal_sae.runs import RunDir
    from refusal_sae.search.interactions import InteractionData, InteractionModel, KSweepResult

    run = tmp_path / "run"
    shutil.copytree(searched.run, run)
    monkeypatch.setattr(inter, "get_judge", lambda spec: HashJudge())
    monkeypatch.setattr(inter, "labels", _median_labels)
    args = ["interactions", "--model", str(searched.root / "model"), "--run-dir", str(run), "--saes",
            str(searched.root / "saes"), "--datasets", str(searched.heldout), *SMALL, "--json"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, (r.output, r.exception)
    res = json.loads(r.output.strip().splitlines()[-1])
    rd = RunDir(run)
    data = rd.load(InteractionData, "search/interactions/data")
    model = rd.load(InteractionModel, "search/interactions/fm")
    sweep = rd.load(KSweepResult, "search/interactions/ksweep")
    n_min = res["minimal"]
    assert data.pool.items[:n_min] == data.minimal.items and res["pool"] == len(data.pool) <= n_min + 12
    assert data.x_train.shape == (2 * 12, len(data.pool)) and data.x_val.shape[0] == 2 * 8
    heldout = rd.load(inter.RefusedPrompts, "search/heldout")
    assert data.prompts["test"][: len(heldout.refused)] == heldout.refused
    assert data.x_test.shape[0] == 2 * (len(heldout.refused) + 4)
    assert set(res["metrics"]) == {"FM", "linear probe"} and set(res["metrics"]["FM"]) == {"train", "val", "test"}
    n = len(data.pool)
    assert sorted(model.fm_ranking.items) == sorted(data.pool.items) and len(model.pairs) == min(10, n * (n - 1) // 2)
    assert model.heatmap.shape[0] == min(30, len(data.pool))
    assert sweep.ks[-1] == len(data.pool) and sweep.ks[0] == n_min
    names = {(row["k"], row["ranking"]) for row in res["ksweep"]["rows"]}
    assert {(k, name) for k in sweep.ks for name in ("FM", "linear probe", "random")} <= names
    assert all(row["n"] == len(sweep.prompts) * (2 if row["ranking"] == "random" else 1) for row in res["ksweep"]["rows"])
    assert {"search/heldout", "search/interactions/data", "search/interactions/fm", "search/interactions/ksweep"} <= set(
        rd.manifest()["stages"])
    stamps = {p: p.stat().st_mtime_ns for p in (run / "search/interactions").rglob("result.json")}
    r = CliRunner().invoke(app, args)  # complete: nothing recomputed
    assert r.exit_code == 0 and all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    from tests.unit.test_dormant import _tables

    tables = _tables(run)
    assert "| test | FM |" in tables and "| test | linear probe |" in tables and f"| {sweep.ks[0]} | FM |" in tables
    assert "(no critical-but-silent results)" in tables


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "refusal_sae", *args], capture_output=True, text=True, timeout=timeout)


def test_interactions_bad_input_fails_before_work(searched, tmp_path):
    def attempt(run, *extra):
        return cli("interactions", "--model", str(searched.root / "model"), "--run-dir", str(run), "--saes",
                   str(searched.root / "saes"), "--datasets", str(searched.heldout), *SMALL, *extra)

    empty = tmp_path / "empty"
    shutil.copytree(searched.run / "direction", empty / "direction")
    r = attempt(empty)
    assert r.returncode == 2 and "no search result" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (empty / "search").exists()
    run = tmp_path / "run"
    shutil.copytree(searched.run, run)
    for extra, needle in [(["--rank", "0"], "rank"), (["--k", "2,500"], "larger than the pool"),
                          (["--datasets", "harmful_train"], "not held-out")]:
        r = attempt(run, *extra)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (run / "search/interactions").exists() and not (run / "search/heldout").exists()


def test_one_class_split_is_one_error_and_writes_no_data(searched, tmp_path, monkeypatch, capsys):
    """No row's refusal score reaches the threshold: through the CLI's entry point, one `error:` line and exit 2
    before the FM, and nothing under search/interactions."""
    import refusal_sae.search.interactions as inter
    from refusal_sae.cli import main

    run = tmp_path / "run"
    shutil.copytree(searched.run, run)
    monkeypatch.setattr(inter, "get_judge", lambda spec: HashJudge())
    monkeypatch.setattr(sys, "argv", ["refusal-sae", "interactions", "--model", str(searched.root / "model"), "--run-dir",
                                      str(run), "--saes", str(searched.root / "saes"), "--datasets", str(searched.heldout),
                                      *SMALL, "--label-threshold", "1e9"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert lines[-1].startswith("error:") and "one class only" in lines[-1] and "Traceback" not in err, err
    assert sum(x.startswith("error:") for x in lines) == 1
    assert not (run / "search/interactions").exists()


def test_heldout_refused_reuses_the_search_table_when_it_judged_the_same_way(searched, tmp_path):
    from refusal_sae.runs import RunDir
    from refusal_sae.search.interactions import heldout_refused
    from refusal_sae.search.result import GreedyResult
    from refusal_sae.search.table import SearchTable, TableRow

    run = RunDir(tmp_path / "run")
    shutil.copytree(searched.run, run.root)
    prompts = json.loads(searched.heldout.read_text())
    search_cfg = GreedyResult.read_meta(run.root / "search/greedy")["config"]
    row = TableRow("direction ablation (AS)", "x", 0, 2, 1, 0, 1, (0, 1), (0, 1))
    gens = [{"row": row.name, "instruction": p, "completion": "c", "judgement": "complied"} for p in prompts[3:5]]
    run.save(SearchTable([str(searched.heldout)], len(prompts), 2, 2, 0.0, [row], [], gens), {"model_revision": "rev"},
             "search/table")

    class NoEngine:
        def generate(self, *a, **k):
            raise AssertionError("judged again although the table holds the judgements")

    handle = SimpleNamespace(revision="rev")
    got = heldout_refused(handle, run, NoEngine(), None, [str(searched.heldout)], search_cfg["judge"],
                          search_cfg["max_new_tokens"], 8)
    assert got.refused == prompts[3:5] and got.n_total == len(prompts) and got.source.startswith("search/table")
    other = RunDir(tmp_path / "other")  # another generation length: judged here, not taken from the table
    shutil.copytree(run.root, other.root)
    (other.root / "search/heldout/result.json").unlink()
    with pytest.raises(AssertionError, match="judged again"):
        heldout_refused(handle, other, NoEngine(), None, [str(searched.heldout)], search_cfg["judge"], 7, 8)
    with pytest.raises(AssertionError, match="judged again"):  # a sample the table did not take: judged here
        heldout_refused(handle, other, NoEngine(), None, [str(searched.heldout)], search_cfg["judge"],
                        search_cfg["max_new_tokens"], 8, n=5, seed=search_cfg["seed"])
