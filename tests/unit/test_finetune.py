"""The safety fine-tune's data: decontamination and the base-refusal filter (no training here)."""

import hashlib
import json

import pytest

from refusal_sae.data import load_dataset
from refusal_sae.finetune.tune import TEST_SETS, TuneConfig, _norm, build_examples, build_instructions


@pytest.fixture
def cfg():
    return TuneConfig(n_harmful=12, n_extra_advbench=6, n_harmless=10, persuasive_pairs=True, drop_refused_harmless=True)


def test_instructions_are_decontaminated(cfg):
    harmful, harmless = build_instructions(cfg, None)
    assert len(harmful) > 12 and len(harmless) > 10  # + advbench extras and the authored pairs
    banned = {_norm(r.instruction) for n in TEST_SETS for r in load_dataset(n)}
    assert not banned & {_norm(x) for x in harmful + harmless}


def test_base_refusals_are_dropped_from_harmless_targets(cfg, tmp_path):
    harmful, harmless = build_instructions(cfg, None)
    answers = [f"Sure, here is an answer about topic {i}." for i in range(len(harmless))]
    answers[0] = "I'm sorry, but as an AI I cannot browse the internet."
    answers[1] = ""
    key = hashlib.sha256(json.dumps([harmless, cfg.harmless_answer_tokens]).encode()).hexdigest()[:12]
    (tmp_path / f"harmless_answers-{key}.json").write_text(json.dumps(answers))
    stats: dict = {}
    ex = build_examples(None, cfg, None, tmp_path, stats)  # cached answers: the model is never called
    targets = {x: t for x, t, _ in ex}
    assert harmless[0] not in targets and harmless[1] not in targets and targets[harmless[2]] == answers[2]
    assert stats == {"n_harmful": len(harmful), "n_harmless_prompts": len(harmless),
                     "n_harmless_kept": len(harmless) - 2, "base_refused_harmless": 1}
    assert all(eos for x, _, eos in ex if x in harmful) and not any(eos for x, _, eos in ex if x in harmless)
    kept_all = build_examples(None, TuneConfig(**{**cfg.__dict__, "drop_refused_harmless": False}), None, tmp_path)
    assert len(kept_all) == len(ex) + 1  # only the empty answer is still dropped
