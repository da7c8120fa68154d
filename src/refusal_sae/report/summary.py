"""The findings summary at the top of the report: one table of each stage's headline numbers, each beside its 95%
interval and its control where the result has them. A section contributes rows through the ``summary`` function of
its :class:`~refusal_sae.report.render.SectionSpec` (``(views, ctx) -> list[Finding]``); stages that did not run are
named in one line below the table."""

from __future__ import annotations

from dataclasses import dataclass

from refusal_sae.report.markup import esc


@dataclass
class Finding:
    what: str  # HTML: what was measured, on what
    value: str  # HTML: the number(s), with the 95% interval where there is one
    control: str = "–"  # HTML: the control or comparison beside it


def render_findings(rows: list[tuple[str, str, list[Finding]]], not_run: list[tuple[str, str]]) -> str:
    """``rows``: (section id, section title, its findings) in report order; ``not_run``: (id, title) of the sections
    without results."""
    body = []
    for sid, title, findings in rows:
        for i, f in enumerate(findings):
            stage = (f"<td class='stage' rowspan='{len(findings)}'><a href='#{esc(sid)}'>{esc(title)}</a></td>"
                     if i == 0 else "")
            body.append(f"<tr>{stage}<td>{f.what}</td><td class='value'>{f.value}</td><td>{f.control}</td></tr>")
    out = ["<p class='note'>The headline number of each stage that ran, with its 95% interval (Wilson for rates, "
           "bootstrap where the stage resamples) and the control it is read against; the sections below hold the "
           "details, run metadata and the stage results' config hashes are in the appendix.</p>"]
    if body:
        out.append("<table class='findings'><tr><th>stage</th><th>finding</th><th>result [95% CI]</th>"
                   f"<th>control / comparison</th></tr>{''.join(body)}</table>")
    else:
        out.append("<p>No stage result with a headline number in this run directory.</p>")
    if not_run:
        out.append("<p class='note'>Not in this run directory: "
                   + ", ".join(f"<a href='#{esc(sid)}'>{esc(title)}</a>" for sid, title in not_run) + ".</p>")
    return "".join(out)
