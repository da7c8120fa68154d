"""Confidence intervals for rates and paired tests between runs."""

from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial rate (well-behaved at 0 and 1, unlike the normal approx.)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts of a paired comparison: a binomial test of
    ``only_a`` out of ``only_a + only_b`` at 1/2 (scipy's; statsmodels' ``mcnemar(exact=True)`` computes the
    same, but statsmodels arrives only indirectly). 1.0 when no pair is discordant."""
    from scipy.stats import binomtest

    if only_a < 0 or only_b < 0:
        raise ValueError("discordant counts must be non-negative")
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
