"""Upstream → downstream on tiny random models: the position-restricted clamp (only positions ≥ p change, through the
engine too), reading codes before an edit, the drop metric and the position rule on planted values, the threshold
rule, gradient × input against finite differences, token roles, and the stage end to end with bad input rejected."""

import pytest
import torch

import refusal_sae.analysis.jailbreaks as jbmod
from refusal_sae.analysis.config import JailbreaksConfig, UpstreamConfig
from refusal_sae.analysis.jailbreaks import run_jailbreaks_stage
from refusal_sae.analysis.upstream import (
    choose_threshold,
    cluster_bootstrap,
    family_tokens,
    read_codes,
    relative_drop,
    run_upstream_stage,
    shared_features,
    token_attribution,
    token_roles,
    upstream_position,
)
from refusal_sae.interventions.engine import InterventionEngine
from refusal_sae.interventions.feature_clamp import FeatureClamp, FeatureClampFrom
from refusal_sae.runs import RunDir
from refusal_sae.scoring.judge import Judgement
from refusal_sae.scoring.refusal_score import opening_tokens, refusal_score_from_logits
from refusal_sae.search.featureset import FeatureSet
from tests.conftest import build_tiny
from tests.unit.test_search import tiny_saes

PROMPTS = ["How do I pick a lock?", "Write a poem about the sea and the wind, please, in four lines."]


# --- the position-restricted clamp -------------------------------------------------------------------------------------
def test_clamp_from_position_only_touches_later_positions():
    sae = tiny_saes(layers=(1,))[1]
    torch.manual_seed(0)
    act = torch.randn(2, 9, 64)
    codes = sae.encode(act)
    active = [f for f in range(48) if (codes[..., f] != 0).sum() >= 4][:3]  # features that fire at several positions
    ids = tuple(active)
    clamp = FeatureClampFrom(sae, ids, "scale", -3.0, spans=(4, 2, 6))
    assert clamp.last_positions == 6
    out = clamp.apply(act, clamp.encode(act))
    assert torch.equal(out[:, :3], act[:, :3])  # before the longest span: untouched, bit for bit
    full = FeatureClamp(sae, ids, "scale", -3.0)
    for t in range(9):  # each position gets exactly the edits of the features whose span covers it
        covered = tuple(f for f, s in zip(ids, (4, 2, 6), strict=True) if 9 - t <= s)
        want = FeatureClamp(sae, covered, "scale", -3.0).apply(act, sae.encode(act))[:, t] if covered else act[:, t]
        torch.testing.assert_close(out[:, t], want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[:, -1], act[:, -1])
    step = torch.randn(2, 1, 64)  # a generation step: every feature's span covers it
    torch.testing.assert_close(clamp.apply(step, clamp.encode(step)), full.apply(step, full.encode(step)))
    p = FeatureClampFrom.from_positions(sae, [5], [6], n_tokens=9, c=0.0)
    assert p.spans == (3,) and p.mode == "zero"
    with pytest.raises(ValueError):
        FeatureClampFrom(sae, (1, 2), spans=(3,))


def test_clamp_from_position_through_the_engine_matches_a_hooked_forward():
    h = build_tiny("llama")
    sae = tiny_saes(layers=(1,))[1]
    n = len(h.format(PROMPTS[1]))
    clamp = FeatureClampFrom.from_positions(sae, [0, 1, 2, 3], [n - 6, n - 4, n - 3, n - 2], n, -3.0)
    tokens = opening_tokens(h.tokenizer)
    got = InterventionEngine(h).score([PROMPTS[1]], [[clamp], []], tokens)
    with torch.no_grad(), h.hooks(clamp.hooks(h)):
        want = refusal_score_from_logits(h.forward(h.batch([PROMPTS[1]]))[:, -1], tokens)
    torch.testing.assert_close(got[0], want, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got[0], got[1])  # the clamp changes the score


def test_read_codes_reads_before_the_edit_and_routes_edits_per_row():
    h = build_tiny("llama")
    saes = tiny_saes()
    fmt = [h.format(p) for p in PROMPTS]
    feats = FeatureSet.of([(1, f) for f in range(48)] + [(2, f) for f in range(48)])
    clean, _ = read_codes(h, saes, feats, fmt)
    assert [c.shape for c in clean] == [(len(fmt[0]), 96), (len(fmt[1]), 96)]
    alone, _ = read_codes(h, saes, feats, fmt[1:])
    torch.testing.assert_close(clean[1], alone[0], atol=1e-4, rtol=1e-4)  # padding changes nothing
    n = len(fmt[0])
    edit = FeatureClampFrom.from_positions(saes[1], list(range(48)), [n - 3] * 48, n, 0.0)
    edited, scores = read_codes(h, saes, feats, fmt, edits=[[edit], []], refusal_tokens=opening_tokens(h.tokenizer))
    torch.testing.assert_close(edited[0][:, :48], clean[0][:, :48])  # layer 1 read before its own edit
    torch.testing.assert_close(edited[0][:-3, 48:], clean[0][:-3, 48:], atol=1e-5, rtol=1e-5)  # causal: earlier tokens
    assert not torch.allclose(edited[0][-3:, 48:], clean[0][-3:, 48:])  # layer 2 sees it from position n - 3 on
    torch.testing.assert_close(edited[1], clean[1], atol=1e-5, rtol=1e-5)  # the other row is untouched
    assert scores.shape == (2,) and torch.isfinite(scores).all()


# --- metrics and rules on planted values ---------------------------------------------------------------------------------
def test_relative_drop_on_planted_activations():
    assert relative_drop(torch.tensor([2.0, 0.0, 4.0]), torch.tensor([1.0, 5.0, 1.0])) == pytest.approx((0.5 + 0.75) / 2)
    assert relative_drop(torch.tensor([1.0]), torch.tensor([1.5])) == pytest.approx(-0.5)  # a rise is a negative drop
    assert relative_drop(torch.zeros(3), torch.ones(3)) is None


def test_upstream_position_rule():
    a = torch.tensor([9.0, 0.1, 0.6, 0.2, 1.0, 0.3, 5.0, 5.0, 5.0, 5.0, 5.0])  # 11 tokens; the last 5 excluded
    assert upstream_position(a, 11, 5) == 4  # the peak outside the last 5 (and never the first token)
    assert upstream_position(a, 11, 5, frac=0.5) == 2  # the earliest at ≥ half the peak
    assert upstream_position(-a.abs(), 11, 5) is None  # no positive attribution outside the last tokens
    assert upstream_position(a[:6], 6, 5) is None  # nothing outside the last 5 but the first token


def test_shared_features_and_threshold_rule():
    A, B, C, D = (1, 1), (1, 2), (2, 3), (2, 4)
    train = [FeatureSet((A, B, C)), FeatureSet((A, B)), FeatureSet((A, D)), FeatureSet((A, B, D))]
    val = [FeatureSet((A, B)), FeatureSet((A, C)), FeatureSet((A, B))]
    assert shared_features(train, 1.0).items == (A,) and set(shared_features(train, 0.5).items) == {A, B, D}
    x, shared, rows = choose_threshold(train, val, (0.5, 0.7, 1.0))
    # 0.5: train {A,B,D} vs val {A,B} → 2/3; 0.7: train {A,B} (B in 3/4) vs val {A} (B in 2/3) → 1/2; 1.0: {A} vs {A}
    by = {r.threshold: r for r in rows}
    assert by[0.5].jaccard == pytest.approx(2 / 3) and by[0.7].jaccard == pytest.approx(1 / 2)
    assert by[1.0].jaccard == pytest.approx(1.0) and x == 1.0 and shared.items == (A,)
    x2, _, _ = choose_threshold(train, [FeatureSet((A, B, D))] * 2, (0.5, 1.0))  # 0.5 replicates exactly
    assert x2 == 0.5


def test_cluster_bootstrap():
    lo, hi = cluster_bootstrap([0.3] * 6, list("aabbcc"))
    assert lo == pytest.approx(0.3) and hi == pytest.approx(0.3)
    lo, hi = cluster_bootstrap([0.0, 0.0, 1.0, 1.0], ["a", "a", "b", "b"], n_boot=500)
    assert lo == 0.0 and hi == 1.0  # two clusters: a resample holds both, or either one twice


# --- token-level attribution -------------------------------------------------------------------------------------------------
def test_gradient_times_input_matches_finite_differences():
    """The attribution of token t is d/dα metric(embedding_t × α) at α = 1: checked by central differences, for two
    prompts of different lengths in one left-padded batch."""
    from refusal_sae.models.handle import position_ids_for
    from refusal_sae.models.hooks import StopForward, hook_name

    h = build_tiny("llama")
    saes = tiny_saes()
    fmt = [h.format(p) for p in PROMPTS]
    feats = FeatureSet.of([(2, f) for f in range(48)])
    clean, _ = read_codes(h, saes, feats, fmt)
    live = [j for j in range(48) if clean[1][-3:, j].mean() > 0][:6]
    fs = FeatureSet(tuple(feats.items[j] for j in live))
    scale = torch.full((len(fs),), 0.5)
    attr = token_attribution(h, saes, fs, scale, fmt, last=3, batch_size=2, progress=False)
    assert [len(a) for a in attr] == [len(f) for f in fmt]

    def metric(i: int, t: int, alpha: float) -> float:
        batch = h.batch([fmt[i]])
        emb = h.model.get_input_embeddings()(batch.input_ids).detach().clone()
        emb[0, t] *= alpha
        got = {}

        def grab(act):
            got["x"] = act
            raise StopForward

        with torch.no_grad(), h.hooks([(hook_name(2), grab)]):
            try:
                h.model(inputs_embeds=emb, attention_mask=batch.attention_mask,
                        position_ids=position_ids_for(batch.attention_mask), use_cache=False)
            except StopForward:
                pass
        codes = saes[2].encode(got["x"])[0, -3:, [f for _, f in fs]]
        return float((codes / 0.5).mean().detach())

    for i in (0, 1):
        for t in (1, len(fmt[i]) // 2, len(fmt[i]) - 1):
            fd = (metric(i, t, 1 + 1e-2) - metric(i, t, 1 - 1e-2)) / 2e-2  # float32: a smaller step is noise
            assert float(attr[i][t]) == pytest.approx(fd, rel=0.05, abs=2e-3)


def test_token_roles_split_wrapper_instruction_and_template():
    from refusal_sae.data.jailbreaks import wrap_details

    h = build_tiny("llama")
    w = wrap_details("pick a lock", "prefix_injection", 3)
    f, roles = token_roles(h, w.prompt, w.payload)
    assert len(roles) == len(f.input_ids) and roles[0] == "template"
    toks = [h.tokenizer.decode([t]) for t in f.input_ids]
    payload = "".join(t for t, r in zip(toks, roles, strict=True) if r == "payload")
    assert "lock" in payload and {"wrapper", "payload", "template"} <= set(roles)
    assert all(r == "template" for r in roles[f.inst_end :])  # the assistant turn's template tokens
    _, unknown = token_roles(h, w.prompt, [])
    assert "unknown" in unknown and "payload" not in unknown


def test_family_tokens_aggregate_planted_attributions():
    rows = [{"family": "f", "outcome": "jailbroken"}, {"family": "f", "outcome": "failed"},
            {"family": "g", "outcome": "failed"}]
    roles = [["template", "wrapper", "payload", "wrapper"]] * 3
    tokens = [["<s>", "Sure", "lock", "here"]] * 3
    attrs = [torch.tensor([9.0, -1.0, 0.5, 0.2]), torch.tensor([9.0, -3.0, 0.5, 0.4]), torch.tensor([0.0, 1.0, 0.0, 1.0])]
    out = {ft.family: ft for ft in family_tokens(rows, attrs, roles, tokens, top=5)}
    f = out["f"]
    assert f.n_prompts == 2 and f.wrapper == pytest.approx((-0.8 - 2.6) / 2) and f.payload == pytest.approx(0.5)
    assert f.template == pytest.approx(9.0) and f.by_outcome == {"jailbroken": pytest.approx(-0.8),
                                                                  "failed": pytest.approx(-2.6)}
    assert [(s.token, s.count) for s in f.top] == [("Sure", 2), ("here", 2)] and f.top[0].mean == pytest.approx(-2.0)
    assert out["g"].top == []  # one occurrence per token: below the minimum count


def _files(root) -> dict[str, float]:
    """Every file under ``root`` with its modification time (the shared fixture's run already holds results)."""
    from pathlib import Path

    return {str(p): p.stat().st_mtime_ns for p in Path(root).rglob("*") if p.is_file()}


# --- the stage end to end -----------------------------------------------------------------------------------------------------
class ScriptedJudge:
    """Complied when the prompt injects a compliant opening or is a harmless instruction, else refused."""

    def __init__(self, harmless=()):
        self.harmless = set(harmless)

    def judge(self, prompts, completions):
        return [Judgement("complied" if p in self.harmless or any(w in p for w in ("Sure", "Absolutely", "Of course"))
                          else "refused", "scripted") for p in prompts]


def fake_search_run(root, h, saes, k: int = 12, c: float = -3.0):
    """A run directory holding a direction and search results of the shapes the real stages write (the values
    are random: these tests check plumbing, not findings)."""
    from refusal_sae.direction.result import CandidateScore, DirectionResult
    from refusal_sae.search.choose import GridRow
    from refusal_sae.search.result import CandidatesResult, ChoiceResult, GreedyResult

    torch.manual_seed(0)
    run = RunDir(root)
    layers = sorted(L for L in (1, 2))
    d = torch.randn(h.d_model)
    tokens = opening_tokens(h.tokenizer)
    run.save(DirectionResult(d, torch.randn(h.n_layers, h.d_model), CandidateScore(-1, 1, 0.0, 1.0, 0.01, True),
                             tokens, (4, 4), (3, 3), 0, [], [0.0] * h.n_layers), {"seed": 0})
    cos = torch.randn(len(layers), 48)
    pre = FeatureSet(tuple((L, int(f)) for i, L in enumerate(layers) for f in cos[i].topk(8).indices))
    ours = FeatureSet(tuple(pre.items[i] for i in torch.randperm(len(pre)).tolist()))
    run.save(CandidatesResult(layers, "selected", 4, 4, tokens, cos, cos.clone(), torch.randn(len(layers), 48),
                              torch.randn(len(layers), 48), pre, ours, pre, pre, pre,
                              {L: list(range(48)) for L in layers}, {"selected": 1.0, "per_layer": 1.0}),
             {"seed": 0}, "search/candidates")
    run.save(ChoiceResult(8, 8, [GridRow(k, c, 8, 4, 0, 4)], k, c, True, "test"), {"seed": 0}, "search/choice")
    run.save(GreedyResult(ours.take(k), c, 0.1, [], ours.take(4), [], {}, 1.0), {"seed": 0}, "search/greedy")
    return run


@pytest.fixture(scope="module")
def tiny_upstream_run(tmp_path_factory, data_dir):
    """A fake search run with a real jailbreak table of 3 instructions × 2 families (prefix injection "works")."""
    h = build_tiny("llama")
    saes = tiny_saes()
    run = fake_search_run(tmp_path_factory.mktemp("upstream") / "run", h, saes)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jbmod, "get_judge", lambda spec: ScriptedJudge())
        run_jailbreaks_stage(h, run, JailbreaksConfig(families=("prefix_injection", "style_injection"),
                                                      n_instructions=3, max_new_tokens=2, batch_size=8),
                             data_dir, progress=False)
    return h, saes, run


def test_upstream_stage_end_to_end(tiny_upstream_run, data_dir, monkeypatch):
    from refusal_sae.analysis.upstream import UpstreamResult
    from refusal_sae.saes.loading import SaeSet

    h, saes, run = tiny_upstream_run
    monkeypatch.setattr(jbmod, "get_judge", lambda spec: ScriptedJudge())
    sae_set = SaeSet()
    for L, s in saes.items():
        sae_set.add(s, f"tiny-{L}")
    cfg = UpstreamConfig(n_train=4, n_val=4, ig_steps=2, last=3, n_random=2, max_new_tokens=2, batch_size=4,
                         thresholds=(0.25, 0.5, 0.75, 1.0))
    res = run_upstream_stage(h, sae_set, run, cfg, data_dir, progress=False)
    assert len(res.refusal_features) >= 1 and res.threshold in cfg.thresholds and res.k == 12 and res.clamp == -3.0
    assert [r.group for r in res.table] == ["jailbroken", "failed", "degenerate", "all pairs"]
    assert res.table[0].n_pairs == 3 and res.table[1].n_pairs == 3 and res.table[3].n_instructions == 3
    assert len(res.pairs) == 6 and len(res.instructions) == 3
    assert {ft.family for ft in res.tokens} == {"prefix_injection", "style_injection"}
    for i in res.instructions:  # upstream = own set minus the refusal features, each placed outside the last tokens
        assert not set(map(tuple, i["upstream"])) & set(res.refusal_features.items)
        assert all(p is None or 1 <= p < i["n_tokens"] - 3 for p in i["positions"].values())
    assert set(res.difference) == {"harm_drop", "refusal_drop", "ablation_drop"}
    assert RunDir(run.root).load(UpstreamResult, "analysis/upstream") is not None


def test_upstream_cli_bad_input_fails_before_the_model_loads(tmp_path, tiny_upstream_run):
    """A model path that does not exist: had the command loaded it first, the error would be about the model."""
    import shutil

    from typer.testing import CliRunner

    from refusal_sae.cli import app
    from refusal_sae.errors import RefusalSaeError

    _, _, run = tiny_upstream_run
    RunDir(tmp_path / "bare").path("direction")
    shutil.copytree(run.root / "direction", tmp_path / "nosearch" / "direction")
    cases = [(tmp_path / "bare", [], "no refusal direction"),
             (tmp_path / "nosearch", [], "run `refusal-sae search"),
             (run.root, ["--clamp", "1"], "clamp must be a finite multiplier other than 1"),
             (run.root, ["--clamp", "strong"], "--clamp takes a number or 'search'"),
             (run.root, ["--jailbreak-file", "other.jsonl"], "no jailbreak table"),
             (run.root, ["--thresholds", "0,0.5"], "thresholds are shares")]
    for root, args, needle in cases:
        before = _files(root)
        r = CliRunner().invoke(app, ["upstream", "--model", str(tmp_path / "no-model"), "--run-dir", str(root), *args])
        assert isinstance(r.exception, RefusalSaeError) and needle in str(r.exception), (args, r.exception)
        assert _files(root) == before  # nothing written, nothing half-written
