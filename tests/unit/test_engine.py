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
