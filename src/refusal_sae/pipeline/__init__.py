"""The whole pipeline from one config file: ``refusal-sae run CONFIG``, ``refusal-sae demo``.

- :mod:`.config`: the config schema (YAML / TOML), strict loading, ``--set`` overrides;
- :mod:`.stages`: the stage registry (one entry per stage: config type, runner, checks, plan);
- :mod:`.runner`: checks before any work, the dry-run plan, running the stages, the report at the end.

Exports load lazily (the config and registry are torch-free).
"""

from refusal_sae._lazy import lazy_exports

_EXPORTS = {
    "PipelineConfig": "config", "SaeSource": "config", "load_config": "config", "apply_overrides": "config",
    "STAGES": "stages", "Stage": "stages", "register_stage": "stages", "PlanRow": "stages", "EvalStep": "stages",
    "Plan": "runner", "check": "runner", "run_pipeline": "runner", "RunContext": "runner",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
