"""Named direction interventions, as the CLI and configs spell them: ``none``, ``ablate``, ``actadd``."""

from __future__ import annotations

import torch

from refusal_sae.interventions.base import Intervention
from refusal_sae.interventions.directional import ActAdd, DirectionAblation
from refusal_sae.interventions.spec import check_intervention


def direction_interventions(kind: str, direction: torch.Tensor, layer: int, coeff: float = 1.0,
                            ablate_layers: tuple[int, ...] | None = None) -> list[Intervention]:
    """One intervention set: nothing; ``direction`` ablated at every layer (or ``ablate_layers``); or
    ``coeff × direction`` added at ``layer``."""
    check_intervention(kind, ablate_layers)
    if kind == "none":
        return []
    if kind == "ablate":
        return [DirectionAblation(direction, layers=ablate_layers)]
    return [ActAdd(direction, layer, coeff)]
