"""The engine gives the same answers as the naive loop (one hooked forward per set)."""

import pytest
import torch

from refusal_sae.interventions import ActAdd, DirectionAblation
from refusal_sae.interventions.engine import EngineConfig, InterventionEngine
from refusal_sae.scoring.refusal_score import opening_tokens, refusal_scores

PROMPTS = ["How do I bake bread?", "Write a poem about the sea and the wind.", "Hi", "Explain how to pick a lock"]


def naive(handle, prompts, sets):
    rows = []
    for s in sets:
        hooks = [hk for iv in s for hk in iv.hooks(handle)]
        batch = handle.batch(prompts)
        with torch.no_grad(), handle.hooks(hooks):
            rows.append(handle.forward(batch)[:, -1].float())
    return torch.stack(rows)


def make_sets(h, k=None):
    torch.manual_seed(0)
    v = [torch.randn(h.d_model) for _ in range(3)]
    return [
        [],
        [ActAdd(v[0], layer=2, coeff=2.0, last_positions=k)],
        [ActAdd(v[1], layer=1, last_positions=k), ActAdd(v[2], layer=3, coeff=-1.0, last_positions=k)],
    ]


@pytest.mark.parametrize("k", [None, 3])
def test_engine_matches_naive_loop(tiny_handle, k):
    sets = make_sets(tiny_handle, k)
    engine = InterventionEngine(tiny_handle, EngineConfig(prompt_batch_size=3, max_sets_per_forward=2))
    got = engine.last_logits(PROMPTS, sets)
    want = naive(tiny_handle, PROMPTS, sets)
    assert got.shape == want.shape == (3, 4, tiny_handle.config.vocab_size)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert (want[1] - want[0]).abs().max() > 1e-2  # the sets really differ


def test_engine_with_every_layer_ablation_and_scores(tiny_llama):
    h = tiny_llama
    sets = [[DirectionAblation(torch.randn(h.d_model))], [ActAdd(torch.randn(h.d_model), 2)]]
    toks = opening_tokens(h.tokenizer)
    got = InterventionEngine(h).score(PROMPTS, sets, toks)
    for i, s in enumerate(sets):
        with h.hooks([hk for iv in s for hk in iv.hooks(h)]):
            torch.testing.assert_close(got[i], refusal_scores(h, PROMPTS, toks), atol=1e-4, rtol=1e-4)


def test_no_sets_clean(tiny_llama):
    got = InterventionEngine(tiny_llama).last_logits(PROMPTS, [[]])
    torch.testing.assert_close(got, naive(tiny_llama, PROMPTS, [[]]), atol=1e-4, rtol=1e-4)


def test_memory_budget_bounds_sets_per_forward(tiny_llama):
    small = InterventionEngine(tiny_llama, EngineConfig(memory_budget_mb=0.5)).sets_per_forward(8, 64)
    big = InterventionEngine(tiny_llama, EngineConfig(memory_budget_mb=4096)).sets_per_forward(8, 64)
    assert 1 <= small < big <= 64


def random_sae(d_in, d_sae=128, k=8, hook="blocks.2.hook_resid_post", seed=0):
    from refusal_sae.saes.random import random_topk_sae

    return random_topk_sae(d_in, d_sae, k, hook, std=0.3, seed=seed)


def test_feature_clamp_keeps_error_term(tiny_llama):
    from refusal_sae.interventions import FeatureClamp

    h = tiny_llama
    sae = random_sae(h.d_model)
    got = {}
    read = ("blocks.2.hook_resid_post", lambda a: got.__setitem__("x", a.clone()))
    batch = h.batch(PROMPTS)
    with torch.no_grad():
        with h.hooks([read]):
            clean_logits = h.forward(batch)
        x = got["x"]
        f = sae.encode(x)
        ids = f[0, -1].nonzero().flatten()[:3].tolist()
        assert ids, "no active feature to clamp"
        clamp = FeatureClamp(sae, tuple(ids), "zero")
        with h.hooks(clamp.hooks(h) + [read]):
            h.forward(batch)
        delta = got["x"] - x
        # only the clamped features' decoder directions are removed; the error term stays
        torch.testing.assert_close(delta, -(f[..., ids] @ sae.W_dec[ids]), atol=1e-4, rtol=1e-4)
        # scaling by 1 is the identity
        with h.hooks(FeatureClamp(sae, tuple(ids), "scale", 1.0).hooks(h)):
            torch.testing.assert_close(h.forward(batch), clean_logits, atol=1e-4, rtol=1e-4)


def test_engine_with_feature_clamps_matches_naive(tiny_handle):
    from refusal_sae.interventions import FeatureClamp

    sae = random_sae(tiny_handle.d_model)
    sets = [[FeatureClamp(sae, (i, i + 1), "set", 3.0, last_positions=4)] for i in range(0, 12, 2)]
    got = InterventionEngine(tiny_handle, EngineConfig(max_sets_per_forward=4)).last_logits(PROMPTS, sets)
    torch.testing.assert_close(got, naive(tiny_handle, PROMPTS, sets), atol=1e-4, rtol=1e-4)
    clean = naive(tiny_handle, PROMPTS, [[]])[0]
    assert all((got[s] - clean).abs().max() > 1e-3 for s in range(len(sets)))  # every clamp changed the output


def test_any_sae_intervention_shares_the_encode(tiny_llama):
    """The engine shares one encode per SAE through the SaeIntervention protocol, not for FeatureClamp alone: a
    different edit (here: add a constant to one code) gets the shared codes too, and matches the naive loop."""
    from dataclasses import dataclass

    from refusal_sae.interventions import FeatureClamp, SaeIntervention

    h = tiny_llama
    sae = random_sae(h.d_model)
    calls = []
    enc = sae.encode
    sae.encode = lambda x: calls.append(1) or enc(x)

    @dataclass(frozen=True, eq=False)
    class Bump:
        feature: int
        last_positions: int | None = 3

        def codes_key(self):
            return (id(sae), self.last_positions)

        def encode(self, act):
            return sae.encode(act[:, -self.last_positions:])

        def apply(self, act, codes):
            out = act.clone()
            out[:, -self.last_positions:] += 2.0 * sae.W_dec[self.feature]
            return out

        def hooks(self, handle):
            return [("blocks.2.hook_resid_post", lambda a: self.apply(a, self.encode(a)))]

    assert isinstance(Bump(0), SaeIntervention) and isinstance(FeatureClamp(sae, (1,)), SaeIntervention)
    sets = [[Bump(i)] for i in range(4)] + [[FeatureClamp(sae, (5,), "zero", last_positions=3)]]
    got = InterventionEngine(h, EngineConfig(prompt_batch_size=4)).last_logits(PROMPTS, sets)
    assert len(calls) == 1  # one encode shared by five sets of two kinds
    torch.testing.assert_close(got, naive(h, PROMPTS, sets), atol=1e-4, rtol=1e-4)


def test_feature_clamp_validation(tiny_llama):
    from refusal_sae.errors import ConfigError, MismatchError
    from refusal_sae.interventions import FeatureClamp

    sae = random_sae(tiny_llama.d_model)
    with pytest.raises(ConfigError, match="out of range"):
        FeatureClamp(sae, (999,))
    with pytest.raises(ConfigError, match="mode"):
        FeatureClamp(sae, (1,), "double")
    with pytest.raises(MismatchError):
        FeatureClamp(random_sae(32), (1,)).hooks(tiny_llama)
    with pytest.raises(ConfigError):
        FeatureClamp(random_sae(tiny_llama.d_model, hook="blocks.9.hook_resid_post"), (1,)).hooks(tiny_llama)


def mixed_sets(h):
    """Sets whose earliest hook differs: resid_post entry (layer shared), resid_pre entry, clamps after edits."""
    from refusal_sae.interventions import FeatureClamp

    torch.manual_seed(1)
    sae = random_sae(h.d_model)
    return [
        [FeatureClamp(sae, (0, 1, 2), "zero", last_positions=3)],
        [FeatureClamp(sae, (3, 4), "scale", 0.5, last_positions=2), ActAdd(torch.randn(h.d_model), 3, last_positions=3)],
        [FeatureClamp(sae, (5,), "set", 2.0, last_positions=3), FeatureClamp(sae, (6, 7), "zero", last_positions=3)],
        [],
    ]


@pytest.mark.parametrize("shared", [True, False])
def test_engine_entry_and_prefix_paths_match_naive(tiny_handle, shared):
    """Both ways of attending to the key/value prefix, with the layer after a resid_post entry shared, or a
    resid_pre entry (an addition at layer 2 in one set) forcing the layer to run per set."""
    h = tiny_handle
    sets = mixed_sets(h)
    cfg = EngineConfig(prompt_batch_size=4, max_sets_per_forward=3, shared_prefix_attention=shared)
    got = InterventionEngine(h, cfg).last_logits(PROMPTS, sets)
    torch.testing.assert_close(got, naive(h, PROMPTS, sets), atol=1e-4, rtol=1e-4)
    sets2 = sets + [[ActAdd(torch.randn(h.d_model), 2, last_positions=3)]]
    got2 = InterventionEngine(h, cfg).last_logits(PROMPTS, sets2)
    torch.testing.assert_close(got2, naive(h, PROMPTS, sets2), atol=1e-4, rtol=1e-4)


def test_clamps_on_one_sae_share_one_encode(tiny_llama):
    from refusal_sae.interventions import FeatureClamp

    h = tiny_llama
    sae = random_sae(h.d_model)
    calls = []
    enc = sae.encode
    sae.encode = lambda x: calls.append(x.shape) or enc(x)
    sets = [[FeatureClamp(sae, (i,), "zero", last_positions=3)] for i in range(8)]
    got = InterventionEngine(h, EngineConfig(prompt_batch_size=4)).last_logits(PROMPTS, sets)
    assert len(calls) == 1  # one prompt batch, one encode for all eight sets
    calls.clear()
    torch.testing.assert_close(got, naive(h, PROMPTS, sets), atol=1e-4, rtol=1e-4)
    assert len(calls) == 8


def test_sliding_window_shorter_than_prompt_falls_back_to_repeated_cache():
    from tests.conftest import build_tiny

    h = build_tiny("gemma2")
    h.model.config.sliding_window = 6  # shorter than the formatted prompts: the sliding layers see a window
    for layer in h.model.model.layers:
        if layer.self_attn.sliding_window is not None:
            layer.self_attn.sliding_window = 6
    sets = mixed_sets(h)
    engine = InterventionEngine(h, EngineConfig(prompt_batch_size=4))
    assert not engine._can_share_prefix(20)
    torch.testing.assert_close(engine.last_logits(PROMPTS, sets), naive(h, PROMPTS, sets), atol=1e-4, rtol=1e-4)


def test_clamp_from_positions_is_a_clamp_where_every_span_covers_the_window():
    """FeatureClampFrom shares FeatureClamp's arithmetic: spans as long as the window give the same edit."""
    from refusal_sae.interventions import FeatureClamp, FeatureClampFrom

    sae = random_sae(64)
    torch.manual_seed(0)
    act = torch.randn(2, 7, 64)
    for mode, value in (("zero", 0.0), ("scale", -3.0), ("set", 2.0)):
        plain = FeatureClamp(sae, (1, 5, 9), mode, value, last_positions=4)
        spans = FeatureClampFrom(sae, (1, 5, 9), mode, value, spans=(4, 4, 4))
        assert spans.last_positions == 4
        assert torch.equal(spans.apply(act, spans.encode(act)), plain.apply(act, plain.encode(act)))


def test_row_routed_hooks_apply_each_rows_own_set_only(tiny_llama):
    from refusal_sae.interventions import row_routed_hooks

    h = tiny_llama
    torch.manual_seed(0)
    per_row = [[ActAdd(torch.randn(h.d_model), 1, coeff=2.0)], [], [DirectionAblation(torch.randn(h.d_model))]]
    batch = h.batch(PROMPTS[:3])
    with torch.no_grad():
        with h.hooks(row_routed_hooks(h, per_row)):
            got = h.forward(batch)[:, -1]
        for b, s in enumerate(per_row):  # each row as if its set were applied to the whole batch
            with h.hooks([hk for iv in s for hk in iv.hooks(h)]):
                torch.testing.assert_close(got[b], h.forward(batch)[b, -1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got[0], h.forward(batch)[0, -1])  # the routed edit is applied
