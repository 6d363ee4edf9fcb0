"""Label-map baselines that need no network and no image: what a user has for free.

Used by the spine evaluation (:func:`gnsm.evaluation.segmentation.evaluate_spine`) beside GNSM:

- voxel maps: the positional prior (-log p(label | position) of the training label maps,
  :class:`~gnsm.evaluation.segmentation.PositionalFrequency`) and boundary proximity (minus the distance to
  the nearest voxel whose neighbour has another label: most segmentation errors sit on boundaries);
- case scores: the mean of the positional-prior map, and the label-volume z-score, the largest
  ``|log(1 + n_k) - mean| / std`` over the labels k, with the mean / std of the training maps' per-label
  voxel counts (a grown, shrunk, missing or merged structure changes its count).

:func:`calibrated_verdicts` thresholds a case score the way ``SegmentationQC`` does: at the
``1 - contamination`` quantile of the training cases' scores, each scored out of sample (leave one out).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

__all__ = ["boundary_proximity", "label_volume_features", "label_volume_zscore", "calibrated_verdicts", "leave_one_out"]


def boundary_proximity(labels: np.ndarray) -> np.ndarray:
    """(*spatial) minus the Euclidean distance (voxels) to the nearest label boundary (0 on a boundary)."""
    from scipy import ndimage
    labels = np.asarray(labels)
    edge = np.zeros(labels.shape, bool)
    for ax in range(labels.ndim):
        lo = [slice(None)] * labels.ndim
        hi = [slice(None)] * labels.ndim
        lo[ax], hi[ax] = slice(None, -1), slice(1, None)
        diff = labels[tuple(lo)] != labels[tuple(hi)]
        edge[tuple(lo)] |= diff
        edge[tuple(hi)] |= diff
    if not edge.any():  # one label everywhere: every voxel is equally far from an error
        return np.zeros(labels.shape, np.float32)
    return -ndimage.distance_transform_edt(~edge).astype(np.float32)


def label_volume_features(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(K - 1,) log(1 + voxel count) of every foreground label 1..K-1."""
    counts = np.bincount(np.asarray(labels, np.int64).ravel(), minlength=num_classes)
    if counts.size > num_classes:
        raise ValueError(f"labels: values up to {counts.size - 1}, expected fewer than {num_classes} classes")
    return np.log1p(counts[1:].astype(np.float64))


def label_volume_zscore(train: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Largest |z| over the labels of each row of ``rows`` (n, K-1) against ``train`` (m, K-1) features.

    A label whose training count never varies gets the spread of one voxel on the log scale (no infinite z).
    """
    train, rows = np.atleast_2d(train), np.atleast_2d(rows)
    if len(train) < 2:
        raise ValueError(f"label_volume_zscore: need at least 2 training cases, got {len(train)}")
    mean, std = train.mean(axis=0), train.std(axis=0, ddof=1)
    floor = np.log1p(np.exp(-mean))  # one voxel more, on the log(1 + n) scale
    std = np.maximum(std, floor)
    return np.abs((rows - mean) / std).max(axis=1)


def calibrated_verdicts(train_scores: np.ndarray, scores: np.ndarray, contamination: float) -> dict[str, object]:
    """Threshold ``scores`` (prediction first, then references) at the ``1 - contamination`` quantile of
    the out-of-sample ``train_scores``; returns the threshold, the verdict on the first case, the number of
    the others flagged and the first case's rank among all (1 = most anomalous)."""
    from ...detectors import contamination_threshold  # lazy, like the rest of the evaluation: it loads torch
    scores = np.asarray(scores, np.float64)
    threshold = contamination_threshold(train_scores, contamination)
    return {"threshold": threshold, "score_prediction": float(scores[0]),
            "score_references": [float(s) for s in scores[1:]],
            "prediction_flagged": bool(scores[0] > threshold),
            "references_flagged": int((scores[1:] > threshold).sum()),
            "prediction_rank": int(1 + (scores[1:] > scores[0]).sum())}


def leave_one_out(train: Sequence[np.ndarray],
                  score: Callable[[Sequence[np.ndarray], np.ndarray], float]) -> np.ndarray:
    """Each training case scored by ``score(others, case)``, fitted on the other training cases."""
    return np.array([score([t for j, t in enumerate(train) if j != i], train[i]) for i in range(len(train))])
