import copy

import pytest
import torch

from refusal_sae.errors import ConfigError, MismatchError, NumericalError
from refusal_sae.interventions import ActAdd, DirectionAblation, export_model, orthogonalize_
from refusal_sae.models import load_model
from tests.conftest import build_tiny

PROMPTS = ["How do I bake bread?", "Write a poem about the sea and the wind."]


def _logits(h, hooks=()):
    batch = h.batch(PROMPTS)
    with torch.no_grad(), h.hooks(list(hooks)):
        return h.forward(batch)[batch.attention_mask.bool()]


@pytest.mark.parametrize("tied", [False, True])
def test_orthogonalised_export_matches_hooked_ablation(tmp_path, tied):
    h = build_tiny("llama")
    if tied:
        h.model.config.tie_word_embeddings = True
        h.model.lm_head.weight = h.model.model.embed_tokens.weight
    torch.manual_seed(0)
    r = torch.randn(h.d_model)
    hooked = _logits(h, DirectionAblation(r).hooks(h))
    clean = _logits(h)
    edited = copy.deepcopy(h)
    orthogonalize_(edited, r)
    torch.testing.assert_close(_logits(edited), hooked, atol=1e-4, rtol=1e-4)
    reloaded = load_model(str(export_model(edited, tmp_path / "ortho")), device="cpu", dtype="float32")
    torch.testing.assert_close(_logits(reloaded), hooked, atol=1e-4, rtol=1e-4)
    assert (hooked - clean).abs().max() > 1e-2


def test_ablation_leaves_no_component_in_stream():
    h = build_tiny("llama")
    r = torch.randn(h.d_model)
    ru = r / r.norm()
    seen = []
    names = [f"blocks.{L}.hook_resid_post" for L in range(h.n_layers)]
    reader = [(n, lambda a: seen.append((a @ ru).abs().max().item())) for n in names]
    _logits(h, DirectionAblation(r).hooks(h) + reader)
    assert max(seen) < 1e-4


def test_ablation_restricted_to_layers_leaves_earlier_layers_alone():
    h = build_tiny("llama")
    r = torch.randn(h.d_model)
    ru = r / r.norm()
    seen = {}
    reader = [(f"blocks.{L}.hook_resid_post", lambda a, L=L: seen.__setitem__(L, (a @ ru).abs().max().item()))
              for L in range(h.n_layers)]
    _logits(h, DirectionAblation(r, layers=(2, 3)).hooks(h) + reader)
    assert seen[0] > 1e-3 and seen[1] > 1e-3  # untouched before layer 2
    assert seen[2] < 1e-4 and seen[3] < 1e-4
    assert {n.split(".")[1] for n, _ in DirectionAblation(r, layers=(2, 3)).hooks(h)} == {"2", "3"}


def test_actadd_shifts_resid_by_vector():
    h = build_tiny("llama")
    v = torch.randn(h.d_model)
    got = {}
    read = ("blocks.2.hook_resid_pre", lambda a: got.__setitem__("x", a.clone()))
    _logits(h, [read])
    base = got["x"]
    _logits(h, ActAdd(v, layer=2, coeff=3.0).hooks(h) + [read])
    torch.testing.assert_close(got["x"] - base, (3.0 * v).expand_as(base), atol=1e-5, rtol=1e-5)


def test_intervention_errors():
    h = build_tiny("llama")
    with pytest.raises(MismatchError):
        DirectionAblation(torch.randn(h.d_model + 1)).hooks(h)
    with pytest.raises(ConfigError):
        ActAdd(torch.randn(h.d_model), layer=99).hooks(h)
    with pytest.raises(ConfigError, match="out of range"):
        DirectionAblation(torch.randn(h.d_model), layers=(1, 99)).hooks(h)
    with pytest.raises(NumericalError):
        DirectionAblation(torch.full((h.d_model,), float("nan"))).hooks(h)
    with pytest.raises(ConfigError, match="approximate"):
        orthogonalize_(build_tiny("gemma2"), torch.randn(64))
