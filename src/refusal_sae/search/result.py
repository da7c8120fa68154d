"""Typed results of the feature search, one per sub-stage folder of the run directory (``search/...``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from refusal_sae.runs import StageResult
from refusal_sae.saes.features import FeatureSummary
from refusal_sae.scoring.compare import PairedComparison, compare_labels
from refusal_sae.search.choose import GridRow
from refusal_sae.search.featureset import FeatureSet
from refusal_sae.search.greedy import GreedyTrace


@dataclass
class CandidatesResult(StageResult):
    """``search/candidates``: the prefilter, the attribution ranking and the baselines' rankings."""

    kind = "search_candidates"
    tensor_fields = ("cosines", "cosines_per_layer", "attribution", "act_diff")

    layers: list[int]
    direction_source: str
    n_attribution: int
    n_harmless: int
    refusal_tokens: list[int]
    cosines: torch.Tensor  # [n_layers, d_sae]: decoder rows vs the run's selected direction
    cosines_per_layer: torch.Tensor  # [n_layers, d_sae]: vs each layer's own difference-in-means vector
    attribution: torch.Tensor  # [n_layers, d_sae]: mean LA-IG attribution over the attribution prompts
    act_diff: torch.Tensor  # [n_layers, d_sae]: harmful − harmless mean of per-prompt maxima
    prefilter: FeatureSet  # the decoder-cosine candidates (direction_source)
    ours: FeatureSet  # the prefilter ranked by mean attribution (the global set is its top K*)
    cossim: FeatureSet  # baseline: global top by decoder cosine
    actdiff: FeatureSet  # baseline: global top by activation difference
    ap: FeatureSet  # baseline: global top by attribution over all features
    alive: dict[int, list[int]]  # layer → features firing on the attribution prompts (random controls draw here)
    prefilter_attribution_share: dict[str, float]  # share of the positive attribution each prefilter captures


@dataclass
class ChoiceResult(StageResult):
    """``search/choice``: ``K*`` and ``c`` chosen on validation prompts."""

    kind = "search_choice"

    n_val: int  # validation prompts
    n_refused: int  # … of which the unclamped model refuses (the ones judged under each clamp)
    rows: list[GridRow]
    k: int
    c: float
    met: bool  # a (K, c) met the rule; False: the best margin is reported instead
    rule: str
    degenerate_bound: float = 0.10  # the degenerate share a row had to stay within
    ablation: dict[str, int] = field(default_factory=dict)  # the direction ablation on the same prompts: counts
    prompts: list[str] = field(default_factory=list)  # the refused validation prompts, in the order of the labels
    ablation_labels: list[str] = field(default_factory=list)  # the direction ablation's judged label per prompt

    def paired(self, a: GridRow | str, b: GridRow | str) -> PairedComparison | None:
        """McNemar exact test of "complied" between two conditions on the same prompts: grid rows, or "ablation".

        None when the result predates per-prompt labels."""
        la, lb = (self.ablation_labels if x == "ablation" else x.labels for x in (a, b))
        if not la or not lb:
            return None
        return compare_labels(self.prompts, la, lb)

    def chosen(self) -> GridRow:
        return next(r for r in self.rows if (r.k, r.c) == (self.k, self.c))


@dataclass
class GreedyResult(StageResult):
    """``search/greedy``: the minimal set, the traces behind it, the tau sweep and the judged confirmation."""

    kind = "search_greedy"

    start: FeatureSet
    c: float
    tau: float
    traces: list[GreedyTrace]  # one per seed at tau, then seed 0 at each other tau of the sweep
    minimal: FeatureSet
    tau_sweep: list[dict]  # {tau, size, score, flipped}
    confirm: dict[str, dict[str, int]]  # validation: "full" / "minimal" → complied / degenerate / refused counts
    kept_flip_ratio: float  # minimal complied / full complied on the validation prompts


@dataclass
class FeatureCards(StageResult):
    """``search/cards``: top-activating contexts of the minimal set's features, with their decoder cosine."""

    kind = "search_cards"

    cards: list[FeatureSummary]
    cosine: dict[str, float] = field(default_factory=dict)  # "layer:feature" → decoder cosine with the direction
    found_by: str = "greedy minimal set"
