"""Positional information of a segmentation: the label atlas (positional prior) and position codes.

* :func:`fit_positional_prior` counts, per position, how often each label occurs in the training
  cases (Laplace-smoothed): ``log p(label | position)`` on a grid of the median case shape.
* :func:`positional_nll` reads a case's ``-log p(label | position)`` off that atlas; cases of another
  size are matched by relative position.
* :func:`position_code` is the sin-cos code of every voxel's position, the condition of the
  per-position density head.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np

from ...data import MaskCase
from ...flows import positions_as_rows, sincos_positional_encoding

__all__ = ["fit_positional_prior", "positional_nll", "position_code", "grid_index"]


def grid_index(n: int, g: int) -> np.ndarray:
    """Nearest index on a g-cell axis for each of n cells covering the same extent."""
    return np.minimum(((np.arange(n) + 0.5) * g / n).astype(np.int64), g - 1)


def fit_positional_prior(cases: Sequence[MaskCase], num_classes: int, alpha: float = 1.0) -> np.ndarray:
    """(K, *grid) float32 log p(label | position) of the training label maps, Laplace-smoothed by ``alpha``.

    The grid is the per-axis median case shape; other sizes are resampled onto it by relative position.
    """
    grid = tuple(int(np.median([c.shape[d] for c in cases])) for d in range(len(cases[0].shape)))
    counts = np.zeros((num_classes, math.prod(grid)), dtype=np.float64)
    for case in cases:
        labels = case.labels[np.ix_(*[grid_index(g, n) for g, n in zip(grid, case.shape)])]
        counts += np.stack([(labels == k).ravel() for k in range(num_classes)])
    log_p = np.log((counts + alpha) / (len(cases) + alpha * num_classes))
    return log_p.reshape((num_classes, *grid)).astype(np.float32)


def positional_nll(log_p: np.ndarray, case: MaskCase) -> np.ndarray:
    """(*case.shape) -log p(label | position); the expected value under soft probabilities."""
    grid_log_p = log_p
    if case.shape != log_p.shape[1:]:  # resample only when needed: a 3-D atlas copy is tens of MB per case
        grid_log_p = log_p[(slice(None),) + np.ix_(*[grid_index(n, g) for n, g in zip(case.shape, log_p.shape[1:])])]
    if case.labels is not None:
        return -np.take_along_axis(grid_log_p, case.labels[None].astype(np.int64), axis=0)[0]
    return -(case.probs * grid_log_p).sum(axis=0).astype(np.float32)


@functools.lru_cache(maxsize=4)
def position_code(channels: int, shape: tuple[int, ...]) -> np.ndarray:
    """(prod(shape), channels) read-only sin-cos code of every voxel's position (in voxels from the
    case's corner). Cached: cases of one size (the usual data set) share it instead of rebuilding it."""
    rows = positions_as_rows(sincos_positional_encoding(channels, shape)).numpy()
    rows.setflags(write=False)
    return rows
