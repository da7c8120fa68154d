"""The typed results of a run directory, as the report reads them: every stage folder's ``result.json`` is loaded with
its own result class (:class:`~refusal_sae.runs.StageResult` ``.load``: the dataclass, its row files and tensors), so
the sections read attributes. :func:`result_types` names the class of each kind the report draws (from the stages'
declarations); a class is imported only when its kind is present. A result that cannot be loaded (an older schema, a
damaged file) is left out and listed in the appendix; the rest of the report is drawn as usual. Loading needs torch
(the classes hold tensors), never the model or the SAEs."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from refusal_sae.report.records import ResultMeta, Settings, typed
from refusal_sae.runs.io import read_json

SKIP_DIRS = ("responses", "saes")  # caches and trained weights, not results

def result_types() -> dict[str, tuple[str, str]]:
    """kind → (module, class) of every stage result the report draws: what each registered stage declares it saves
    (``Stage.results``), so a new stage's results are read without editing the report. Intermediate results (one
    round, one K of a sweep) are not listed: their stage's final result holds them."""
    from refusal_sae.pipeline.stages import STAGES

    return {kind: tuple(path.split(":")) for stage in STAGES.values() for kind, path in stage.results.items()}


def result_type(kind: str) -> type:
    module, name = result_types()[kind]
    return getattr(importlib.import_module(module), name)


@dataclass
class ResultView:
    """One saved stage result: its folder (relative to the run directory), the typed result and its ``meta``."""

    name: str  # e.g. "eval/smollm2__jailbreakbench__ablate"
    kind: str
    result: object  # the stage's StageResult dataclass
    meta: ResultMeta
    folder: Path

    @cached_property
    def settings(self) -> Settings:
        """The recorded settings the report shows (``None`` where the result's config does not record one)."""
        return typed(Settings, self.meta.config or {})


@dataclass
class Unreadable:
    name: str
    why: str


@dataclass
class _Envelope:
    """What ``result.json`` says besides the result: its kind (which class loads the folder) and the run's meta."""

    kind: str | None = None
    meta: ResultMeta | None = None

    def __post_init__(self) -> None:
        self.meta = self.meta or ResultMeta()  # "meta": null


def collect_results(run_dir: Path) -> tuple[list[ResultView], list[Unreadable]]:
    """Every stage result under ``run_dir`` that the report draws, sorted by folder name, and those it could not
    load (with why)."""
    from refusal_sae.errors import RefusalSaeError

    views, bad, kinds = [], [], result_types()
    for path in sorted(Path(run_dir).rglob("result.json")):
        rel = path.parent.relative_to(run_dir)
        if rel.parts and rel.parts[0] in SKIP_DIRS:
            continue
        try:
            info = typed(_Envelope, read_json(path) or {})
            if info.kind not in kinds:
                continue
            result = result_type(info.kind).load(path.parent)
        except (RefusalSaeError, ValueError, OSError) as e:  # an older schema, a damaged or partly written folder
            bad.append(Unreadable(rel.as_posix(), " ".join(str(e).splitlines()[:2])))
            continue
        views.append(ResultView(rel.as_posix(), info.kind, result, info.meta, path.parent))
    return views, bad
