"""Fit the learned judge on the dev labels (scikit-learn), choosing its regularisation by cross-validation grouped by
instruction, so that no instruction is both fitted and scored in a fold."""

from __future__ import annotations

from collections.abc import Sequence

from refusal_sae.errors import DataError
from refusal_sae.runs import config_hash
from refusal_sae.scoring.judge.base import JUDGEMENTS
from refusal_sae.scoring.judge.features import FEATURE_NAMES
from refusal_sae.scoring.judge.learned import FeatureExtractor, JudgeParams

CS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def features_of(answers: Sequence, extractor: FeatureExtractor) -> list[list[float]]:
    """Features of labelled answers (the prompt the model saw, and its answer)."""
    return extractor([a.prompt for a in answers], [a.answer for a in answers])


def fit_params(x: Sequence[Sequence[float]], y: Sequence[str], groups: Sequence[str], reference_model: str,
               fitted_on: dict, cs: Sequence[float] = CS, folds: int = 5, seed: int = 0) -> JudgeParams:
    """Standardise, then a multinomial logistic regression; ``C`` maximises Cohen's κ over grouped folds."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import cohen_kappa_score
    from sklearn.model_selection import GroupKFold
    from sklearn.preprocessing import StandardScaler

    if sorted(set(y)) != sorted(JUDGEMENTS):
        raise DataError(f"the fit needs every label among the answers, got {sorted(set(y))}")
    xa, ya, ga = np.asarray(x, dtype=float), np.asarray(y), np.asarray(groups)
    cv = {}
    for c in cs:
        pred = np.empty(len(ya), dtype=object)
        for train, test in GroupKFold(n_splits=folds).split(xa, ya, ga):
            scaler = StandardScaler().fit(xa[train])
            model = LogisticRegression(C=c, max_iter=5000).fit(scaler.transform(xa[train]), ya[train])
            pred[test] = model.predict(scaler.transform(xa[test]))
        cv[c] = float(cohen_kappa_score(ya, pred))
    best = max(cs, key=lambda c: (cv[c], -c))
    scaler = StandardScaler().fit(xa)
    model = LogisticRegression(C=best, max_iter=5000).fit(scaler.transform(xa), ya)
    scale = [float(s) if s > 0 else 1.0 for s in scaler.scale_]
    return JudgeParams(list(FEATURE_NAMES), [str(c) for c in model.classes_], scaler.mean_.tolist(), scale,
                       model.coef_.tolist(), model.intercept_.tolist(), reference_model,
                       fitted_on | {"C": best, "cv_kappa": cv, "folds": folds, "seed": seed})


def fit_on_labels(answers: Sequence, extractor: FeatureExtractor) -> JudgeParams:
    """Fit on labelled ``answers`` (the dev split), recording what they were."""
    from collections import Counter

    x = features_of(answers, extractor)
    fitted_on = {"split": sorted({a.split for a in answers}), "n": len(answers),
                 "labels": dict(Counter(a.label for a in answers)),
                 "answers_hash": config_hash({"a": [[a.id, a.answer, a.label] for a in answers]})}
    return fit_params(x, [a.label for a in answers], [a.instruction for a in answers], extractor.reference_model,
                      fitted_on)
