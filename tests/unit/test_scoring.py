import math
import random

import pytest
import torch

from refusal_sae.errors import ConfigError
from refusal_sae.finetune.refusals import OPENINGS, sample_refusal
from refusal_sae.scoring.judge import (
    COMPLIED,
    DEGENERATE,
    REFUSED,
    HeuristicJudge,
    SubstringJudge,
    get_judge,
    is_refusal,
    repetition_ratio,
)
from refusal_sae.scoring.refusal_score import opening_tokens, refusal_score_from_logits, refusal_scores
from refusal_sae.scoring.stats import wilson_interval


def test_refusal_score_is_log_odds():
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0]])
    p = torch.softmax(logits.double(), -1)[0]
    pr = (p[0] + p[2]).item()
    got = refusal_score_from_logits(logits, [0, 2]).item()
    assert got == pytest.approx(math.log(pr) - math.log(1 - pr), abs=1e-6)
    # more mass on refusal tokens → higher score
    assert refusal_score_from_logits(torch.tensor([[5.0, 0.0, 1.0, -1.0]]), [0, 2]).item() > got


def test_batched_scores_match_single(tiny_llama):
    prompts = ["Hi", "How do I bake bread at home with simple ingredients?", "Write a poem"]
    toks = opening_tokens(tiny_llama.tokenizer)
    batched = refusal_scores(tiny_llama, prompts, toks, batch_size=2)
    single = torch.cat([refusal_scores(tiny_llama, [p], toks) for p in prompts])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_opening_tokens_per_tokenizer(tiny_llama):
    toks = opening_tokens(tiny_llama.tokenizer)
    assert toks and len(set(toks)) == len(toks)
    first = tiny_llama.tokenizer("I'm sorry", add_special_tokens=False)["input_ids"][0]
    assert first in toks


@pytest.mark.parametrize("text", ["I'm sorry, but I can't help with that.", "I cannot do this.",
                                  "As an AI, I must decline.", "Sorry, but no.", "I can\u2019t assist."])
def test_refusals_detected(text):
    assert is_refusal(text)


def test_every_training_refusal_is_judged_refused():
    rng = random.Random(0)
    assert all(is_refusal(o) for o in OPENINGS)
    assert all(is_refusal(sample_refusal(rng)) for _ in range(200))


def test_degenerate_rules():
    j = SubstringJudge()
    out = j.judge(["q"] * 4, ["", "ok sure", "the cat " * 20, "Bread needs flour, water, yeast and salt, then time."])
    assert [x.label for x in out] == [DEGENERATE, DEGENERATE, DEGENERATE, COMPLIED]
    assert [x.reason for x in out[:3]] == ["empty", "too short", "repetition"]
    assert repetition_ratio("a b c d e f g h i j") == 0.0


def test_relevance_catches_off_topic():
    j = HeuristicJudge()
    q = "How do I bake bread at home?"
    out = j.judge([q, q, q], [
        "Mix flour, water, yeast and salt, knead the dough, let it rise, then bake it in a hot oven.",
        "The stock market closed higher on Tuesday as technology shares rallied across Asia.",
        "I'm sorry, but I can't help with that.",
    ])
    assert out[0].label == COMPLIED and out[0].relevance > 0.4
    assert out[1].label == DEGENERATE and out[1].reason == "off-topic"
    assert out[2].label == REFUSED


def test_judge_registry():
    assert isinstance(get_judge("substring"), SubstringJudge)
    with pytest.raises(ConfigError):
        get_judge("nope")


def test_wilson_interval():
    lo, hi = wilson_interval(90, 100)
    assert lo == pytest.approx(0.8256, abs=1e-3) and hi == pytest.approx(0.9448, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)

