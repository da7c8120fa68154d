"""Typed views of what the report reads that its stages keep as plain JSON: the manifest, a result's recorded settings
(its config / identity: a subset of the stage's config plus extras such as the judge's implementation), and the
dict-typed fields of typed results (answer rows, per-split balances, ...). Each is a dataclass validated by pydantic
from the stored dict (keys the report does not read are ignored; a field it reads but the file lacks is ``None`` or
the default given here), so the renderers read attributes, never string keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

T = TypeVar("T")


@cache
def _adapter(tp):
    from pydantic import TypeAdapter

    return TypeAdapter(tp)


def typed(tp: type[T], value: Any) -> T:
    """``value`` (a dict, a list of dicts, ...) validated as ``tp`` (e.g. ``list[Answer]``)."""
    return _adapter(tp).validate_python(value)


# --- a result's recorded settings ---------------------------------------------------------------------------------------
@dataclass
class Selection:
    max_kl: float | None = None
    min_induce: float | None = None
    prune_layer_fraction: float | None = None


@dataclass
class Settings:
    """The settings of a result's ``meta.config`` that the report shows (``None``: not recorded for that result)."""

    judge: str | None = None
    judge_impl: str | None = None  # the judge's class: ``default`` has meant different judges across versions
    n: int | None = None
    seed: int | None = None
    intervention: str = "none"
    coeff: float = 1.0
    ablate_layers: list[int] | None = None
    max_new_tokens: int | None = None
    k_per_layer: int | None = None
    ig_steps: int | None = None
    n_random: int | None = None
    n_val: int | None = None
    max_random_flip: float | None = None
    selection: Selection = field(default_factory=Selection)


@dataclass
class ResultMeta:
    config: dict | None = None
    config_hash: str | None = None
    finished: str | None = None
    wall_s: float | None = None


# --- the manifest -------------------------------------------------------------------------------------------------------
@dataclass
class ModelInfo:
    name: str = "?"
    revision: str | None = None
    adapter: str | None = None
    n_layers: int | None = None
    d_model: int | None = None
    dtype: str | None = None


@dataclass
class GitInfo:
    commit: str = ""
    dirty: bool = False


@dataclass
class PipelineInfo:
    config: str | None = None
    config_hash: str | None = None
    command: str = ""


@dataclass
class SaeInfo:
    source: str = ""  # a folder, or ``<release>/<sae id>`` for a sae-lens release
    d_sae: int | None = None
    sha256: str | None = None


@dataclass
class StageEntry:
    kind: str | None = None
    config_hash: str | None = None
    seed: int | None = None
    finished: str | None = None
    wall_s: float | None = None


@dataclass
class RunManifest:
    created: str = "?"
    updated: str = ""
    package_version: str = ""
    git: GitInfo | None = None
    model: ModelInfo = field(default_factory=ModelInfo)
    pipeline: PipelineInfo | None = None
    saes: dict[str, SaeInfo] = field(default_factory=dict)
    stages: dict[str, StageEntry] = field(default_factory=dict)


# --- dict-typed fields of results ---------------------------------------------------------------------------------------
@dataclass
class Answer:
    """A judged answer of a result's row file (evaluations, the search's table, the jailbreak table)."""

    completion: str = ""
    judgement: str = ""
    instruction: str = ""
    prompt: str = ""
    row: str = ""  # the search table's row
    family: str = ""  # the jailbreak family


@dataclass
class TauRow:
    tau: float
    size: int
    score: float
    flipped: float


@dataclass
class Balance:
    """One split of the interaction rows: rows and refused, per prompt class and condition."""

    rows: int = 0
    refused: int = 0
    harmful_clean_refused: int = 0
    harmful_clamped_refused: int = 0
    harmless_clean_refused: int = 0
    harmless_clamped_refused: int = 0
    n_harmful: int = 0
    n_harmless: int = 0

    @property
    def majority(self) -> float | None:
        """Accuracy of always predicting the more frequent label: the accuracy's chance control."""
        return max(self.refused, self.rows - self.refused) / self.rows if self.rows else None


@dataclass
class FeatureCount:
    feature: tuple[int, int]
    prompts: int
    kinds: dict[str, int] = field(default_factory=dict)


@dataclass
class DenseLayer:
    layer: int
    val_accuracy: float
    val_auc: float


@dataclass
class ClassCounts:
    n: int = 0
    positive: int | None = None
    negative: int | None = None


@dataclass
class Difference:
    diff: float | None = None
    ci: tuple[float | None, float | None] | None = None
    n_jailbroken: int = 0
    n_failed: int = 0


@dataclass
class InstructionDrop:
    instruction: str
    ablation_drop: float | None = None
    random_drop: float | None = None


@dataclass
class HardenSizes:
    jailbreak: int = 0
    attack: int = 0
    xstest: int = 0
    harmless: int = 0
