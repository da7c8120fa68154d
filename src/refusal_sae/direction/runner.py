"""The direction stage end to end: candidates on training splits, selection on validation splits, a typed
:class:`~refusal_sae.direction.result.DirectionResult` in the run directory (``direction/``).

The shape every stage copies: a torch-free config (:mod:`.config`), the prompts it reads (:class:`DirectionPrompts`),
a function ``(handle, prompts, config) -> Result`` (:func:`find_direction`), and a resumable wrapper that validates the
config against the model before any work and keeps the result in the run directory (:func:`run_direction_stage`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import TypeAdapter

from refusal_sae.data import load_dataset
from refusal_sae.direction.config import DirectionConfig
from refusal_sae.direction.diff_in_means import DirectionCandidates, compute_candidates
from refusal_sae.direction.harm_vs_refusal import compare
from refusal_sae.direction.result import CandidateScore, DirectionResult, HarmVsRefusalResult
from refusal_sae.direction.select import apply_filters, choose, kl_by_prompt, score_candidates
from refusal_sae.models.handle import ModelHandle
from refusal_sae.runs import RunDir, completed, file_sha256, mark_complete
from refusal_sae.scoring.refusal_score import discover_refusal_tokens

CANDIDATES = "candidates.safetensors"
CANDIDATES_DONE = "candidates.json"  # marker: the candidates file is complete for this identity
SCORES = "scores.json"
PARTIAL = "scores.partial.json"  # checkpoint of the scores measured so far (removed when all are)
_SCORES = TypeAdapter(list[CandidateScore])


@dataclass
class DirectionPrompts:
    """Seeded samples of the training and validation splits (never a test split)."""

    harmful_train: list[str]
    harmless_train: list[str]
    harmful_val: list[str]
    harmless_val: list[str]
    refusal_discovery: list[str]  # harmful_train prompts whose greedy refusals give the refusal tokens

    @classmethod
    def load(cls, cfg: DirectionConfig, data_dir=None) -> DirectionPrompts:
        harmful_train = load_dataset("harmful_train", data_dir)
        return cls(harmful_train.sample(cfg.n_train, cfg.seed).instructions,
                   load_dataset("harmless_train", data_dir).sample(cfg.n_train, cfg.seed).instructions,
                   load_dataset("harmful_val", data_dir).sample(cfg.n_val, cfg.seed).instructions,
                   load_dataset("harmless_val", data_dir).sample(cfg.n_val, cfg.seed).instructions,
                   harmful_train.sample(32, cfg.seed + 1).instructions)


def _candidates(handle: ModelHandle, prompts: DirectionPrompts, cfg: DirectionConfig, conf: dict,
                scratch: Path | None) -> DirectionCandidates:
    """The difference-in-means candidates, reused from ``scratch`` when an interrupted run computed them for the
    same identity (their marker records the file's hash)."""
    if scratch is not None:
        done = completed(scratch / CANDIDATES_DONE, conf)
        if done is not None and (scratch / CANDIDATES).is_file() and file_sha256(scratch / CANDIDATES) == done["sha256"]:
            return DirectionCandidates.load(scratch / CANDIDATES)
    cands = compute_candidates(handle, prompts.harmful_train, prompts.harmless_train, cfg.selection.batch_size,
                               cfg.massive_k, cfg.massive_ratio)
    if scratch is not None:
        cands.save(scratch / CANDIDATES)
        mark_complete(scratch / CANDIDATES_DONE, conf, {"sha256": file_sha256(scratch / CANDIDATES)})
    return cands


def harm_refusal_cosines(cands: DirectionCandidates, pos: int) -> list[float]:
    r = cands.refusal[pos + cands.refusal.shape[0]]
    return torch.nn.functional.cosine_similarity(r, cands.harm, dim=-1).nan_to_num(0.0).tolist()


def find_direction(handle: ModelHandle, prompts: DirectionPrompts, cfg: DirectionConfig,
                   scratch: Path | None = None) -> DirectionResult:
    """Difference-in-means candidates, scored and filtered on the validation prompts; the lowest bypass wins.

    With ``scratch``, the candidates and the measured scores are kept there before the thresholds are applied: a
    run whose candidates are all filtered out leaves them to inspect, and a re-run with other ``max_kl`` /
    ``min_induce`` reuses the scores instead of measuring them again.
    """
    sel = cfg.selection
    scoring_conf = cfg.identity(handle.name, handle.revision)
    scoring_conf["selection"] = {k: v for k, v in scoring_conf["selection"].items() if k not in ("max_kl", "min_induce")}
    cands = _candidates(handle, prompts, cfg, scoring_conf, scratch)
    saved = completed(scratch / SCORES, scoring_conf) if scratch is not None else None
    if saved is not None:
        tokens = saved["refusal_tokens"]
        scores = apply_filters(_SCORES.validate_python(saved["candidates"]), sel)
    else:
        # checkpoint: the refusal tokens, then every scored layer (an interrupted run resumes at the next layer)
        partial = completed(scratch / PARTIAL, scoring_conf) if scratch is not None else None
        tokens = partial["refusal_tokens"] if partial else discover_refusal_tokens(handle, prompts.refusal_discovery)

        def checkpoint(so_far: list[CandidateScore]) -> None:
            if scratch is not None:
                mark_complete(scratch / PARTIAL, scoring_conf,
                              {"refusal_tokens": tokens, "candidates": _SCORES.dump_python(so_far, mode="json")})

        checkpoint(_SCORES.validate_python(partial["candidates"]) if partial else [])
        scores = score_candidates(handle, cands, prompts.harmful_val, prompts.harmless_val, tokens, sel,
                                  done=_SCORES.validate_python(partial["candidates"]) if partial else (),
                                  on_layer=checkpoint)
        if scratch is not None:
            mark_complete(scratch / SCORES, scoring_conf,
                          {"refusal_tokens": tokens, "candidates": _SCORES.dump_python(scores, mode="json")})
            (scratch / PARTIAL).unlink(missing_ok=True)
    best = choose(scores, str(scratch / SCORES) if scratch is not None else "")
    direction = cands.get(best.pos, best.layer).float()
    return DirectionResult(
        direction=direction, harm=cands.harm.float(), chosen=best, refusal_tokens=list(tokens),
        n_train=(cands.n_harmful, cands.n_harmless), n_val=(len(prompts.harmful_val), len(prompts.harmless_val)),
        massive_directions_removed=0 if cands.massive is None else len(cands.massive), candidates=scores,
        harm_refusal_cosine_by_layer=harm_refusal_cosines(cands, best.pos),
        kl_by_prompt=kl_by_prompt(handle, direction, prompts.harmless_val, top=3))


def validate(handle: ModelHandle, cfg: DirectionConfig, harm_layers: Sequence[int] = ()) -> None:
    """Check ``cfg`` against the model before any forward pass (one format of a short prompt)."""
    cfg.validate(handle.n_layers, handle.format("x").n_post_inst, tuple(harm_layers))


def run_direction_stage(handle: ModelHandle, run: RunDir, cfg: DirectionConfig, data_dir=None,
                        force: bool = False) -> DirectionResult:
    """The refusal direction of ``handle`` in ``run`` (``direction/``): loaded when complete for this config and
    these weights, else computed and saved."""
    validate(handle, cfg)
    prompts = DirectionPrompts.load(cfg, data_dir)
    run.record_model(handle)
    return run.run(DirectionResult, cfg.identity(handle.name, handle.revision),
                   lambda: find_direction(handle, prompts, cfg, run.path(DirectionResult.kind)), force=force)


def run_harm_vs_refusal_stage(handle: ModelHandle, run: RunDir, cfg: DirectionConfig, layers: Sequence[int],
                              data_dir=None) -> HarmVsRefusalResult:
    """Cosine and causal comparison of the t_inst harm direction with the refusal direction, per layer
    (``harm_vs_refusal/``), on the validation prompts."""
    validate(handle, cfg, layers)
    conf = cfg.identity(handle.name, handle.revision) | {"layers": list(layers)}

    def compute() -> HarmVsRefusalResult:
        chosen = run_direction_stage(handle, run, cfg, data_dir)
        cands = DirectionCandidates.load(run.path(DirectionResult.kind) / CANDIDATES)
        prompts = DirectionPrompts.load(cfg, data_dir)
        return compare(handle, cands, chosen.pos, layers, prompts.harmful_val, prompts.harmless_val,
                       chosen.refusal_tokens)

    return run.run(HarmVsRefusalResult, conf, compute)
