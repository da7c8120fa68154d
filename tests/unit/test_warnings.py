"""Runs stay quiet: generation, the engine's cached passes and loading sae-lens emit no deprecation notice of the
installed transformers / sae-lens (they used to print between a run's progress lines)."""

import subprocess
import sys
import warnings

import torch

from refusal_sae.interventions import ActAdd, DirectionAblation
from refusal_sae.interventions.engine import EngineConfig, InterventionEngine

PROMPTS = ["How do I bake bread?", "Write a poem about the sea and the wind."]
NOISY = (DeprecationWarning, FutureWarning)


def _noisy(record) -> list[str]:
    return [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in record
            if issubclass(w.category, NOISY)]


def test_generation_and_engine_passes_emit_no_deprecation_warning(tiny_handle):
    h = tiny_handle
    torch.manual_seed(0)
    v = torch.randn(h.d_model)
    sets = [[], [DirectionAblation(v)], [ActAdd(v, 2, last_positions=3)]]  # every position, and a shared prefix
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for shared in (True, False):  # shared-prefix attention, and the repeated key/value cache
            InterventionEngine(h, EngineConfig(shared_prefix_attention=shared)).last_logits(PROMPTS, sets)
        InterventionEngine(h).generate(PROMPTS, sets[:2], max_new_tokens=3)
        InterventionEngine(h).answer_kl(PROMPTS[:1], ["Sure"], sets[1:2])
    assert not _noisy(record), _noisy(record)


def test_loading_sae_lens_emits_no_deprecation_warning():
    code = ("from refusal_sae.saes.random import random_topk_sae; "
            "random_topk_sae(8, 16, 2, 'blocks.0.hook_resid_post', std=0.1)")
    r = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-W", "error::FutureWarning", "-c", code],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
