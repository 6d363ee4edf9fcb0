"""Case- and pixel-level QC metrics within folds, with moving-block bootstrap intervals.

Consecutive video frames are near-duplicates, so resampling single frames gives intervals that are
far too narrow. :func:`block_indices` resamples blocks of ``block`` consecutive frames (a moving-block
bootstrap: block starts drawn uniformly, blocks concatenated and cut to the fold's length), each fold
on its own; a metric over folds is the frame-weighted mean of the per-fold metrics.

Metrics (:func:`fold_metrics`), for one method's case scores within a fold:
``spearman`` rho(score, mean Dice) (negative is good: a high anomaly score goes with a low Dice) and
``auroc_worst_quarter``: the AUROC of the score for flagging the fold's worst quarter of frames
(Dice at or below the fold's 25th percentile). ``pixel_auroc``: the mean over the fold's frames of the
per-frame error-localization AUROC (computed once per frame by :func:`per_frame_auroc`).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["block_indices", "fold_metrics", "per_frame_auroc", "pooled_with_intervals", "METRICS"]

METRICS = ("spearman", "auroc_worst_quarter", "pixel_auroc")


def block_indices(n: int, block: int, rng: np.random.Generator) -> np.ndarray:
    """One moving-block bootstrap resample of ``range(n)`` (blocks of ``block`` consecutive indices)."""
    b = max(1, min(int(block), n))
    starts = rng.integers(0, n - b + 1, size=-(-n // b))
    return (starts[:, None] + np.arange(b)[None]).ravel()[:n]


def per_frame_auroc(maps: Sequence[np.ndarray], errors: Sequence[np.ndarray],
                    valid: Sequence[np.ndarray]) -> np.ndarray:
    """Per-frame AUROC of an anomaly map against the error mask (valid pixels); NaN where a frame has
    no error or only errors."""
    from sklearn.metrics import roc_auc_score
    out = np.full(len(maps), np.nan)
    for i, (m, e, v) in enumerate(zip(maps, errors, valid)):
        y = e[v].ravel()
        if 0 < y.sum() < y.size:
            out[i] = roc_auc_score(y, m[v].ravel())
    return out


def _spearman(score: np.ndarray, dice: np.ndarray) -> float:
    from scipy.stats import spearmanr
    if np.ptp(score) == 0 or np.ptp(dice) == 0:
        return float("nan")
    return float(spearmanr(score, dice).statistic)


def _auroc_worst(score: np.ndarray, dice: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score
    worst = dice <= np.quantile(dice, 0.25)
    if worst.all() or not worst.any():
        return float("nan")
    return float(roc_auc_score(worst.astype(int), score))


def fold_metrics(score: np.ndarray, dice: np.ndarray, pixel: np.ndarray | None) -> dict[str, float]:
    """:data:`METRICS` of one method on one fold (``pixel``: its per-frame AUROCs, or None)."""
    out = {"spearman": _spearman(score, dice), "auroc_worst_quarter": _auroc_worst(score, dice)}
    out["pixel_auroc"] = float(np.nanmean(pixel)) if pixel is not None and np.isfinite(pixel).any() else float("nan")
    return out


def _weighted(per_fold: list[dict[str, float]], weights: np.ndarray) -> dict[str, float]:
    out = {}
    for k in METRICS:
        v = np.array([m[k] for m in per_fold], dtype=float)
        ok = np.isfinite(v)
        out[k] = float(np.sum(v[ok] * weights[ok]) / np.sum(weights[ok])) if ok.any() else float("nan")
    return out


def pooled_with_intervals(folds: Sequence[Mapping[str, Any]], methods: Sequence[str], reference: str,
                          n_boot: int = 1000, block: int = 10, seed: int = 0,
                          level: float = 0.95) -> dict[str, dict[str, Any]]:
    """Frame-weighted means over folds of each method's metrics, with block-bootstrap intervals.

    ``folds``: one mapping per fold with ``dice`` (n,), ``scores`` ``{method: (n,)}`` and ``pixel``
    ``{method: (n,) per-frame AUROC}`` (methods without maps absent). Every resample draws the same frames
    for all methods, so ``diff_vs_<reference>`` (method minus reference) has a paired interval.
    Returns ``{method: {metric: value, metric + "_ci": [lo, hi], "diff_vs_ref": {metric: [value, lo, hi]}}}``.
    """
    weights = np.array([len(f["dice"]) for f in folds], dtype=float)

    def metrics_on(idx: list[np.ndarray]) -> dict[str, dict[str, float]]:
        res = {}
        for m in methods:
            per_fold = []
            for f, ix in zip(folds, idx):
                pix = f["pixel"].get(m)
                per_fold.append(fold_metrics(f["scores"][m][ix], f["dice"][ix], None if pix is None else pix[ix]))
            res[m] = _weighted(per_fold, weights)
        return res

    point = metrics_on([np.arange(len(f["dice"])) for f in folds])
    rng = np.random.default_rng(seed)
    boots = [metrics_on([block_indices(len(f["dice"]), block, rng) for f in folds]) for _ in range(int(n_boot))]
    lo_q, hi_q = (1.0 - level) / 2.0, 1.0 - (1.0 - level) / 2.0
    out: dict[str, dict[str, Any]] = {}
    for m in methods:
        entry: dict[str, Any] = dict(point[m])
        diffs = {}
        for k in METRICS:
            vals = np.array([b[m][k] for b in boots])
            ref = np.array([b[reference][k] for b in boots])
            ok = np.isfinite(vals)
            entry[k + "_ci"] = [float(np.quantile(vals[ok], lo_q)), float(np.quantile(vals[ok], hi_q))] \
                if ok.any() else None
            d = vals - ref
            okd = np.isfinite(d)
            if m != reference and okd.any():
                diffs[k] = [float(point[m][k] - point[reference][k]), float(np.quantile(d[okd], lo_q)),
                            float(np.quantile(d[okd], hi_q))]
        if m != reference:
            entry["diff_vs_ref"] = diffs
        out[m] = entry
    return out
