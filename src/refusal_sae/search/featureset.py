"""``FeatureSet``: an ordered set of SAE features ``(layer, id)`` spanning several layers, and how to clamp it.

A set is clamped with one :class:`~refusal_sae.interventions.FeatureClamp` per layer (the SAE error term kept), at
every position, generated tokens included: ``c = 0`` zero-ablates the features, any other ``c`` multiplies their
activations by ``c``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from refusal_sae.interventions.feature_clamp import FeatureClamp


@dataclass(frozen=True)
class FeatureSet:
    items: tuple[tuple[int, int], ...]  # (layer, feature id), most important first where ranked

    @classmethod
    def of(cls, items: Iterable[Sequence[int]]) -> FeatureSet:
        return cls(tuple(dict.fromkeys((int(L), int(f)) for L, f in items)))

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def by_layer(self) -> dict[int, tuple[int, ...]]:
        out: dict[int, list[int]] = {}
        for L, f in self.items:
            out.setdefault(L, []).append(f)
        return {L: tuple(fs) for L, fs in sorted(out.items())}

    def take(self, k: int) -> FeatureSet:
        return FeatureSet(self.items[:k])

    def without(self, drop: Iterable[tuple[int, int]]) -> FeatureSet:
        gone = set(drop)
        return FeatureSet(tuple(x for x in self.items if x not in gone))

    def intersection(self, other: FeatureSet) -> FeatureSet:
        keep = set(other.items)
        return FeatureSet(tuple(x for x in self.items if x in keep))

    def layer_counts(self) -> dict[int, int]:
        return {L: len(fs) for L, fs in self.by_layer().items()}


def clamp_set(saes: Mapping[int, object], features: FeatureSet, c: float) -> list[FeatureClamp]:
    """The interventions that clamp ``features`` (``saes``: layer → SAE) at every position: zero (``c == 0``) or
    multiply by ``c``."""
    mode, value = ("zero", 0.0) if c == 0 else ("scale", float(c))
    return [FeatureClamp(saes[L], ids, mode, value) for L, ids in features.by_layer().items()]


def random_sets(alive: Mapping[int, torch.Tensor], like: FeatureSet, n: int, seed: int) -> list[FeatureSet]:
    """``n`` random feature sets with as many features at each layer as ``like``, drawn from each layer's ``alive``
    features (those that fire on the prompts: a dead feature's clamp does nothing, which would make the control
    trivially weak), excluding ``like``'s own features."""
    rng = random.Random(seed)
    own = set(like.items)
    out = []
    for _ in range(n):
        items = []
        for L, count in like.layer_counts().items():
            pool = [int(f) for f in alive[L].tolist() if (L, int(f)) not in own]
            items += [(L, f) for f in rng.sample(pool, min(count, len(pool)))]
        out.append(FeatureSet(tuple(items)))
    return out
