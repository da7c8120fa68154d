"""Evaluate refusal on a prompt set: greedy generations, three-way judgement, refusal scores, 95% CIs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from refusal_sae.data.records import PromptSet
from refusal_sae.models.handle import ModelHandle
from refusal_sae.scoring.generation import generate
from refusal_sae.scoring.judge import COMPLIED, DEGENERATE, REFUSED, Judge
from refusal_sae.scoring.refusal_score import refusal_scores
from refusal_sae.scoring.stats import wilson_interval


@dataclass
class EvalConfig:
    max_new_tokens: int = 64
    batch_size: int = 32


@dataclass
class EvalResult:
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

    def write_jsonl(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".part")
        with open(tmp, "w", encoding="utf-8") as f:
            for row in self.rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(path)


def evaluate(handle: ModelHandle, prompts: PromptSet, judge: Judge, refusal_tokens: list[int],
             cfg: EvalConfig | None = None, progress: bool = True) -> EvalResult:
    cfg = cfg or EvalConfig()
    instructions = prompts.instructions
    completions = generate(handle, instructions, cfg.max_new_tokens, cfg.batch_size, progress=progress,
                           desc=f"{prompts.name}")
    judgements = judge.judge(instructions, completions)
    scores = refusal_scores(handle, instructions, refusal_tokens, cfg.batch_size)
    rows = [
        {"instruction": r.instruction, "category": r.category, "label": r.label, "completion": c,
         "judgement": j.label, "reason": j.reason, "relevance": j.relevance, "refusal_score": float(s)}
        for r, c, j, s in zip(prompts.records, completions, judgements, scores.tolist(), strict=True)
    ]
    counts = {k: sum(j.label == k for j in judgements) for k in (REFUSED, COMPLIED, DEGENERATE)}
    return EvalResult(handle.name, prompts.name, len(rows), counts, list(refusal_tokens),
                      float(scores.mean()), rows)


