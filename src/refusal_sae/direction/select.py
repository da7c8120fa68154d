"""Select the refusal direction among the difference-in-means candidates, as Arditi et al. do it.

For each candidate (position, layer), on the *validation* splits:
- **bypass**: mean refusal score of harmful prompts with the direction ablated everywhere (lower = better);
- **induce**: mean refusal score of harmless prompts with the raw difference vector added at its layer;
- **KL**: KL(clean ‖ ablated) of harmless prompts' next-token distributions at the last position.
Candidates in the last ``prune_layer_fraction`` of layers, with KL > ``max_kl`` or induce < ``min_induce`` are
discarded; the lowest bypass score wins.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from tqdm.auto import tqdm

from refusal_sae.direction.config import SelectionConfig
from refusal_sae.direction.diff_in_means import DirectionCandidates
from refusal_sae.direction.result import CandidateScore, KlRow
from refusal_sae.errors import ConfigError
from refusal_sae.interventions.directional import ActAdd, DirectionAblation
from refusal_sae.interventions.engine import EngineConfig, InterventionEngine
from refusal_sae.models.handle import ModelHandle
from refusal_sae.ops import kl_divergence
from refusal_sae.scoring.refusal_score import refusal_score_from_logits


def score_candidates(handle: ModelHandle, cands: DirectionCandidates, harmful_val: Sequence[str],
                     harmless_val: Sequence[str], refusal_tokens: Sequence[int],
                     cfg: SelectionConfig, engine: InterventionEngine | None = None,
                     done: Sequence[CandidateScore] = (),
                     on_layer: Callable[[list[CandidateScore]], None] | None = None) -> list[CandidateScore]:
    """Score every (position, layer) candidate. All positions of one layer run as one stacked batch of
    intervention sets through the engine (the activation additions also share the layer prefix).

    ``done``: scores of an interrupted run (a checkpoint); their layers are not measured again. ``on_layer`` gets
    every score so far after each measured layer (the caller checkpoints them), so an interrupt loses one layer."""
    engine = engine or InterventionEngine(handle, EngineConfig(prompt_batch_size=cfg.batch_size))
    layers = cfg.layers if cfg.layers is not None else tuple(range(handle.n_layers))
    positions = cfg.positions if cfg.positions is not None else tuple(cands.positions)
    bad = [L for L in layers if not 0 <= L < handle.n_layers] + [p for p in positions if p not in cands.positions]
    if bad:
        raise ConfigError(f"layers/positions out of range: {bad}")
    max_layer = int(handle.n_layers * (1 - cfg.prune_layer_fraction))  # as in Arditi et al.'s code
    clean_harmless = engine.last_logits(harmless_val, [[]])[0].double()
    both = [*harmful_val, *harmless_val]
    found: dict[tuple[int, int], CandidateScore] = {(c.pos, c.layer): c for c in done}
    finished = {layer for layer in layers if all((pos, layer) in found for pos in positions)}
    for layer in tqdm([L for L in layers if L not in finished], desc="scoring candidate directions", unit="layer",
                      initial=len(finished), total=len(layers)):
        todo = []
        for pos in positions:
            r = cands.get(pos, layer).float()
            if r.norm() < 1e-8:  # e.g. layer 0 at template tokens: identical embeddings, no difference
                found[pos, layer] = CandidateScore(pos, layer, math.nan, math.nan, math.nan, False, "zero vector")
            elif layer >= max_layer:  # discarded anyway; not worth the forward passes
                found[pos, layer] = CandidateScore(pos, layer, math.nan, math.nan, math.nan, False,
                                                   f"layer in last {cfg.prune_layer_fraction:.0%}")
            else:
                todo.append((pos, r))
        if not todo:
            continue
        ablated = engine.last_logits(both, [[DirectionAblation(r)] for _, r in todo]).double()  # [S, P, V]
        bypass = refusal_score_from_logits(ablated[:, : len(harmful_val)], refusal_tokens).mean(1)
        kl_all = kl_divergence(clean_harmless[None], ablated[:, len(harmful_val) :])  # [S, P]
        kl, kl_med, kl_max = kl_all.mean(1), kl_all.median(1).values, kl_all.max(1).values
        induce = engine.score(harmless_val, [[ActAdd(r, layer)] for _, r in todo], refusal_tokens).mean(1)
        for i, (pos, _) in enumerate(todo):
            found[pos, layer] = CandidateScore(pos, layer, bypass[i].item(), induce[i].item(), kl[i].item(), True,
                                               kl_median=kl_med[i].item(), kl_max=kl_max[i].item())
        if on_layer is not None:
            on_layer(list(found.values()))
    return apply_filters([found[pos, layer] for pos in positions for layer in layers], cfg)


def kl_by_prompt(handle: ModelHandle, direction: torch.Tensor, prompts: Sequence[str],
                 engine: InterventionEngine | None = None, top: int = 3) -> list[KlRow]:
    """Per-prompt KL(clean ‖ ablated) at the last position for one direction, largest first, with each
    prompt's most likely next tokens before and after the ablation (what the KL tail is made of)."""
    engine = engine or InterventionEngine(handle)
    logits = engine.last_logits(prompts, [[], [DirectionAblation(direction)]]).double()  # [2, P, V]
    kl = kl_divergence(logits[0], logits[1])
    probs = logits.softmax(-1)

    def head(p: torch.Tensor) -> list[tuple[str, float]]:
        values, ids = p.topk(top)
        return [(handle.tokenizer.decode([int(t)]), round(v, 4)) for v, t in zip(values.tolist(), ids.tolist(), strict=True)]

    return [KlRow(prompts[i], kl[i].item(), head(probs[0, i]), head(probs[1, i]))
            for i in kl.argsort(descending=True).tolist()]


def apply_filters(scores: Sequence[CandidateScore], cfg: SelectionConfig) -> list[CandidateScore]:
    """Re-apply the KL / induce thresholds to already measured scores (skipped candidates stay skipped)."""
    out = []
    for s in scores:
        if math.isnan(s.bypass):
            out.append(s)
        elif not math.isfinite(s.kl) or s.kl > cfg.max_kl:
            out.append(replace(s, kept=False, reason=f"KL {s.kl:.3f} > {cfg.max_kl}"))
        elif s.induce < cfg.min_induce:
            out.append(replace(s, kept=False, reason=f"induce {s.induce:.2f} < {cfg.min_induce}"))
        else:
            out.append(replace(s, kept=True, reason=""))
    return out


def choose(scores: Sequence[CandidateScore], where: str = "") -> CandidateScore:
    kept = [s for s in scores if s.kept]
    if not kept:
        scored = [s for s in scores if not math.isnan(s.bypass)]

        def show(s: CandidateScore) -> str:
            return f"pos {s.pos} layer {s.layer}: bypass {s.bypass:.2f}, induce {s.induce:.2f}, KL {s.kl:.3f}"

        hint = ""
        if scored:
            hint = (f"; lowest KL {show(min(scored, key=lambda s: s.kl))}; highest induce "
                    f"{show(max(scored, key=lambda s: s.induce))}")
        raise ConfigError("every candidate direction was filtered out (KL, induce or layer limits)" + hint +
                          "; relax --max-kl / --min-induce (the measured scores are reused)" +
                          (f"; all scores: {where}" if where else ""))
    return min(kept, key=lambda s: s.bypass)
