"""Evaluation: the paper's protocol, the detector registry with PyOD / frequency / GNSM entries,
metrics, reports, the unified (multi-class) protocol, and segmentation QC (:mod:`.segmentation`).

PyOD and matplotlib are imported only when a baseline is built or a plot is drawn; the GNSM
detector only when ``"gnsm"`` / ``"gnsm-paper"`` is built.
"""
from __future__ import annotations

from .baselines import (
    PYOD_BASELINES,
    CategoryFrequency,
    DetectorSpec,
    PyODDetector,
    get_detector_spec,
    list_detectors,
    make_detector,
    make_gnsm,
    make_gnsm_paper,
    register_detector,
)
from .metrics import auroc, average_precision, mean_std
from .protocol import SEEDS, ProtocolResult, Split, evaluate, run_protocol, split_inliers
from .report import markdown_report, markdown_table, plot_roc_curves, write_json

__all__ = [
    "CategoryFrequency",
    "DetectorSpec",
    "PYOD_BASELINES",
    "ProtocolResult",
    "PyODDetector",
    "SEEDS",
    "Split",
    "auroc",
    "average_precision",
    "evaluate",
    "get_detector_spec",
    "list_detectors",
    "make_detector",
    "make_gnsm",
    "make_gnsm_paper",
    "markdown_report",
    "markdown_table",
    "mean_std",
    "plot_roc_curves",
    "register_detector",
    "run_protocol",
    "split_inliers",
    "write_json",
]
