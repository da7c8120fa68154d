"""Stage 1: refusal and harmfulness directions by difference in means, and their selection (Arditi et al. 2024).

Exports load lazily: ``from refusal_sae.direction.config import DirectionConfig`` stays torch-free.
"""

from refusal_sae._lazy import lazy_exports

_EXPORTS = {
    "DirectionConfig": "config", "SelectionConfig": "config",
    "DirectionCandidates": "diff_in_means", "compute_candidates": "diff_in_means", "mean_activations": "diff_in_means",
    "CandidateScore": "result", "DirectionResult": "result", "HarmVsRefusalResult": "result",
    "choose": "select", "kl_by_prompt": "select", "score_candidates": "select",
    "DirectionPrompts": "runner", "find_direction": "runner", "run_direction_stage": "runner",
    "run_harm_vs_refusal_stage": "runner",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
