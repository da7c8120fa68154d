"""The HTML report of a run directory (``refusal-sae report RUN_DIR``; ``run`` writes it at the end).

Exports load lazily; rendering needs plotly and jinja2, and torch to load the typed results (their tensors), never the
model or the SAEs.
"""

from refusal_sae._lazy import lazy_exports

_EXPORTS = {
    "render_report": "render", "register_section": "render", "SectionSpec": "render", "ReportContext": "render",
    "SECTIONS": "render", "ResultView": "results", "collect_results": "results", "Finding": "summary",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
