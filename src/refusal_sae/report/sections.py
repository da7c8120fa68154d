"""The report's sections in report order, each registered here without a renderer; the module that draws a section
(``direction``, ``search``, ``evals``, ...) gives it its renderer and summary with
:func:`~refusal_sae.report.render.register_section` under the same id, keeping its place. A section whose module
does not exist yet shows "stage not available yet". The run's metadata and stage results close the report as its
appendix (``run``)."""

from __future__ import annotations

from refusal_sae.report.render import SectionSpec, plan_sections

ORDER = (
    SectionSpec("direction", "Refusal direction", ("direction", "harm_vs_refusal"), "direction"),  # direction.py
    SectionSpec("sae-quality", "SAE quality per layer", ("sae_metrics",), "sae_metrics"),  # saes.py
    SectionSpec("search", "Feature search: comparison with CIs, flip curves", ("search_table",), "search"),  # search.py
    SectionSpec("interactions", "Feature interactions (FM): heatmap and K-sweep", ("interactions",), "interactions"),
    SectionSpec("dormant", "Dormant features by round", ("dormant",), "dormant"),
    SectionSpec("jailbreaks", "Jailbreak families vs a neutral wrapper", ("analysis_jailbreaks",), "jailbreaks"),
    SectionSpec("upstream", "Upstream → downstream features", ("analysis_upstream",), "upstream"),
    SectionSpec("probes", "Probe accuracies", ("analysis_probes",), "probes"),
    SectionSpec("hardening", "Hardening curve", ("analysis_harden",), "harden"),
    SectionSpec("calibration", "Activation-addition calibration", ("actadd_calibration",), "calibrate_actadd"),
    SectionSpec("evals", "Evaluations and example generations", ("eval",), "eval"),  # evals.py
    SectionSpec("cards", "Feature cards", ("*",), "search"),  # cards.py: any result holding FeatureSummary lists
    SectionSpec("run", "Appendix: run metadata and stage results", (), "run"),  # appendix.py
)
plan_sections(ORDER)
