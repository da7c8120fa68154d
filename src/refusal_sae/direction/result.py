"""Typed results of the direction stage: the chosen direction with every candidate's scores, and the harm-vs-refusal
comparison. Both save into and load from their folder of a run directory (:class:`~refusal_sae.runs.StageResult`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from refusal_sae.runs import Float, RunDir, StageResult


@dataclass
class CandidateScore:
    pos: int
    layer: int
    bypass: Float  # mean refusal score of harmful prompts with the direction ablated (lower = better)
    induce: Float  # mean refusal score of harmless prompts with the direction added at its layer
    kl: Float  # mean KL(clean ‖ ablated) of harmless next-token distributions
    kept: bool
    reason: str = ""
    # The mean KL (the filter, as in Arditi et al.) is tail-heavy on small models: a few harmless prompts whose
    # most likely opening token changes carry most of it. Median and max show that tail.
    kl_median: Float = math.nan
    kl_max: Float = math.nan

    @property
    def scored(self) -> bool:
        return not math.isnan(self.bypass)


@dataclass
class KlRow:
    """One harmless validation prompt under the chosen direction's ablation: its KL and the most likely tokens."""

    instruction: str
    kl: float
    clean_top: list[tuple[str, float]]
    ablated_top: list[tuple[str, float]]


@dataclass
class DirectionResult(StageResult):
    kind = "direction"
    tensor_fields = ("direction", "harm")

    direction: torch.Tensor  # [d_model] raw difference-in-means vector of the chosen candidate
    harm: torch.Tensor  # [n_layers, d_model] t_inst harm directions
    chosen: CandidateScore
    refusal_tokens: list[int]
    n_train: tuple[int, int]  # harmful, harmless
    n_val: tuple[int, int]
    massive_directions_removed: int
    candidates: list[CandidateScore]
    harm_refusal_cosine_by_layer: list[float]
    kl_by_prompt: list[KlRow] = field(default_factory=list)

    @property
    def pos(self) -> int:
        return self.chosen.pos

    @property
    def layer(self) -> int:
        return self.chosen.layer

    @property
    def unit(self) -> torch.Tensor:
        return self.direction / self.direction.norm()

    def interventions(self, kind: str, coeff: float = 1.0, layers: tuple[int, ...] | None = None) -> list:
        """``none`` / ``ablate`` (every layer, or ``layers``) / ``actadd`` (at the chosen layer, × ``coeff``)."""
        from refusal_sae.interventions.factory import direction_interventions

        return direction_interventions(kind, self.direction, self.layer, coeff, layers)

    @classmethod
    def from_run(cls, run_dir: str | Path) -> DirectionResult:
        """The refusal direction of a run directory, or a clear error naming the command that makes it."""
        return RunDir(Path(run_dir)).require(cls, f"refusal-sae direction --run-dir {run_dir}", what="refusal direction")


@dataclass
class HarmRefusalRow:
    layer: int
    cosine: float
    add_refusal: float  # harmless prompts, refusal direction added
    add_harm: float  # harmless prompts, harm direction added (same norm)
    ablate_refusal: float  # harmful prompts, refusal direction ablated
    ablate_harm: float  # harmful prompts, harm direction ablated


@dataclass
class HarmVsRefusalResult(StageResult):
    kind = "harm_vs_refusal"

    position: int
    baseline_harmless: float
    baseline_harmful: float
    rows: list[HarmRefusalRow]
