"""Detection metrics: AUROC, average precision, mean +- std over seeds, seed-averaged ROC curves.

AUROC and AP are scikit-learn's ``roc_auc_score`` and ``average_precision_score`` on scores where
higher means more anomalous and labels where 1 = anomaly. Spreads over seeds are the population
standard deviation (``numpy.std``, ddof=0), the convention of the AD benchmarks we compare to.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

__all__ = ["auroc", "average_precision", "check_scores", "mean_roc_curve", "mean_std"]


def check_scores(y_true: np.ndarray, scores: np.ndarray, name: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    """Validate a (labels, scores) pair: same length, finite scores, both classes present."""
    y_true = np.asarray(y_true).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if y_true.shape != scores.shape:
        raise ValueError(f"{name}: expected {y_true.shape[0]} scores, got {scores.shape[0]}")
    bad = ~np.isfinite(scores)
    if bad.any():
        raise ValueError(f"{name}: {int(bad.sum())} non-finite score(s), first at index "
                         f"{int(np.argmax(bad))}")
    if not np.isin(y_true, (0, 1)).all() or len(np.unique(y_true)) != 2:
        raise ValueError("y_true: expected binary labels with both 0 (normal) and 1 (anomaly)")
    return y_true, scores


def auroc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (1 = anomaly, higher score = more anomalous)."""
    y_true, scores = check_scores(y_true, scores)
    return float(roc_auc_score(y_true, scores))


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Average precision with anomalies as the positive class."""
    y_true, scores = check_scores(y_true, scores)
    return float(average_precision_score(y_true, scores))


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and population std (ddof=0) of per-seed values."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        raise ValueError("values: expected at least one value")
    return float(arr.mean()), float(arr.std())


def mean_roc_curve(pairs: Sequence[tuple[np.ndarray, np.ndarray]],
                   n_points: int = 201) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seed-averaged ROC: TPR interpolated on a common FPR grid, then mean and std over seeds.

    Returns ``(fpr_grid, tpr_mean, tpr_std)``.
    """
    if not pairs:
        raise ValueError("pairs: expected at least one (y_true, scores) pair")
    grid = np.linspace(0.0, 1.0, n_points)
    tprs = []
    for y_true, scores in pairs:
        y_true, scores = check_scores(y_true, scores)
        fpr, tpr, _ = roc_curve(y_true, scores)
        interp = np.interp(grid, fpr, tpr)
        interp[0] = 0.0
        tprs.append(interp)
    tprs = np.stack(tprs)
    mean = tprs.mean(axis=0)
    mean[-1] = 1.0
    return grid, mean, tprs.std(axis=0)
