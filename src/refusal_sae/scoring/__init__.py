"""Refusal scoring: refusal-token log-odds, batched generation, three-way judges, evaluation."""

from refusal_sae.scoring.evaluate import EvalConfig, EvalResult, evaluate
from refusal_sae.scoring.judge import COMPLIED, DEGENERATE, REFUSAL_PHRASES, REFUSED, Judge, Judgement, get_judge
from refusal_sae.scoring.refusal_score import discover_refusal_tokens, refusal_score_from_logits, refusal_scores

__all__ = ["COMPLIED", "DEGENERATE", "REFUSAL_PHRASES", "REFUSED", "EvalConfig", "EvalResult", "Judge", "Judgement",
           "discover_refusal_tokens", "evaluate", "get_judge", "refusal_score_from_logits", "refusal_scores"]
