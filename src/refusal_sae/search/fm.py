"""A second-order factorization machine (Rendle 2010) and the linear probe beside it, with the metrics both report.

``logit(x) = w0 + Σ_i w_i x_i + Σ_{i<j} ⟨v_i, v_j⟩ x_i x_j``, computed as
``w0 + x·w + ½ Σ_f [(Σ_i v_if x_i)² − Σ_i v_if² x_i²]`` (linear in the number of features).

Hand-written, not a library: the FM packages on PyPI do not fit this stack. ``torchfm`` 0.7.0 (last release 2020)
embeds categorical field *indices* (it has no real-valued inputs) and calls ``np.long``, which NumPy 1.24 removed;
``fastFM`` needs a C build that fails here and ships no wheels for current Python/NumPy; ``pyfm`` is a music player.
The model is a few lines of torch; training is seeded Adam on the logistic loss with the epoch of lowest validation
loss kept (early stopping).

Per-feature contributions split the logit exactly: ``φ_i(x) = w_i x_i + ½ Σ_{j≠i} ⟨v_i, v_j⟩ x_i x_j`` with
``w0 + Σ_i φ_i(x) = logit(x)``: each pair's term is shared equally by its two features (for a model with only
linear and pairwise terms this is the Shapley value of each feature against the all-zero input). A feature's
contribution to refusal is the mean of ``φ_i`` over the training rows labelled refused; the probe's is the mean of
``β_i x_i`` over the same rows, so the two rankings measure the same thing. A pair's interaction strength is the
mean size of its term on the training rows, ``|⟨v_i, v_j⟩| · mean |x_i x_j|``: ``⟨v_i, v_j⟩`` alone is unconstrained
by the data for pairs that never fire together, so it is weighted by how much the pair's term actually moves
logits.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from refusal_sae.runs import Float


class FactorizationMachine(nn.Module):
    def __init__(self, n_features: int, rank: int, init_std: float = 0.1, generator: torch.Generator | None = None):
        super().__init__()
        self.w0 = nn.Parameter(torch.zeros(()))
        self.w = nn.Parameter(torch.zeros(n_features))
        self.v = nn.Parameter(torch.randn(n_features, rank, generator=generator) * init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N]`` of inputs ``[N, n_features]``."""
        xv = x @ self.v
        pairs = 0.5 * (xv.pow(2) - (x * x) @ (self.v * self.v)).sum(-1)
        return self.w0 + x @ self.w + pairs

    def gram(self) -> torch.Tensor:
        """``[n, n]`` pair weights ``⟨v_i, v_j⟩`` (diagonal zero: an FM has no square terms)."""
        g = self.v @ self.v.T
        return g - torch.diag(torch.diag(g))

    def contributions(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, n]`` per-feature shares ``φ_i`` of each row's logit (``w0 + φ.sum(-1)`` = the logit)."""
        return x * self.w + 0.5 * x * (x @ self.gram())


@dataclass
class EpochRow:
    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float


@dataclass
class FmFit:
    model: FactorizationMachine
    curve: list[EpochRow]
    best_epoch: int


def fit_fm(x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, rank: int,
           lr: float = 1e-3, epochs: int = 20, batch_size: int = 32, weight_decay: float = 0.0, seed: int = 0
           ) -> FmFit:
    """Adam on the logistic loss, minibatches in a seeded order; the weights of the epoch with the lowest
    validation loss are returned. Runs on one thread: the matrices are tiny, and on a shared CPU thread
    synchronisation costs more than the arithmetic (measured 15× slower with two threads on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_fm(x_train, y_train, x_val, y_val, rank, lr, epochs, batch_size, weight_decay, seed)
    finally:
        torch.set_num_threads(threads)


def _fit_fm(x_train, y_train, x_val, y_val, rank, lr, epochs, batch_size, weight_decay, seed) -> FmFit:
    gen = torch.Generator().manual_seed(seed)
    model = FactorizationMachine(x_train.shape[1], rank, generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    x_train, y_train, x_val, y_val = (t.float() for t in (x_train, y_train, x_val, y_val))
    best, best_loss, best_epoch, curve = copy.deepcopy(model.state_dict()), math.inf, 0, []
    with torch.no_grad():
        val_loss = float(loss_fn(model(x_val), y_val))
    best_loss = val_loss
    for epoch in range(1, epochs + 1):
        total = 0.0
        for idx in torch.randperm(len(x_train), generator=gen).split(batch_size):
            opt.zero_grad()
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        with torch.no_grad():
            logits = model(x_val)
            val_loss = float(loss_fn(logits, y_val))
            acc = float(((logits > 0).float() == y_val).float().mean())
        curve.append(EpochRow(epoch, total / len(x_train), val_loss, acc))
        if val_loss < best_loss:
            best, best_loss, best_epoch = copy.deepcopy(model.state_dict()), val_loss, epoch
    model.load_state_dict(best)
    model.eval()
    return FmFit(model, curve, best_epoch)


@dataclass
class Probe:
    coef: np.ndarray  # [n]
    intercept: float
    c: float
    val_auc: dict[str, float]  # C → validation AUC

    def logits(self, x: np.ndarray) -> np.ndarray:
        return x @ self.coef + self.intercept


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
              cs: Sequence[float], seed: int = 0) -> Probe:
    """scikit-learn's L2 logistic regression on the same inputs as the FM; ``C`` chosen by validation AUC (ties:
    the stronger regularisation), then refitted as chosen."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    fits, aucs = {}, {}
    for c in sorted(cs):
        lr = LogisticRegression(C=c, max_iter=5000, random_state=seed).fit(x_train, y_train)
        fits[c] = lr
        aucs[c] = float(roc_auc_score(y_val, lr.decision_function(x_val)))
    best = max(sorted(cs), key=lambda c: (aucs[c], -c))
    lr = fits[best]
    return Probe(lr.coef_[0].astype(np.float64), float(lr.intercept_[0]), best, {f"{c:g}": a for c, a in aucs.items()})


# --- metrics ------------------------------------------------------------------------------------------------------
@dataclass
class Metric:
    value: Float  # NaN (an undefined AUC: one class only) is stored as null and loads back as NaN
    ci: tuple[Float, Float]


@dataclass
class SplitMetrics:
    n_rows: int
    n_prompts: int
    n_positive: int
    accuracy: Metric
    auc: Metric


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def _percentiles(vals: list[float]) -> tuple[float, float]:
    if not vals:
        return (math.nan, math.nan)
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return (float(lo), float(hi))


def _resamples(groups: np.ndarray, n_boot: int, seed: int):
    """Row indices of ``n_boot`` bootstrap resamples of the *prompts* (a prompt's rows stay together: its two
    conditions are not independent)."""
    rng = np.random.default_rng(seed)
    uniq = np.unique(groups)
    rows_of = {g: np.flatnonzero(groups == g) for g in uniq}
    for _ in range(n_boot):
        pick = rng.choice(uniq, size=len(uniq), replace=True)
        yield np.concatenate([rows_of[g] for g in pick])


def split_metrics(y: np.ndarray, logits: np.ndarray, groups: np.ndarray, n_boot: int, seed: int) -> SplitMetrics:
    """Accuracy (threshold: logit 0) and ROC AUC with 95% bootstrap intervals over prompts."""
    acc = float(((logits > 0) == (y > 0.5)).mean())
    auc = _auc(y, logits) if 0 < y.sum() < len(y) else math.nan
    accs, aucs = [], []
    for idx in _resamples(groups, n_boot, seed):
        yy, ss = y[idx], logits[idx]
        accs.append(float(((ss > 0) == (yy > 0.5)).mean()))
        if 0 < yy.sum() < len(yy):
            aucs.append(_auc(yy, ss))
    return SplitMetrics(len(y), len(np.unique(groups)), int(y.sum()), Metric(acc, _percentiles(accs)),
                        Metric(auc, _percentiles(aucs)))


@dataclass
class PairedDelta:
    """A − B on the same rows, with paired bootstrap intervals (resampling prompts once for both)."""

    accuracy: Metric
    auc: Metric


def paired_delta(y: np.ndarray, logits_a: np.ndarray, logits_b: np.ndarray, groups: np.ndarray, n_boot: int,
                 seed: int) -> PairedDelta:
    def acc(s, yy):
        return float(((s > 0) == (yy > 0.5)).mean())

    d_acc = acc(logits_a, y) - acc(logits_b, y)
    d_auc = _auc(y, logits_a) - _auc(y, logits_b) if 0 < y.sum() < len(y) else math.nan
    accs, aucs = [], []
    for idx in _resamples(groups, n_boot, seed):
        yy = y[idx]
        accs.append(acc(logits_a[idx], yy) - acc(logits_b[idx], yy))
        if 0 < yy.sum() < len(yy):
            aucs.append(_auc(yy, logits_a[idx]) - _auc(yy, logits_b[idx]))
    return PairedDelta(Metric(d_acc, _percentiles(accs)), Metric(d_auc, _percentiles(aucs)))


# --- interactions ---------------------------------------------------------------------------------------------------
def pair_strengths(gram: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(strength, mean_term)`` ``[n, n]``: ``|⟨v_i, v_j⟩| · mean |x_i x_j|`` and ``⟨v_i, v_j⟩ · mean x_i x_j`` over
    the rows of ``x`` (diagonals zero)."""
    x = x.float()
    n = len(x)
    mean_abs = (x.abs().T @ x.abs()) / n
    mean_prod = (x.T @ x) / n
    strength, term = gram.abs() * mean_abs, gram * mean_prod
    strength.fill_diagonal_(0)
    term.fill_diagonal_(0)
    return strength, term


def top_pairs(strength: torch.Tensor, k: int) -> list[tuple[int, int]]:
    """The ``k`` strongest pairs ``(i, j)``, ``i < j``, strongest first."""
    n = strength.shape[0]
    iu = torch.triu_indices(n, n, 1)
    vals = strength[iu[0], iu[1]]
    order = vals.argsort(descending=True)[: min(k, len(vals))]
    return [(int(iu[0, o]), int(iu[1, o])) for o in order]
