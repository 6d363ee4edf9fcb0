"""Segmentation quality-control evaluation: seeded corruptions with known Dice, the CamVid / spine
evaluations (``gnsm evaluate-seg``) and their reports (``gnsm report-seg``).

- :mod:`.corruptions`: :func:`corrupt` a label map with one of :data:`CORRUPTIONS` at a severity;
- :mod:`.overlap`: :func:`dice_iou` and :func:`error_mask` of a prediction against its ground truth;
- :mod:`.cases`: :func:`make_cases`, seeded evaluation sets of corrupted predictions;
- :mod:`.eval`: :func:`evaluate_camvid`, :func:`evaluate_spine`, the metrics and the
  :class:`PositionalFrequency` baseline;
- :mod:`.report`: :func:`markdown_summary` and the pictures of :func:`write_report`;
- :mod:`.segmenter`, :mod:`.folds`, :mod:`.bootstrap`, :mod:`.real`, :mod:`.real_report`: QC of a real
  segmenter's out-of-fold predictions with the frames (:func:`evaluate_camvid_real`, ``evaluate-seg camvid-real``).
"""
from __future__ import annotations

from .cases import CorruptedCase, dice_histogram, iter_cases, make_cases
from .corruptions import CORRUPTIONS, DEFAULT_SEVERITIES, corrupt
from .eval import (PositionalFrequency, case_metrics, evaluate_camvid, evaluate_spine, summarize_cases,
                   voxel_auroc)
from .overlap import dice_iou, error_mask
from .real import QC_DEFAULTS, REAL_METHODS, evaluate_camvid_real
from .real_report import markdown_real, write_real_figures
from .report import markdown_summary, plot_case, plot_score_vs_dice, write_report
from .segmenter import Segmenter, load_segmenter, predict_probs, save_segmenter, train_segmenter

__all__ = [
    "CORRUPTIONS",
    "CorruptedCase",
    "DEFAULT_SEVERITIES",
    "PositionalFrequency",
    "QC_DEFAULTS",
    "REAL_METHODS",
    "Segmenter",
    "case_metrics",
    "corrupt",
    "dice_histogram",
    "dice_iou",
    "error_mask",
    "evaluate_camvid",
    "evaluate_camvid_real",
    "evaluate_spine",
    "iter_cases",
    "load_segmenter",
    "make_cases",
    "markdown_real",
    "markdown_summary",
    "plot_case",
    "plot_score_vs_dice",
    "predict_probs",
    "save_segmenter",
    "summarize_cases",
    "train_segmenter",
    "voxel_auroc",
    "write_real_figures",
    "write_report",
]
