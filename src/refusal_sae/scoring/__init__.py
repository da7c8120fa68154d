"""Refusal scoring: refusal-token log-odds, batched generation, three-way judges, evaluation, paired comparison.

Exports load lazily: ``from refusal_sae.scoring.config import EvalConfig`` stays torch-free.
"""

from refusal_sae._lazy import lazy_exports

_EXPORTS = {
    "EvalConfig": "config", "EvalResult": "evaluation", "evaluate": "evaluation", "run_eval_stage": "evaluation",
    "COMPLIED": "judge", "DEGENERATE": "judge", "REFUSAL_PHRASES": "judge", "REFUSED": "judge", "Judge": "judge",
    "Judgement": "judge", "get_judge": "judge",
    "discover_refusal_tokens": "refusal_score", "refusal_score_from_logits": "refusal_score",
    "refusal_scores": "refusal_score",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
