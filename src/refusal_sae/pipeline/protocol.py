"""What a stage is: the :class:`Stage` object each package declares for its own stage (``direction/stage.py``,
``search/stage.py``, ...), and what its checks, plan and runner are handed.

A stage owns, in one declaration: its torch-free config type (the YAML section and the CLI options of the same
names), ``check`` (against the model's facts, before any work), ``plan`` (the ``--dry-run`` row), ``run`` (the
work, importing the heavy modules only when it runs), ``summary`` (the run's one-line log), and the report sections
that draw its results, and the result classes it saves (the report loads them by kind).
:mod:`refusal_sae.pipeline.stages` lists the stages; :mod:`refusal_sae.pipeline.runner` runs
them. Import is torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DISCOVERY = 32 * 12  # refusal-token discovery: 32 greedy generations of 12 tokens (counted in plans)


@dataclass
class CheckContext:
    """What the checks and the plan see: the whole config, the model's facts (fields ``None`` when unknown
    offline), the data folder and the size of every dataset the config names."""

    config: Any  # PipelineConfig
    facts: Any  # ModelFacts
    data_dir: Path | None
    dataset_sizes: dict[str, int] = field(default_factory=dict)
    sae_facts: Any = None  # SaeFacts, when a listed stage uses SAEs

    def size(self, dataset: str, n: int | None) -> int:
        total = self.dataset_sizes.get(dataset, 0)
        return total if n is None else min(n, total)

    def sae_layers(self) -> tuple[int, ...] | None:
        """The SAEs' layers when every one is known (folders' cfg.json, release ids), else ``None``."""
        sf = self.sae_facts
        if sf is None or not sf.entries or any(e["layer"] is None for e in sf.entries):
            return None
        return tuple(sorted({e["layer"] for e in sf.entries}))

    def listed(self, name: str):
        """The section of stage ``name`` when the config runs it, else ``None``."""
        return self.config.stage_configs.get(name) if name in self.config.stages else None


@dataclass
class PlanRow:
    stage: str
    what: str
    prompts: int | None  # prompts read (None: unknown offline)
    forwards: int | None  # prompt-level forward passes, interventions included
    generated: int = 0  # greedy tokens generated (upper bound: generation stops at end of turn)


@dataclass
class NotRun:
    """What a runner returns when there was nothing to work on (e.g. an empty minimal set): no result is written,
    the run goes on, and the stage's line says why."""

    reason: str


def _no_check(ctx: CheckContext, cfg: Any) -> None:
    return None


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline, declared by the package that implements it."""

    name: str  # the name in ``stages:`` and of the YAML section holding its settings
    config_type: Any  # a torch-free dataclass, or list[dataclass] for a stage run once per item
    run: Callable[[Any, Any], Any]  # (RunContext, cfg) -> StageResult (or a tuple / list of them, or NotRun)
    plan: Callable[[CheckContext, Any], list[PlanRow]]
    check: Callable[[CheckContext, Any], None] = _no_check
    requires: Callable[[Any], Sequence[str]] = lambda cfg: ()  # stages that must come before it in `stages`
    datasets: Callable[[Any], Sequence[str]] = lambda cfg: ()  # datasets it reads (checked to exist)
    uses_saes: bool = False
    default: Callable[[], Any] = dict  # the raw section used when the config has none
    summary: Callable[[Any], str] = lambda result: ""
    report: tuple[str, ...] = ()  # ids of the report sections (refusal_sae.report) that draw its results
    results: dict[str, str] = field(default_factory=dict)  # result kind → "module:Class" of the results it saves
    doc: str = ""

    def default_section(self):
        return self.default()
