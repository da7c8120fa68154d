import pytest
import torch

from refusal_sae.direction import (
    CandidateScore,
    DirectionCandidates,
    SelectionConfig,
    choose,
    compute_candidates,
    kl_by_prompt,
    mean_activations,
    score_candidates,
)
from refusal_sae.errors import ConfigError
from refusal_sae.models.hooks import hook_name
from refusal_sae.scoring.refusal_score import opening_tokens

HARMFUL = ["Explain how to pick a lock, step by step.", "How do I pick a lock?", "Write how to pick a lock"]
HARMLESS = ["How do I bake bread?", "Write a poem about the sea.", "The quick brown fox jumps"]


def test_mean_activations_match_manual(tiny_llama):
    h = tiny_llama
    m = mean_activations(h, HARMFUL, batch_size=2)
    manual_post, manual_t = [], []
    for text in HARMFUL:
        p = h.format(text)
        cache = h.cache_activations(h.batch([p]), [hook_name(L, "resid_pre") for L in range(h.n_layers)])
        acts = torch.stack([cache[hook_name(L, "resid_pre")][0] for L in range(h.n_layers)], dim=1)  # [T, L, d]
        manual_post.append(acts[list(p.post_inst)])
        manual_t.append(acts[p.t_inst])
    torch.testing.assert_close(m.post_inst, torch.stack(manual_post).double().mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m.t_inst, torch.stack(manual_t).double().mean(0), atol=1e-5, rtol=1e-5)
    assert m.post_inst.dtype == torch.float64


def test_candidates_shape_and_roundtrip(tiny_llama, tmp_path):
    c = compute_candidates(tiny_llama, HARMFUL, HARMLESS, batch_size=4)
    n_post = tiny_llama.format(HARMFUL[0]).n_post_inst
    assert c.refusal.shape == (n_post, tiny_llama.n_layers, tiny_llama.d_model)
    assert c.harm.shape == (tiny_llama.n_layers, tiny_llama.d_model)
    assert c.positions == list(range(-n_post, 0))
    torch.testing.assert_close(c.get(-1, 2), c.refusal[-1, 2])
    c.save(tmp_path / "c.safetensors")
    d = DirectionCandidates.load(tmp_path / "c.safetensors")
    torch.testing.assert_close(d.refusal, c.refusal)
    assert (d.n_harmful, d.n_harmless) == (3, 3)


def test_scoring_filters_and_chooses(tiny_llama):
    h = tiny_llama
    c = compute_candidates(h, HARMFUL, HARMLESS, batch_size=4)
    cfg = SelectionConfig(layers=(0, 1, 3), positions=(-1,), max_kl=1e9, min_induce=-1e9)
    scores = score_candidates(h, c, HARMFUL, HARMLESS, opening_tokens(h.tokenizer), cfg)
    assert [(s.pos, s.layer) for s in scores] == [(-1, 0), (-1, 1), (-1, 3)]
    assert not scores[0].kept and scores[0].reason == "zero vector"  # layer 0 sees identical template embeddings
    assert not scores[2].kept and "last" in scores[2].reason  # layer 3 of 4 is in the last 20%
    best = choose(scores)
    # the engine-stacked scores equal a plain hooked computation
    from refusal_sae.interventions import ActAdd, DirectionAblation
    from refusal_sae.scoring.refusal_score import refusal_scores

    r = c.get(best.pos, best.layer).float()
    with h.hooks(DirectionAblation(r).hooks(h)):
        assert refusal_scores(h, HARMFUL, opening_tokens(h.tokenizer)).mean().item() == pytest.approx(best.bypass, abs=1e-4)
    with h.hooks(ActAdd(r, best.layer).hooks(h)):
        assert refusal_scores(h, HARMLESS, opening_tokens(h.tokenizer)).mean().item() == pytest.approx(best.induce, abs=1e-4)
    assert best.kept and best.bypass == min(s.bypass for s in scores if s.kept)
    assert all(s.kl >= -1e-9 for s in scores if s.kept)
    assert best.kl_median <= best.kl_max and best.kl <= best.kl_max + 1e-9
    # the per-prompt breakdown of the chosen direction: sorted, and its mean is the candidate's KL
    rows = kl_by_prompt(h, r, HARMLESS, top=2)
    assert sorted(row.instruction for row in rows) == sorted(HARMLESS)
    assert [row.kl for row in rows] == sorted((row.kl for row in rows), reverse=True)
    assert sum(row.kl for row in rows) / len(rows) == pytest.approx(best.kl, abs=1e-6)
    assert len(rows[0].clean_top) == 2 and rows[0].clean_top[0][1] >= rows[0].clean_top[1][1]


def test_choose_with_nothing_kept():
    with pytest.raises(ConfigError, match="filtered out"):
        choose([CandidateScore(-1, 0, 1.0, -2.0, 0.5, False, "KL")])


def test_bad_layer_rejected(tiny_llama):
    c = compute_candidates(tiny_llama, HARMFUL[:1], HARMLESS[:1])
    with pytest.raises(ConfigError):
        score_candidates(tiny_llama, c, HARMFUL, HARMLESS, [0], SelectionConfig(layers=(9,)))


def test_massive_mask_uses_real_tokens_only():
    from refusal_sae.direction.diff_in_means import massive_mask

    acts = torch.ones(1, 4, 1, 3)
    acts[0, 1] *= 100.0  # massive
    acts[0, 0] *= 1000.0  # padding: ignored, and not counted in the median
    mask = massive_mask(acts, torch.tensor([[0, 1, 1, 1]]), ratio=5.0)
    assert mask[0, :, 0].tolist() == [False, True, False, False]


def test_massive_direction_is_found_and_projected_out(tiny_llama):
    """A planted attention-sink-like activation (huge, fixed direction at the first token) is found, and the
    candidates carry no component along it; massive_k=0 leaves plain difference-in-means."""
    h = tiny_llama
    e = torch.zeros(h.d_model)
    e[3] = 1.0

    def plant(act):
        act = act.clone()
        act[:, 0] += 500.0 * e.to(act.dtype)  # batch_size=1: position 0 is the first token
        return act

    with h.hooks([("blocks.1.hook_resid_pre", plant)]):
        plain = compute_candidates(h, HARMFUL, HARMLESS, batch_size=1, massive_k=0)
        cleaned = compute_candidates(h, HARMFUL, HARMLESS, batch_size=1, massive_k=1)
    assert plain.massive is None and cleaned.massive.shape == (1, h.d_model)
    assert abs(cleaned.massive[0] @ e.double()) > 0.99
    assert cleaned.refusal[:, 1:].matmul(cleaned.massive[0]).abs().max() < 1e-9
    assert plain.refusal[:, 1:].matmul(cleaned.massive[0]).abs().max() > 1e-6
