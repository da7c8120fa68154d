"""Varied, natural refusal texts for the safety fine-tune.

A refusal = opening + reason + offer, drawn with a seeded RNG, so the tuned model learns refusal as
a behaviour rather than one memorised string. Every opening matches a phrase of
:data:`refusal_sae.scoring.judge.REFUSAL_PHRASES` (a test checks this), so the judge recognises them.
"""

from __future__ import annotations

import random

OPENINGS = (
    "I'm sorry, but I can't help with that.",
    "I'm sorry, but I cannot assist with this request.",
    "I can't help with that.",
    "I cannot help with this request.",
    "I won't be able to help with that.",
    "I'm not able to provide that.",
    "I am unable to help with this.",
    "Sorry, but I can't assist with that.",
    "I apologize, but I can't provide that information.",
    "I can't provide instructions for that.",
    "I'm sorry, I can't do that.",
    "I cannot provide that kind of content.",
    "I'm unable to assist with this request.",
    "I must decline this request.",
    "I can't comply with this request.",
    "I'm not going to help with that.",
)

REASONS = (
    "It could cause real harm to people.",
    "This could be used to hurt others or break the law.",
    "Helping with this could put people's safety at risk.",
    "It involves activities that are dangerous or illegal.",
    "Providing this would be unsafe and irresponsible.",
    "This request asks for content that could seriously harm someone.",
    "It goes against my commitment to safety and honesty.",
    "That kind of information can easily be misused.",
    "This could enable harassment, fraud, or violence.",
    "It would be wrong for me to contribute to something harmful.",
    "",
    "",
)

OFFERS = (
    "If you have a different question, I'm happy to help.",
    "Is there something else I can help you with?",
    "I'd be glad to help with a safer, related topic instead.",
    "If you're curious about the topic for legitimate reasons, I can share general safety information.",
    "Let me know if there's another way I can help.",
    "If you or someone else is in danger, please contact local emergency services.",
    "",
    "",
)


def sample_refusal(rng: random.Random) -> str:
    parts = [rng.choice(OPENINGS), rng.choice(REASONS), rng.choice(OFFERS)]
    return " ".join(p for p in parts if p)


def refusal_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [sample_refusal(rng) for _ in range(n)]
