"""Stage 1: refusal and harmfulness directions by difference in means, and their selection."""

from refusal_sae.direction.diff_in_means import DirectionCandidates, compute_candidates, mean_activations
from refusal_sae.direction.select import CandidateScore, SelectionConfig, choose, kl_by_prompt, score_candidates

__all__ = ["CandidateScore", "DirectionCandidates", "SelectionConfig", "choose", "compute_candidates",
           "kl_by_prompt", "mean_activations", "score_candidates"]
