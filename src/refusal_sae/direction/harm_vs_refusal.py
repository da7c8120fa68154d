"""Harmfulness (read at t_inst) vs refusal (post-instruction): are they the same direction, causally?

For each layer: cosine of the t_inst harm direction with the selected refusal direction's position, and a
causal comparison through the intervention engine on validation prompts:
- *add* each direction (harm rescaled to the refusal vector's norm) at the layer on harmless prompts;
- *ablate* each direction everywhere on harmful prompts;
and read the mean refusal score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from refusal_sae.direction.diff_in_means import DirectionCandidates
from refusal_sae.interventions import ActAdd, DirectionAblation, InterventionEngine
from refusal_sae.models.handle import ModelHandle


@dataclass
class HarmRefusalRow:
    layer: int
    cosine: float
    add_refusal: float  # harmless prompts, refusal direction added
    add_harm: float  # harmless prompts, harm direction added (same norm)
    ablate_refusal: float  # harmful prompts, refusal direction ablated
    ablate_harm: float  # harmful prompts, harm direction ablated


def compare(handle: ModelHandle, cands: DirectionCandidates, pos: int, layers: Sequence[int],
            harmful: Sequence[str], harmless: Sequence[str], refusal_tokens: Sequence[int],
            engine: InterventionEngine | None = None) -> tuple[dict, list[HarmRefusalRow]]:
    engine = engine or InterventionEngine(handle)
    base_harmless = engine.score(harmless, [[]], refusal_tokens).mean().item()
    base_harmful = engine.score(harmful, [[]], refusal_tokens).mean().item()
    rows = []
    for L in layers:
        r = cands.get(pos, L).float()
        hd = cands.harm[L].float()
        if r.norm() < 1e-8 or hd.norm() < 1e-8:
            continue
        h_scaled = hd / hd.norm() * r.norm()
        add = engine.score(harmless, [[ActAdd(r, L)], [ActAdd(h_scaled, L)]], refusal_tokens).mean(1)
        abl = engine.score(harmful, [[DirectionAblation(r)], [DirectionAblation(hd)]], refusal_tokens).mean(1)
        cos = torch.nn.functional.cosine_similarity(r, hd, dim=0).item()
        rows.append(HarmRefusalRow(L, cos, add[0].item(), add[1].item(), abl[0].item(), abl[1].item()))
    return {"baseline_harmless": base_harmless, "baseline_harmful": base_harmful}, rows


def rows_to_dicts(rows: Sequence[HarmRefusalRow]) -> list[dict]:
    return [asdict(r) for r in rows]
