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
    name: str  # the stage folder, relative to the run directory
    why: str
    kind: str | None = None  # its result kind when known (the section that would draw it shows the note)


@dataclass
class _Envelope:
    """What ``result.json`` says besides the result: its kind (which class loads the folder) and the run's meta."""

    kind: str | None = None
    meta: ResultMeta | None = None

    def __post_init__(self) -> None:
        self.meta = self.meta or ResultMeta()  # "meta": null


def collect_results(run_dir: Path, log=None) -> tuple[list[ResultView], list[Unreadable]]:
    """Every stage result under ``run_dir`` that the report draws, sorted by folder name, and those it could not
    load, with why: damaged (a file missing, cut short or changed since it was written: checked against the hashes
    recorded when it was saved), of an older schema, or not parsable. ``log``: where a rebuilt manifest is noted."""
    from refusal_sae.errors import RefusalSaeError
    from refusal_sae.runs import RunDir

    views, bad, kinds = [], [], result_types()
    for name, entry, damage in RunDir(Path(run_dir), log=log or (lambda m: None)).results():
        path = Path(run_dir) / name / "result.json"
        raw = read_json(path) or {}
        kind = raw.get("kind") or (entry or {}).get("kind")
        if kind is not None and kind not in kinds:
            continue  # an intermediate result (one round, one K): its stage's final result holds it
        if damage is not None:
            bad.append(Unreadable(name, f"damaged: {damage}", kind))
            continue
        try:
            info = typed(_Envelope, raw)
            result = result_type(info.kind).load(path.parent)
        except (RefusalSaeError, ValueError, OSError) as e:  # an older schema, a file that does not parse
            bad.append(Unreadable(name, " ".join(str(e).splitlines()[:2]), kind))
            continue
        views.append(ResultView(name, info.kind, result, info.meta, path.parent))
    return views, bad
