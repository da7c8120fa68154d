"""Small helpers shared by the analysis sections of the report (jailbreaks, upstream, probes, hardening): rates and
intervals as text, numbers that may be missing (NaN is stored as null). No section is registered here."""

from __future__ import annotations

import math

from refusal_sae.report.sections import wilson


def missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def num(x, fmt: str = ".2f") -> str:
    return "–" if missing(x) else format(x, fmt)


def ci(pair, fmt: str = ".2f") -> str:
    """``[lo, hi]``, or ``–`` when the interval is missing."""
    if pair is None or any(missing(x) for x in pair):
        return "–"
    return f"[{format(pair[0], fmt)}, {format(pair[1], fmt)}]"


def rate(k: int, n: int, interval=None) -> str:
    """``k/n = rate [lo, hi]`` with the 95% Wilson interval (computed when not given)."""
    if not n:
        return "–"
    return f"{k}/{n} = {k / n:.2f} {ci(interval or wilson(k, n))}"


def features(items) -> str:
    return ", ".join(f"L{L}:{f}" for L, f in items)


def bars(values: list, intervals: list) -> dict:
    """Plotly's asymmetric error bars for values with intervals (missing ones drawn without a bar)."""
    def part(f):
        return [0 if missing(v) or iv is None or any(missing(x) for x in iv) else f(v, iv)
                for v, iv in zip(values, intervals, strict=True)]

    return dict(type="data", symmetric=False, thickness=1.2, array=part(lambda v, iv: max(iv[1] - v, 0)),
                arrayminus=part(lambda v, iv: max(v - iv[0], 0)))


def clean(values: list) -> list:
    """NaN / None as None (a gap in a plotly trace)."""
    return [None if missing(v) else v for v in values]
