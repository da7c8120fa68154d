"""How well a judge agrees with the hand labels: confusion matrix, per-class precision and recall, Cohen's κ, overall
and per condition (scikit-learn's metrics)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from refusal_sae.scoring.judge.base import COMPLIED, JUDGEMENTS, Judge


@dataclass
class Agreement:
    n: int
    accuracy: float
    kappa: float
    kappa_ci: tuple[float, float]  # 95% percentile bootstrap over answers
    precision: dict[str, float]
    recall: dict[str, float]
    confusion: dict[str, dict[str, int]]  # true label → predicted label → count


@dataclass
class JudgeEval:
    judge: str
    split: str
    overall: Agreement
    per_condition: dict[str, Agreement] = field(default_factory=dict)
    predictions: list[str] = field(default_factory=list, repr=False)

    @property
    def worst_condition_complied_precision(self) -> tuple[str, float]:
        rows = {c: a.precision[COMPLIED] for c, a in self.per_condition.items() if a.confusion and
                sum(a.confusion[t][COMPLIED] for t in JUDGEMENTS) > 0}
        c = min(rows, key=rows.get)
        return c, rows[c]


def kappa(true: Sequence[str], pred: Sequence[str]) -> float:
    from sklearn.metrics import cohen_kappa_score

    if len(set(true) | set(pred)) < 2:  # one label everywhere: perfect agreement, κ undefined (0/0)
        return 1.0
    return float(cohen_kappa_score(true, pred, labels=list(JUDGEMENTS)))


def kappa_interval(true: Sequence[str], pred: Sequence[str], draws: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of Cohen's κ, resampling answers."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t, p = np.asarray(true), np.asarray(pred)
    ks = [kappa(t[i], p[i]) for i in (rng.integers(0, len(t), len(t)) for _ in range(draws))]
    lo, hi = np.percentile(ks, [2.5, 97.5])
    return float(lo), float(hi)


def agreement(true: Sequence[str], pred: Sequence[str], draws: int = 1000) -> Agreement:
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    labels = list(JUDGEMENTS)
    p, r, _, _ = precision_recall_fscore_support(true, pred, labels=labels, zero_division=0.0)
    cm = confusion_matrix(true, pred, labels=labels)
    return Agreement(len(true), float(accuracy_score(true, pred)), kappa(true, pred), kappa_interval(true, pred, draws),
                     {lab: float(x) for lab, x in zip(labels, p, strict=True)},
                     {lab: float(x) for lab, x in zip(labels, r, strict=True)},
                     {t: {q: int(cm[i, j]) for j, q in enumerate(labels)} for i, t in enumerate(labels)})


def evaluate_judge(judge: Judge, name: str, answers: Sequence, split: str) -> JudgeEval:
    """``answers``: labelled answers (``instruction`` or ``prompt``, ``answer``, ``label``, ``condition``)."""
    pred = [j.label for j in judge.judge([a.prompt for a in answers], [a.answer for a in answers])]
    return scores(name, split, answers, pred)


def scores(name: str, split: str, answers: Sequence, pred: Sequence[str]) -> JudgeEval:
    """Agreement of the labels ``pred`` with the hand labels of ``answers``, overall and per condition."""
    true = [a.label for a in answers]
    per = {}
    for cond in sorted({a.condition for a in answers}):
        idx = [i for i, a in enumerate(answers) if a.condition == cond]
        per[cond] = agreement([true[i] for i in idx], [pred[i] for i in idx], draws=200)
    return JudgeEval(name, split, agreement(true, pred), per, list(pred))
