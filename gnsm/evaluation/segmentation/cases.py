"""Evaluation sets of corrupted predictions with known Dice / IoU and error mask.

:func:`make_cases` builds an evaluation set: every (map, kind, severity) case draws from its own
``numpy.random.SeedSequence([seed, map_index, kind_code, round(severity * 1e6)])`` (kind codes:
clean 0, then 1..7 in :data:`~gnsm.evaluation.segmentation.corruptions.CORRUPTIONS` order, fixed), so
a case is the same whatever other cases are requested and in whatever order.

Measured on the 101 CamVid val maps (``ignore_index=11``, ``labels=11``, seed 0,
:data:`DEFAULT_SEVERITIES`; 101 clean + 3535 corrupted cases), cases per mean-Dice bin::

    kind              <0.5  0.5-0.7  0.7-0.8  0.8-0.9  0.9-0.95  >=0.95   mean
    clean                0        0        0        0         0     101  1.000
    erosion              0      104      114      115        62     110  0.821
    dilation             5      137       81       96        73     113  0.810
    class_swap          10      105      114      140       101      35  0.797
    missing_object      28      133       90      101        74      79  0.777
    spurious_object      0       46       66      123        89     181  0.880
    blob_noise           0      126      157      130        82      10  0.786
    shift                0       38      103      104        66     194  0.874
    all                 43      689      725      809       547     823  0.826

i.e. 1370 good (Dice >= 0.9), 1534 in between and 732 poor (< 0.7). Mean Dice per severity
(0.1 / 0.25 / 0.45 / 0.7 / 1.0) over all kinds: 0.964 / 0.909 / 0.839 / 0.745 / 0.646.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral
from typing import Iterable, Iterator, Sequence

import numpy as np

from .corruptions import CORRUPTIONS, DEFAULT_SEVERITIES, KIND_CODES, check_kind, check_severity, corrupt
from .overlap import check_ignore_index, check_label_map, dice_iou, error_mask

__all__ = ["CorruptedCase", "dice_histogram", "iter_cases", "make_cases"]


@dataclass
class CorruptedCase:
    """One prediction built from ground-truth map ``index``; ``error`` is computed on access."""

    index: int
    kind: str
    severity: float
    pred: np.ndarray = field(repr=False)
    dice: float
    iou: float
    per_class: dict[int, tuple[float, float]] = field(repr=False)
    n_errors: int
    gt: np.ndarray = field(repr=False)
    ignore_index: int | None = None
    seed_entropy: tuple[int, ...] = ()

    @property
    def error(self) -> np.ndarray:
        """Bool error mask (``pred != gt`` outside ``ignore_index``), the same shape as ``gt``."""
        return error_mask(self.gt, self.pred, self.ignore_index)


def _case_entropy(seed: int, index: int, kind: str, severity: float) -> tuple[int, ...]:
    return (int(seed), int(index), KIND_CODES[kind], int(round(severity * 1_000_000)))


def iter_cases(masks: Sequence[np.ndarray], seed: int, kinds: Iterable[str] = CORRUPTIONS,
               severities: Iterable[float] = DEFAULT_SEVERITIES, ignore_index: int | None = None,
               include_clean: bool = True, *, indices: Iterable[int] | None = None,
               labels: int | Iterable[int] | None = None, spacing: Sequence[float] | None = None,
               classes: Iterable[int] | None = None) -> Iterator[CorruptedCase]:
    """Generator form of :func:`make_cases` (one prediction in memory at a time)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, Integral) or int(seed) < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    kinds = tuple(kinds)
    for k in kinds:
        check_kind(k)
    sev = tuple(check_severity(s) for s in severities)
    ignore = check_ignore_index(ignore_index)
    classes = None if classes is None else tuple(int(c) for c in classes)
    idx = range(len(masks)) if indices is None else [int(i) for i in indices]
    for i in idx:
        if not 0 <= i < len(masks):
            raise ValueError(f"indices: {i} is out of range for {len(masks)} masks")
        gt = check_label_map(np.asarray(masks[i]) if not isinstance(masks[i], np.ndarray) else masks[i],
                         f"masks[{i}]")
        todo = [("clean", 0.0)] if include_clean else []
        todo += [(k, s) for k in kinds for s in sev]
        for kind, s in todo:
            ent = _case_entropy(seed, i, kind, s)
            if kind == "clean":
                pred = gt.copy()
            else:
                rng = np.random.default_rng(np.random.SeedSequence(list(ent)))
                pred = corrupt(gt, kind, s, rng, ignore, spacing=spacing, classes=classes)
            d, j, per = dice_iou(gt, pred, labels, ignore)
            n_err = int(error_mask(gt, pred, ignore).sum())
            yield CorruptedCase(index=i, kind=kind, severity=s, pred=pred, dice=d, iou=j,
                                per_class=per, n_errors=n_err, gt=gt, ignore_index=ignore,
                                seed_entropy=ent)


def make_cases(masks: Sequence[np.ndarray], seed: int, kinds: Iterable[str] = CORRUPTIONS,
               severities: Iterable[float] = DEFAULT_SEVERITIES, ignore_index: int | None = None,
               include_clean: bool = True, *, indices: Iterable[int] | None = None,
               labels: int | Iterable[int] | None = None, spacing: Sequence[float] | None = None,
               classes: Iterable[int] | None = None) -> list[CorruptedCase]:
    """Corrupted predictions with known Dice / IoU / error mask for each ground-truth map.

    For each map in ``indices`` (default: all), in order: a ``"clean"`` case (severity 0, the
    ground truth itself) if ``include_clean``, then every ``kind`` x ``severity``. Each case is
    seeded by ``SeedSequence([seed, index, kind_code, round(severity * 1e6)])`` (kind codes are
    fixed: clean 0, then 1.. in :data:`CORRUPTIONS` order), so it does not depend on which other
    cases are requested or their order. ``labels`` and ``ignore_index`` go to :func:`dice_iou`;
    ``spacing`` and ``classes`` to :func:`corrupt`. ``case.gt`` is the input map itself (not a copy).
    """
    return list(iter_cases(masks, seed, kinds, severities, ignore_index, include_clean,
                           indices=indices, labels=labels, spacing=spacing, classes=classes))


def dice_histogram(cases: Iterable[CorruptedCase],
                   edges: Sequence[float] = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0)) -> dict[str, list[int]]:
    """Counts of cases per mean-Dice bin, per kind and ``"all"``; the last bin includes 1.0."""
    edges = np.asarray(edges, dtype=np.float64)
    out: dict[str, list[int]] = {}
    allv: list[float] = []
    by: dict[str, list[float]] = {}
    for c in cases:
        by.setdefault(c.kind, []).append(c.dice)
        allv.append(c.dice)
    for k, v in [*by.items(), ("all", allv)]:
        b = np.clip(np.searchsorted(edges, np.asarray(v), side="right") - 1, 0, len(edges) - 2)
        out[k] = np.bincount(b, minlength=len(edges) - 1).tolist()
    return out
