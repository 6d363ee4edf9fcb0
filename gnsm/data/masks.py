"""Segmentation cases for :class:`gnsm.detectors.SegmentationQC`: parsing and checking.

A *case* is one mask (2-D) or label volume (3-D), given either as integer labels ``(*spatial)``
or as soft class probabilities ``(K, *spatial)`` (a segmenter's softmax output). Accepted
containers:

- a numpy array / tensor: the first axis indexes cases, so ``(n, *spatial)`` integer labels or
  ``(n, K, *spatial)`` floating probabilities;
- a list / tuple of cases, each an array, a tensor or a path (``.npy``, ``.png``/``.tif``/``.bmp``
  label image, ``.nii``/``.nii.gz``); cases may differ in size;
- a single path.

Labels stored as floats (common in NIfTI) are accepted when every value is integral. Every
problem is reported as a ``ValueError`` naming the case and what is wrong: wrong number of
dimensions, empty case, label outside ``[0, K)``, non-integral labels, NaN / negative / unnormalized
probabilities, a probability map whose K differs from the detector's, conditioning of another size.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..core import MAX_FIELD_SIZE
from .volumes import open_label_volume

__all__ = ["MaskCase", "as_cases", "as_cond"]


@dataclass
class MaskCase:
    """One case: ``labels`` int64 ``(*spatial)`` or ``probs`` float32 ``(K, *spatial)`` (exactly one is set)."""

    labels: np.ndarray | None = None
    probs: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.labels.shape) if self.labels is not None else tuple(self.probs.shape[1:])

    def hard_labels(self) -> np.ndarray:
        """Labels, or the argmax of the probabilities."""
        return self.labels if self.labels is not None else self.probs.argmax(axis=0)


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


def _split(X: Any, name: str) -> tuple[list[Any], list[str]]:
    """Containers -> (list of per-case raw items, their names for messages)."""
    if X is None:
        raise ValueError(f"{name}: expected masks, got None")
    if _is_path(X):
        return [X], [f"{name} ({os.fspath(X)})"]
    if isinstance(X, (list, tuple)):
        if len(X) == 0:
            raise ValueError(f"{name}: expected at least one case, got an empty list")
        return list(X), [f"{name}[{i}]" + (f" ({os.fspath(x)})" if _is_path(x) else "") for i, x in enumerate(X)]
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    if isinstance(X, np.ndarray):
        if X.ndim < 1 or X.shape[0] == 0:
            raise ValueError(f"{name}: expected at least one case (first axis = cases), got shape {X.shape}")
        return list(X), [f"{name}[{i}]" for i in range(X.shape[0])]
    raise TypeError(f"{name}: expected a numpy array, tensor, list of cases or a path, got {type(X).__name__}")


def _load(item: Any) -> np.ndarray:
    if isinstance(item, torch.Tensor):
        return item.detach().cpu().numpy()
    if _is_path(item):
        arr = open_label_volume(item)
        return np.asarray(arr[...]) if not isinstance(arr, np.ndarray) else np.asarray(arr)
    return np.asarray(item)


def _check_labels(arr: np.ndarray, num_classes: int | None, where: str) -> np.ndarray:
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ValueError(f"{where}: labels contain NaN or inf")
        if not np.all(np.mod(arr, 1) == 0):
            raise ValueError(f"{where}: expected integer labels, got non-integral values of dtype {arr.dtype} "
                             "(soft probabilities need a class axis: shape (K, *spatial))")
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"{where}: expected integer labels or float probabilities, got dtype {arr.dtype}")
    # Range checks in the stored dtype: a cast first would wrap 2**63 + 5 or 1e30 to a negative int64.
    low = arr.min()
    if low < 0:
        pos = tuple(int(i) for i in np.argwhere(arr < 0)[0])
        raise ValueError(f"{where}: negative label {low.item()!r} at index {pos}")
    high = arr.max()
    if num_classes is not None and high >= num_classes:
        pos = tuple(int(i) for i in np.argwhere(arr >= num_classes)[0])
        raise ValueError(f"{where}: label {high.item()!r} at index {pos} is outside [0, {num_classes}) "
                         f"(the detector was trained with num_classes={num_classes})")
    if high >= MAX_FIELD_SIZE:
        pos = tuple(int(i) for i in np.argwhere(arr >= MAX_FIELD_SIZE)[0])
        raise ValueError(f"{where}: label {high.item()!r} at index {pos} exceeds the largest supported label "
                         f"{MAX_FIELD_SIZE - 1} (at most {MAX_FIELD_SIZE} classes)")
    return arr.astype(np.int64, copy=False)


def _check_probs(arr: np.ndarray, num_classes: int | None, where: str) -> np.ndarray:
    probs = arr.astype(np.float32, copy=False)
    if num_classes is not None and probs.shape[0] != num_classes:
        raise ValueError(f"{where}: probability map has {probs.shape[0]} classes on axis 0, the detector was "
                         f"trained with num_classes={num_classes}")
    if not np.isfinite(probs).all():
        raise ValueError(f"{where}: probabilities contain NaN or inf")
    if probs.min() < 0:
        raise ValueError(f"{where}: probabilities must be >= 0, found {float(probs.min())}")
    total = probs.sum(axis=0)
    if np.abs(total - 1.0).max() > 1e-3:
        raise ValueError(f"{where}: probabilities must sum to 1 over the class axis (max deviation "
                         f"{float(np.abs(total - 1.0).max()):.3g}); pass softmax outputs")
    return probs


def as_cases(X: Any, spatial_dims: int | None, num_classes: int | None = None, name: str = "X",
             allow_probs: bool = True) -> tuple[list[MaskCase], int]:
    """Parse ``X`` into checked cases; returns ``(cases, spatial_dims)``.

    ``spatial_dims=None`` infers 2 or 3 from the first case (an integer case's rank; a floating
    case of rank 3 is a 2-D label map only if its values are integral, so pass ``spatial_dims``
    when giving probability maps to an unfitted detector).
    """
    items, names = _split(X, name)
    cases: list[MaskCase] = []
    for item, where in zip(items, names):
        arr = _load(item)
        if spatial_dims is None:
            spatial_dims = arr.ndim
            if arr.dtype.kind == "f" and arr.ndim == 3 and not np.all(np.mod(arr, 1) == 0):
                spatial_dims = 2
            if spatial_dims not in (2, 3):
                raise ValueError(f"{where}: expected a 2-D mask or 3-D label volume, got shape {arr.shape}")
        if arr.size == 0:
            raise ValueError(f"{where}: empty case of shape {arr.shape}")
        if arr.ndim == spatial_dims:
            cases.append(MaskCase(labels=_check_labels(arr, num_classes, where)))
        elif arr.ndim == spatial_dims + 1 and arr.dtype.kind == "f":
            if not allow_probs:
                raise ValueError(f"{where}: expected integer label maps of rank {spatial_dims} for training, got "
                                 f"a {arr.ndim}-D float array {arr.shape}")
            cases.append(MaskCase(probs=_check_probs(arr, num_classes, where)))
        else:
            raise ValueError(f"{where}: expected labels with {spatial_dims} spatial dims or float probabilities "
                             f"(K, *spatial), got shape {arr.shape} of dtype {arr.dtype}")
    return cases, int(spatial_dims)


def as_cond(cond: Any, cases: Sequence[MaskCase], channels: int, name: str = "cond") -> list[np.ndarray] | None:
    """Per-case conditioning images ``(channels, *spatial)`` float32 matching the cases' shapes."""
    if channels == 0:
        if cond is not None:
            raise ValueError(f"{name}: the detector was fitted without conditioning channels")
        return None
    if cond is None:
        raise ValueError(f"{name}: the detector was fitted with {channels} conditioning channels; pass cond")
    items, names = _split(cond, name)
    if len(items) != len(cases):
        raise ValueError(f"{name}: expected {len(cases)} conditioning images (one per case), got {len(items)}")
    out = []
    for item, where, case in zip(items, names, cases):
        arr = _load(item).astype(np.float32, copy=False)
        if arr.ndim == len(case.shape):
            arr = arr[None]
        if arr.shape[0] != channels or tuple(arr.shape[1:]) != case.shape:
            raise ValueError(f"{where}: expected shape ({channels}, {', '.join(map(str, case.shape))}) to match "
                             f"the case, got {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{where}: contains NaN or inf")
        out.append(arr)
    return out
