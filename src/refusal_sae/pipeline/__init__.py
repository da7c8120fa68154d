"""The whole pipeline from one config file: ``refusal-sae run CONFIG``, ``refusal-sae demo``.

- :mod:`.config`: the config schema (YAML / TOML), strict loading, ``--set`` overrides;
- :mod:`.protocol`: what a stage is (:class:`Stage`: config type, checks, plan, runner, summary, report sections);
- :mod:`.stages`: the registry, listing the stages each package declares in its `stage.py`;
- :mod:`.runner`: checks before any work, the dry-run plan, running the stages, the report at the end.

Exports load lazily (the config and registry are torch-free).
"""

from refusal_sae._lazy import lazy_exports

_EXPORTS = {
    "PipelineConfig": "config", "SaeSource": "config", "load_config": "config", "apply_overrides": "config",
    "STAGES": "stages", "Stage": "protocol", "register_stage": "stages", "PlanRow": "protocol", "CheckContext": "protocol",
    "Plan": "runner", "check": "runner", "run_pipeline": "runner", "RunContext": "runner",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
