"""Harmfulness (read at t_inst) vs refusal (post-instruction): are they the same direction, causally?

For each layer: cosine of the t_inst harm direction with the selected refusal direction's position, and a
causal comparison through the intervention engine on validation prompts:
- *add* each direction (harm rescaled to the refusal vector's norm) at the layer on harmless prompts;
- *ablate* each direction everywhere on harmful prompts;
and read the mean refusal score.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from refusal_sae.direction.diff_in_means import DirectionCandidates
from refusal_sae.direction.result import HarmRefusalRow, HarmVsRefusalResult
from refusal_sae.interventions import ActAdd, DirectionAblation, InterventionEngine
from refusal_sae.models.handle import ModelHandle


def compare(handle: ModelHandle, cands: DirectionCandidates, pos: int, layers: Sequence[int],
            harmful: Sequence[str], harmless: Sequence[str], refusal_tokens: Sequence[int],
            engine: InterventionEngine | None = None) -> HarmVsRefusalResult:
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
    return HarmVsRefusalResult(pos, base_harmless, base_harmful, rows)
