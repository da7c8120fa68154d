"""Small HTML and number helpers every section of the report uses: escaping, tables, numbers that may be missing (NaN
is stored as null), rates with their 95% Wilson intervals, Plotly error bars. No section is registered here."""

from __future__ import annotations

import html
import math

LABELS = ("refused", "complied", "degenerate")  # the judge's labels (refusal_sae.scoring.judge), in table order
REFUSED, COMPLIED, DEGENERATE = LABELS
COLORS = {"refused": "#1a7f37", "complied": "#cf222e", "degenerate": "#9a6700"}
STAR = dict(symbol="star", size=16, color="#ffd33d", line=dict(width=1.5, color="black"))  # "chosen" markers


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def num(x, fmt: str = ".3f") -> str:
    """``x`` formatted, or ``–`` when it is missing."""
    return "–" if missing(x) else format(x, fmt)


def ci(pair, fmt: str = ".2f") -> str:
    """``[lo, hi]``, or ``–`` when the interval is missing."""
    if pair is None or any(missing(x) for x in pair):
        return "–"
    return f"[{format(pair[0], fmt)}, {format(pair[1], fmt)}]"


def wilson(k: int, n: int) -> tuple[float, float]:
    from refusal_sae.scoring.stats import wilson_interval

    return wilson_interval(k, n)


def share(k: int, n: int) -> float:
    return k / max(n, 1)


def rate(k: int, n: int, interval=None) -> str:
    """``k/n = rate [lo, hi]`` with the 95% Wilson interval (computed when not given)."""
    if not n:
        return "–"
    return f"{k}/{n} = {k / n:.2f} {ci(interval or wilson(k, n))}"


def rate_ci(k: int, n: int) -> str:
    """``rate [lo, hi]`` to three places, the 95% Wilson interval."""
    lo, hi = wilson(k, n)
    return f"{share(k, n):.3f} [{lo:.3f}, {hi:.3f}]"


def value_ci(value, interval, fmt: str = ".3f") -> str:
    """``value [lo, hi]`` (a point estimate and its interval, e.g. a bootstrap one)."""
    return f"{num(value, fmt)} {ci(interval, fmt)}"


def feature_list(items, limit: int | None = None) -> str:
    """``L12:345, L14:7`` (the first ``limit``, then ``…``)."""
    items = list(items)
    shown = items if limit is None else items[:limit]
    return ", ".join(f"L{L}:{f}" for L, f in shown) + (" …" if len(shown) < len(items) else "")


def table(head: list[str], rows: list[list], num_from: int = 1, num_to: int | None = None) -> str:
    """An HTML table; columns ``num_from`` to ``num_to`` (exclusive; default: the last) are numbers, right-aligned."""
    out = ["<table><tr>", *(f"<th>{esc(h)}</th>" for h in head), "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(
            f"<td class='num'>{c}</td>" if num_from <= i < (num_to or len(r)) else f"<td>{c}</td>"
            for i, c in enumerate(r)) + "</tr>")
    out.append("</table>")
    return "".join(out)


def badge(label: str) -> str:
    return f"<span class='badge {esc(label)}'>{esc(label)}</span>"


def answer_cell(label: str, completion: str) -> str:
    """A judged answer: the judge's label as a badge above the escaped text."""
    return f"<td>{badge(label)}<div class='gen'>{esc(completion)}</div></td>"


def bars(values: list, intervals: list, thickness: float = 1.2) -> dict:
    """Plotly's asymmetric error bars for values with intervals (missing ones drawn without a bar)."""
    def part(f):
        return [0 if missing(v) or iv is None or any(missing(x) for x in iv) else f(v, iv)
                for v, iv in zip(values, intervals, strict=True)]

    return dict(type="data", symmetric=False, thickness=thickness, array=part(lambda v, iv: max(iv[1] - v, 0)),
                arrayminus=part(lambda v, iv: max(v - iv[0], 0)))


def clean(values: list) -> list:
    """NaN / None as None (a gap in a plotly trace)."""
    return [None if missing(v) else v for v in values]
