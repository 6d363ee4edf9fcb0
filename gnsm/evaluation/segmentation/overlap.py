"""Overlap of a predicted label map with its ground truth: error mask, per-class and mean Dice / IoU.

Scores (:func:`dice_iou`): per class ``c``, over the pixels whose ground truth is not
``ignore_index``, ``dice_c = 2 |G_c & P_c| / (|G_c| + |P_c|)`` and
``iou_c = |G_c & P_c| / |G_c | P_c|``. The mean Dice / IoU averages over the classes present in
the ground truth or in the prediction on those pixels (``ignore_index`` excluded; a class absent
from both is skipped, so it neither helps nor hurts).
"""
from __future__ import annotations

from numbers import Integral
from typing import Iterable

import numpy as np

__all__ = ["check_ignore_index", "check_label_map", "dice_iou", "error_mask"]


def check_label_map(mask, name: str = "mask") -> np.ndarray:
    """``mask`` itself when it is a non-empty numpy array of integer (or bool) labels; else a ValueError."""
    if not isinstance(mask, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array of integer labels, got {type(mask).__name__}")
    if mask.dtype != np.bool_ and not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"{name}: expected integer labels, got dtype {mask.dtype} "
                         "(round or argmax soft predictions first)")
    if mask.ndim < 1 or mask.size == 0:
        raise ValueError(f"{name}: expected a non-empty array with at least one axis, got shape {mask.shape}")
    return mask


def check_ignore_index(ignore_index) -> int | None:
    """``ignore_index`` as an int (or None); a ValueError naming it for anything else."""
    if ignore_index is None:
        return None
    if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index, Integral):
        raise ValueError(f"ignore_index: expected an integer or None, got {ignore_index!r}")
    return int(ignore_index)


def error_mask(gt: np.ndarray, pred: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
    """Bool map of the wrong pixels: ``pred != gt`` where ``gt`` is not ``ignore_index``."""
    gt, pred = _check_pair(gt, pred)
    ignore = check_ignore_index(ignore_index)
    err = gt != pred
    if ignore is not None:
        err &= gt != ignore
    return err


def _check_pair(gt, pred):
    gt = check_label_map(gt, "gt")
    pred = check_label_map(pred, "pred")
    if gt.shape != pred.shape:
        raise ValueError(f"pred: shape {pred.shape} differs from gt shape {gt.shape}")
    return gt, pred


def dice_iou(gt: np.ndarray, pred: np.ndarray, labels: int | Iterable[int] | None = None,
             ignore_index: int | None = None) -> tuple[float, float, dict[int, tuple[float, float]]]:
    """Mean Dice, mean IoU and per-class ``{label: (dice, iou)}`` of ``pred`` against ``gt``.

    Only pixels whose ground truth is not ``ignore_index`` count (a prediction of ``ignore_index``
    there is simply wrong). The means average over the classes present in ``gt`` or ``pred`` on
    those pixels, ``ignore_index`` excluded; a class absent from both is skipped. The per-class
    dict holds exactly the averaged classes. With no valid pixel at all the means are ``nan``.

    Args:
        labels: the label set, as a number of classes ``K`` (labels ``0..K-1``) or a sequence of
            labels; a ground-truth or predicted value outside it (other than ``ignore_index``)
            raises ``ValueError``. ``None``: whatever labels occur.
    """
    gt, pred = _check_pair(gt, pred)
    ignore = check_ignore_index(ignore_index)
    if gt.dtype == np.bool_:
        gt = gt.view(np.uint8)
    if pred.dtype == np.bool_:
        pred = pred.view(np.uint8)
    if ignore is not None:
        valid = gt != ignore
        g, p = gt[valid], pred[valid]
    else:
        g, p = gt.ravel(), pred.ravel()
    if labels is None:
        classes = np.union1d(_distinct(g), _distinct(p))
    else:
        if isinstance(labels, Integral) and not isinstance(labels, (bool, np.bool_)):
            if int(labels) < 1:
                raise ValueError(f"labels: expected a positive number of classes, got {labels}")
            classes = np.arange(int(labels), dtype=np.int64)
        else:
            classes = np.unique(np.asarray(list(labels), dtype=np.int64))
    if ignore is not None:
        classes = classes[classes != ignore]
    k = classes.size
    gi = _lookup(g, classes, "gt", ignore=None)
    pi = _lookup(p, classes, "pred", ignore=ignore)
    if k == 0 or g.size == 0:
        return float("nan"), float("nan"), {}
    gcount = np.bincount(gi, minlength=k + 1)[:k]
    pcount = np.bincount(pi, minlength=k + 1)[:k]       # id k = predicted ignore_index
    inter = np.bincount(gi[gi == pi], minlength=k + 1)[:k]
    union = gcount + pcount - inter
    used = (gcount + pcount) > 0
    dice = 2.0 * inter[used] / (gcount[used] + pcount[used])
    iou = inter[used] / union[used]
    per = {int(c): (float(d), float(j)) for c, d, j in zip(classes[used], dice, iou)}
    return float(dice.mean()), float(iou.mean()), per


def _distinct(values: np.ndarray) -> np.ndarray:
    if values.size and int(values.min()) >= 0 and int(values.max()) < 1 << 16:
        return np.flatnonzero(np.bincount(values.ravel())).astype(np.int64)
    return np.unique(values).astype(np.int64)


def _lookup(values: np.ndarray, classes: np.ndarray, name: str, ignore) -> np.ndarray:
    """Index of each value in ``classes``; ``ignore`` maps to ``len(classes)``; others raise."""
    k = classes.size
    if values.size and int(values.min()) >= 0 and int(values.max()) < 1 << 16:
        top = int(values.max()) + 1
        lut = np.full(top, -1, dtype=np.int64)
        inside = classes[(classes >= 0) & (classes < top)]
        lut[inside] = np.searchsorted(classes, inside)
        if ignore is not None and 0 <= ignore < top:
            lut[ignore] = k
        pos = lut[values]
        ok = pos >= 0
    else:
        pos = np.searchsorted(classes, values)
        ok = pos < k
        ok[ok] = classes[pos[ok]] == values[ok]
        if ignore is not None:
            is_ign = values == ignore
            pos[is_ign] = k
            ok |= is_ign
    if not ok.all():
        bad = np.unique(values[~ok])[:10]
        raise ValueError(f"{name}: label value(s) {bad.tolist()} not in labels {classes.tolist()}")
    return pos
