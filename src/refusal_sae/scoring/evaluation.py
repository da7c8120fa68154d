"""Evaluate refusal on a prompt set: greedy generations, three-way judgement, refusal scores, 95% CIs.

:func:`evaluate` is the pure function; :func:`run_eval_stage` keeps its typed result in the run directory
(``eval/<model>__<dataset>[__intervention]/``: ``result.json`` + ``rows.jsonl``, one row per prompt).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from refusal_sae.data import load_dataset
from refusal_sae.data.records import PromptSet
from refusal_sae.interventions.base import set_hooks
from refusal_sae.models.handle import ModelHandle
from refusal_sae.runs import RunDir, StageResult, config_hash, slug
from refusal_sae.scoring.config import EvalConfig
from refusal_sae.scoring.generation import generate
from refusal_sae.scoring.judge import COMPLIED, DEGENERATE, REFUSED, Judge, get_judge
from refusal_sae.scoring.refusal_score import discover_refusal_tokens, refusal_scores
from refusal_sae.scoring.stats import wilson_interval


@dataclass
class EvalResult(StageResult):
    kind = "eval"
    jsonl_fields = ("rows",)

    model: str
    dataset: str
    n: int
    counts: dict[str, int]
    refusal_tokens: list[int]
    mean_refusal_score: float
    rows: list[dict] = field(repr=False, default_factory=list)

    def rate(self, label: str) -> float:
        return self.counts[label] / self.n

    def interval(self, label: str) -> tuple[float, float]:
        return wilson_interval(self.counts[label], self.n)

    def summary(self) -> dict:
        lo, hi = self.interval(REFUSED)
        s = {
            "model": self.model, "dataset": self.dataset, "n": self.n,
            "refusal_rate": self.rate(REFUSED), "compliance_rate": self.rate(COMPLIED),
            "degenerate_rate": self.rate(DEGENERATE), "ci_low": lo, "ci_high": hi,
            "mean_refusal_score": self.mean_refusal_score, "refusal_tokens": self.refusal_tokens,
        }
        for label in (COMPLIED, DEGENERATE):
            s[f"{label}_ci"] = list(self.interval(label))
        return s


def evaluate(handle: ModelHandle, prompts: PromptSet, judge: Judge, refusal_tokens: list[int],
             cfg: EvalConfig | None = None, progress: bool = True) -> EvalResult:
    """Greedy completions of ``prompts`` (hooks attached to the handle apply, generated tokens included), judged,
    with each prompt's refusal score."""
    cfg = cfg or EvalConfig()
    instructions = prompts.instructions
    completions = generate(handle, instructions, cfg.max_new_tokens, cfg.batch_size, progress=progress,
                           desc=f"{prompts.name}")
    judgements = judge.judge_records(
        instructions, completions, contexts=[r.extra.get("context") for r in prompts.records],
        harmful=[{"harmful": True, "harmless": False}.get(r.label) for r in prompts.records])
    scores = refusal_scores(handle, instructions, refusal_tokens, cfg.batch_size)
    rows = [
        {"instruction": r.instruction, "category": r.category, "label": r.label, "completion": c,
         "judgement": j.label, "reason": j.reason, "relevance": j.relevance, "judge_score": j.score,
         "refusal_score": float(s)}
        for r, c, j, s in zip(prompts.records, completions, judgements, scores.tolist(), strict=True)
    ]
    counts = {k: sum(j.label == k for j in judgements) for k in (REFUSED, COMPLIED, DEGENERATE)}
    return EvalResult(handle.name, prompts.name, len(rows), counts, list(refusal_tokens),
                      float(scores.mean()), rows)


def eval_stage_name(handle: ModelHandle, prompts: PromptSet, cfg: EvalConfig) -> str:
    """``eval/<model>__<dataset>[__intervention]``; the model by its last path component (a hub id's name, a local
    directory's folder name)."""
    return f"eval/{slug(handle.name.rstrip('/').split('/')[-1])}__{slug(prompts.name)}{cfg.tag}"


def run_eval_stage(handle: ModelHandle, run: RunDir, cfg: EvalConfig, data_dir=None, direction=None,
                   judge: Judge | None = None, force: bool = False, progress: bool = True) -> EvalResult:
    """Evaluate ``handle`` as ``cfg`` says into ``run`` (skipped when complete for the same config, weights, prompts,
    judge and direction). ``direction``: the run's :class:`~refusal_sae.direction.result.DirectionResult`, needed
    by the ``ablate`` / ``actadd`` interventions."""
    cfg.validate(handle.n_layers)
    if cfg.intervention != "none" and direction is None:
        raise ValueError(f"the {cfg.intervention} intervention needs the run's refusal direction")
    judge = judge or get_judge(cfg.judge)
    prompts = load_dataset(cfg.dataset, data_dir, n=cfg.n, seed=cfg.seed)
    identity = cfg.to_dict() | {
        "model": handle.name, "model_revision": handle.revision, "judge_impl": type(judge).__name__,
        "prompts_hash": config_hash({"prompts": prompts.instructions}),
        "direction_hash": None if direction is None else config_hash({"d": direction.direction.tolist()})}

    def compute() -> EvalResult:
        tokens = discover_refusal_tokens(handle, load_dataset("harmful_train", data_dir).sample(32, cfg.seed).instructions)
        hooks = [] if direction is None else set_hooks(handle, direction.interventions(
            cfg.intervention, cfg.coeff, cfg.ablate_layers))
        with handle.hooks(hooks):
            return evaluate(handle, prompts, judge, tokens, cfg, progress)

    if (run.manifest().get("model") or {}).get("name") in (None, handle.name):
        run.record_model(handle)  # another model's eval (a control, e.g. the untuned base) keeps the run's own model
    return run.run(EvalResult, identity, compute, name=eval_stage_name(handle, prompts, cfg), force=force)
