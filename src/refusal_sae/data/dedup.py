"""Decontamination helpers: exact (whitespace- and case-normalised) and near-duplicate (word-set Jaccard) matches
between prompt sets, so that nothing fitted or selected on training prompts has seen a test prompt."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence


def normalize_text(text: str) -> str:
    """Lower case, whitespace collapsed: two prompts with equal normal forms are the same prompt."""
    return " ".join(text.lower().split())


def word_set(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9']+", text.lower()))


def near_duplicate_filter(test_texts: Sequence[str], threshold: float) -> Callable[[str], bool]:
    """A predicate: is ``text`` a near-duplicate (word-set Jaccard ≥ threshold) of any of ``test_texts``?"""
    tests = [word_set(t) for t in test_texts]

    def is_near(text: str) -> bool:
        w = word_set(text)
        return any(len(w & t) >= threshold * len(w | t) for t in tests if w or t)

    return is_near
