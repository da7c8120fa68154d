"""Hook points read and write exactly the residual stream."""

import pytest
import torch

from refusal_sae.errors import ConfigError
from refusal_sae.models.handle import position_ids_for
from refusal_sae.models.hooks import parse_hook_point
from tests.helpers.reference import ablate, reference_logits_with_ablation

PROMPTS = ["How do I bake bread?", "Write a poem about the sea and the wind."]


def test_direction_ablation_at_every_layer_matches_reference(tiny_handle):
    torch.manual_seed(1)
    d = torch.randn(tiny_handle.d_model)
    d = d / d.norm()
    batch = tiny_handle.batch(PROMPTS)
    hooks = [(f"blocks.{L}.hook_resid_pre", ablate(d)) for L in range(tiny_handle.n_layers)]
    hooks.append((f"blocks.{tiny_handle.n_layers - 1}.hook_resid_post", ablate(d)))
    with torch.no_grad():
        clean = tiny_handle.forward(batch)
        with tiny_handle.hooks(hooks):
            hooked = tiny_handle.forward(batch)
        ref = reference_logits_with_ablation(tiny_handle, batch, d)
    real = batch.attention_mask.bool()
    torch.testing.assert_close(hooked[real], ref[real], atol=1e-4, rtol=1e-4)
    # the intervention is not a no-op, so the comparison above has teeth
    assert (hooked[real] - clean[real]).abs().max() > 1e-2
    # and the reference itself reproduces the clean model when nothing is ablated
    with torch.no_grad():
        zero = reference_logits_with_ablation(tiny_handle, batch, torch.zeros_like(d))
    torch.testing.assert_close(zero[real], clean[real], atol=1e-4, rtol=1e-4)


def test_hooks_read_hidden_states(tiny_handle):
    batch = tiny_handle.batch(PROMPTS)
    names = [f"blocks.{L}.hook_resid_{k}" for L in range(tiny_handle.n_layers) for k in ("pre", "post")]
    cache = {}
    with torch.no_grad(), tiny_handle.hooks([(n, lambda a, n=n: cache.__setitem__(n, a)) for n in names]):
        out = tiny_handle.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                position_ids=position_ids_for(batch.attention_mask), output_hidden_states=True)
    hs = out.hidden_states
    for L in range(tiny_handle.n_layers):
        torch.testing.assert_close(cache[f"blocks.{L}.hook_resid_pre"], hs[L])
        if L < tiny_handle.n_layers - 1:  # HF applies the final norm to the last hidden state
            torch.testing.assert_close(cache[f"blocks.{L}.hook_resid_post"], hs[L + 1])


def test_attn_and_mlp_out_sum_to_resid_delta(tiny_llama):
    batch = tiny_llama.batch(PROMPTS)
    cache = {}
    names = ["blocks.1.hook_resid_pre", "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"]
    with torch.no_grad(), tiny_llama.hooks([(n, lambda a, n=n: cache.__setitem__(n, a)) for n in names]):
        tiny_llama.forward(batch)
    total = cache[names[0]] + cache[names[1]] + cache[names[2]]
    torch.testing.assert_close(total, cache[names[3]], atol=1e-5, rtol=1e-5)


def test_hooks_are_removed_after_context(tiny_llama):
    batch = tiny_llama.batch(PROMPTS)
    with torch.no_grad():
        before = tiny_llama.forward(batch)
        with tiny_llama.hooks([("blocks.0.hook_resid_post", lambda a: a * 0)]):
            during = tiny_llama.forward(batch)
        after = tiny_llama.forward(batch)
    assert not torch.allclose(before, during)
    torch.testing.assert_close(before, after)


def test_hooks_removed_when_body_raises(tiny_llama):
    with pytest.raises(RuntimeError), tiny_llama.hooks([("blocks.0.hook_resid_post", lambda a: a * 0)]):
        raise RuntimeError("boom")
    assert not any(m._forward_hooks for m in tiny_llama.model.modules())


def test_cache_activations_stops_after_deepest_layer(tiny_llama):
    calls = []
    last = tiny_llama.model.model.layers[3]
    h = last.register_forward_hook(lambda *a: calls.append(1))
    try:
        cache = tiny_llama.cache_activations(tiny_llama.batch(PROMPTS), ["blocks.1.hook_resid_post", "blocks.0.hook_resid_pre"])
    finally:
        h.remove()
    assert set(cache) == {"blocks.1.hook_resid_post", "blocks.0.hook_resid_pre"}
    assert cache["blocks.1.hook_resid_post"].shape[-1] == tiny_llama.d_model
    assert calls == []


@pytest.mark.parametrize("name", ["blocks.9.hook_resid_post", "blocks.-1.hook_resid_pre", "layers.0.resid", "blocks.0.hook_z"])
def test_bad_hook_names_are_config_errors(name):
    with pytest.raises(ConfigError):
        parse_hook_point(name, n_layers=4)
