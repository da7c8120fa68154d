"""The stage registry: what ``refusal-sae run`` can run, in order.

Each stage is declared by the package that implements it (a :class:`~refusal_sae.pipeline.protocol.Stage`: config,
checks, plan, runner, summary, report sections; see ``direction/stage.py``); this module only lists them. Adding a
stage is one package with its ``stage.py``, one line in :data:`BUILTIN` (or one :func:`register_stage` call from
outside), and its section in the demo YAML; see docs/run.md, "Adding a stage". Import is torch-free.
"""

from __future__ import annotations

from refusal_sae.analysis.stage import HARDEN, JAILBREAKS, PROBES, UPSTREAM
from refusal_sae.direction.stage import CALIBRATE_ACTADD, DIRECTION, HARM_VS_REFUSAL
from refusal_sae.pipeline.protocol import CheckContext, NotRun, PlanRow, Stage
from refusal_sae.saes.stage import SAE_METRICS, check_sae_facts
from refusal_sae.scoring.stage import EVAL
from refusal_sae.search.stage import DORMANT, INTERACTIONS, SEARCH, SEARCH_TABLE

# in run order: each after the stages it needs
BUILTIN: tuple[Stage, ...] = (
    DIRECTION, HARM_VS_REFUSAL, SAE_METRICS, CALIBRATE_ACTADD, EVAL,  # stage 1 (+ SAE quality, evaluations)
    SEARCH, SEARCH_TABLE,  # stage 2
    INTERACTIONS, DORMANT,  # stages 3-4
    JAILBREAKS, UPSTREAM, PROBES, HARDEN,  # stage 5
)
STAGES: dict[str, Stage] = {s.name: s for s in BUILTIN}


def register_stage(stage: Stage) -> Stage:
    """Add a stage; ``stages:`` lists it by name and its settings live in the section of that name."""
    if stage.name in STAGES:
        raise ValueError(f"stage {stage.name!r} is already registered")
    STAGES[stage.name] = stage
    return stage


def unregister_stage(name: str) -> None:
    """Remove a stage added by :func:`register_stage` (built-in stages stay)."""
    if name in {s.name for s in BUILTIN}:
        raise ValueError(f"stage {name!r} is built in")
    STAGES.pop(name, None)


def default_stages() -> list[str]:
    """Every registered stage, in registration order (each after the stages it needs)."""
    return list(STAGES)


__all__ = ["BUILTIN", "STAGES", "CheckContext", "NotRun", "PlanRow", "Stage", "check_sae_facts", "default_stages",
           "register_stage", "unregister_stage"]
