"""How well a judge agrees with human labels: agreement, Cohen's κ, the false-positive and false-negative rates of
"complied", confusion matrix and per-class precision / recall, overall, per condition and per producing model, with
95% percentile-bootstrap intervals (resampling answers).

Binary label sets (the public ones: complied / refused, where "refused" means "does not fulfil the task") are scored
on **complied vs anything else**: a judge's "degenerate" counts as not complied there. Three-way sets (the project's
own labels) are scored on the three labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from refusal_sae.scoring.judge.base import COMPLIED, DEGENERATE, JUDGEMENTS, REFUSED, Judge

NOT_COMPLIED = "not complied"


@dataclass
class Agreement:
    n: int
    accuracy: float
    kappa: float
    kappa_ci: tuple[float, float]  # 95% percentile bootstrap over answers
    precision: dict[str, float]
    recall: dict[str, float]
    confusion: dict[str, dict[str, int]]  # true label → predicted label → count
    accuracy_ci: tuple[float, float] = (float("nan"), float("nan"))
    complied_fpr: float = float("nan")  # share of not-complied answers the judge calls complied
    complied_fnr: float = float("nan")  # share of complied answers the judge calls anything else
    binary: bool = False  # scored as complied vs not complied
    # 95% interval of the agreement resampling *instructions* (all answers to one instruction together): answers to
    # one instruction are not independent (GPTFuzz: 77 jailbreak templates per question), so this one is wider
    accuracy_ci_by_instruction: tuple[float, float] = (float("nan"), float("nan"))


@dataclass
class JudgeEval:
    judge: str
    split: str
    overall: Agreement
    per_condition: dict[str, Agreement] = field(default_factory=dict)
    predictions: list[str] = field(default_factory=list, repr=False)
    per_model: dict[str, Agreement] = field(default_factory=dict)
    labels: str = "three-way"  # three-way | binary
    seconds: float = float("nan")  # wall time of the judging

    @property
    def worst_condition_complied_precision(self) -> tuple[str, float]:
        rows = {c: a.precision[COMPLIED] for c, a in self.per_condition.items() if a.confusion and
                sum(a.confusion[t][COMPLIED] for t in a.confusion) > 0}
        c = min(rows, key=rows.get)
        return c, rows[c]


def _codes(true: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    index = {lab: i for i, lab in enumerate(labels)}
    return np.array([index[t] for t in true], dtype=int), np.array([index[p] for p in pred], dtype=int)


def _kappa_from(t: np.ndarray, p: np.ndarray, k: int) -> float:
    cm = np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(float)
    n = cm.sum()
    po = np.trace(cm) / n
    pe = float((cm.sum(0) * cm.sum(1)).sum()) / n**2
    if pe >= 1.0:  # one label everywhere in both: perfect agreement, κ undefined (0/0)
        return 1.0
    return float((po - pe) / (1 - pe))


def kappa(true: Sequence[str], pred: Sequence[str], labels: Sequence[str] = JUDGEMENTS) -> float:
    """Cohen's κ (the same as ``sklearn.metrics.cohen_kappa_score``; written on a confusion matrix so the bootstrap
    below needs no thousand scikit-learn calls)."""
    t, p = _codes(true, pred, labels)
    return _kappa_from(t, p, len(labels))


def _interval(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = np.percentile(np.asarray(values, dtype=float), [2.5, 97.5])
    return float(lo), float(hi)


def kappa_interval(true: Sequence[str], pred: Sequence[str], draws: int = 1000, seed: int = 0,
                   labels: Sequence[str] = JUDGEMENTS) -> tuple[float, float]:
    """95% percentile bootstrap interval of Cohen's κ, resampling answers."""
    t, p = _codes(true, pred, labels)
    rng = np.random.default_rng(seed)
    draws_idx = (rng.integers(0, len(t), len(t)) for _ in range(draws))
    return _interval([_kappa_from(t[i], p[i], len(labels)) for i in draws_idx])


def binarise(labels: Sequence[str]) -> list[str]:
    """complied vs anything else (refused, degenerate)."""
    return [COMPLIED if lab == COMPLIED else NOT_COMPLIED for lab in labels]


def agreement(true: Sequence[str], pred: Sequence[str], draws: int = 1000, binary: bool = False,
              seed: int = 0, clusters: Sequence[str] | None = None) -> Agreement:
    """Agreement of ``pred`` with ``true``; ``binary`` scores complied vs not complied; ``clusters`` (e.g. each
    answer's instruction) adds an interval that resamples whole clusters."""
    if binary:
        true, pred, labels = binarise(true), binarise(pred), [COMPLIED, NOT_COMPLIED]
    else:
        labels = list(JUDGEMENTS)
    t, p = _codes(true, pred, labels)
    k = len(labels)
    cm = np.bincount(t * k + p, minlength=k * k).reshape(k, k)
    rng = np.random.default_rng(seed)
    accs, kappas = [], []
    for _ in range(draws):
        i = rng.integers(0, len(t), len(t))
        accs.append(float((t[i] == p[i]).mean()))
        kappas.append(_kappa_from(t[i], p[i], k))
    by_cluster = (float("nan"), float("nan"))
    if clusters is not None:
        keys = sorted(set(clusters))
        hits = {k: [0, 0] for k in keys}
        for key, ok in zip(clusters, (t == p).tolist(), strict=True):
            hits[key][0] += ok
            hits[key][1] += 1
        h = np.array([hits[k] for k in keys], dtype=float)
        picks = rng.integers(0, len(keys), (draws, len(keys)))
        by_cluster = _interval(h[picks, 0].sum(1) / h[picks, 1].sum(1))
    c = labels.index(COMPLIED)
    pos, neg = cm[c].sum(), cm.sum() - cm[c].sum()
    return Agreement(
        n=len(t), accuracy=float((t == p).mean()), kappa=_kappa_from(t, p, k), kappa_ci=_interval(kappas),
        precision={lab: float(cm[j, j] / cm[:, j].sum()) if cm[:, j].sum() else 0.0 for j, lab in enumerate(labels)},
        recall={lab: float(cm[j, j] / cm[j].sum()) if cm[j].sum() else 0.0 for j, lab in enumerate(labels)},
        confusion={lab: {q: int(cm[i, j]) for j, q in enumerate(labels)} for i, lab in enumerate(labels)},
        accuracy_ci=_interval(accs),
        complied_fpr=float((cm[:, c].sum() - cm[c, c]) / neg) if neg else float("nan"),
        complied_fnr=float((pos - cm[c, c]) / pos) if pos else float("nan"),
        binary=binary, accuracy_ci_by_instruction=by_cluster)


def is_binary(answers: Sequence) -> bool:
    """A label set without "degenerate" is binary: complied vs "does not fulfil the task"."""
    return not any(a.label == DEGENERATE for a in answers)


def judge_answers(judge: Judge, answers: Sequence) -> list[str]:
    return [j.label for j in judge.judge([a.prompt for a in answers], [a.answer for a in answers])]


def evaluate_judge(judge: Judge, name: str, answers: Sequence, split: str, binary: bool | None = None) -> JudgeEval:
    """``answers``: labelled answers (``prompt``, ``answer``, ``label``, ``condition``, ``producing_model``)."""
    import time

    t0 = time.perf_counter()
    pred = judge_answers(judge, answers)
    ev = scores(name, split, answers, pred, binary)
    ev.seconds = time.perf_counter() - t0
    return ev


def _instruction(answer) -> str:
    return " ".join(str(getattr(answer, "instruction", "")).lower().split())


def scores(name: str, split: str, answers: Sequence, pred: Sequence[str], binary: bool | None = None) -> JudgeEval:
    """Agreement of the labels ``pred`` with the human labels of ``answers``: overall, per condition, per model."""
    binary = is_binary(answers) if binary is None else binary
    true = [a.label for a in answers]

    def groups(key) -> dict[str, Agreement]:
        out = {}
        for g in sorted({key(a) for a in answers}):
            idx = [i for i, a in enumerate(answers) if key(a) == g]
            out[g] = agreement([true[i] for i in idx], [pred[i] for i in idx], draws=200, binary=binary,
                               clusters=[_instruction(answers[i]) for i in idx])
        return out

    overall = agreement(true, pred, binary=binary, clusters=[_instruction(a) for a in answers])
    return JudgeEval(name, split, overall, groups(lambda a: a.condition), list(pred),
                     groups(lambda a: getattr(a, "producing_model", "unknown")), "binary" if binary else "three-way")


__all__ = ["Agreement", "JudgeEval", "NOT_COMPLIED", "REFUSED", "agreement", "binarise", "evaluate_judge",
           "is_binary", "judge_answers", "kappa", "kappa_interval", "scores"]
