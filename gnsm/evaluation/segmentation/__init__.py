"""Segmentation quality-control evaluation: seeded corruptions with known Dice, the CamVid / spine
evaluations (``gnsm evaluate-seg``) and their reports (``gnsm report-seg``).

- :mod:`.corruptions`: :func:`corrupt` a label map with one of :data:`CORRUPTIONS` at a severity;
- :mod:`.overlap`: :func:`dice_iou` and :func:`error_mask` of a prediction against its ground truth;
- :mod:`.cases`: :func:`make_cases`, seeded evaluation sets of corrupted predictions;
- :mod:`.eval`: :func:`evaluate_camvid`, :func:`evaluate_spine`, the metrics and the
  :class:`PositionalFrequency` baseline;
- :mod:`.report`: :func:`markdown_summary` and the pictures of :func:`write_report`.
"""
from __future__ import annotations

from .cases import CorruptedCase, dice_histogram, iter_cases, make_cases
from .corruptions import CORRUPTIONS, DEFAULT_SEVERITIES, corrupt
from .eval import (PositionalFrequency, case_metrics, evaluate_camvid, evaluate_spine, summarize_cases,
                   voxel_auroc)
from .overlap import dice_iou, error_mask
from .report import markdown_summary, plot_case, plot_score_vs_dice, write_report

__all__ = [
    "CORRUPTIONS",
    "CorruptedCase",
    "DEFAULT_SEVERITIES",
    "PositionalFrequency",
    "case_metrics",
    "corrupt",
    "dice_histogram",
    "dice_iou",
    "error_mask",
    "evaluate_camvid",
    "evaluate_spine",
    "iter_cases",
    "make_cases",
    "markdown_summary",
    "plot_case",
    "plot_score_vs_dice",
    "summarize_cases",
    "voxel_auroc",
    "write_report",
]
