"""Evaluation: the paper's protocol, PyOD and frequency baselines, metrics and reports.

PyOD and matplotlib are imported only when a baseline is built or a plot is drawn.
"""
from __future__ import annotations

from .baselines import (
    CategoryFrequency,
    DetectorSpec,
    PyODDetector,
    get_detector_spec,
    list_detectors,
    make_detector,
    register_detector,
)
from .metrics import auroc, average_precision, mean_std
from .protocol import (
    SEEDS,
    ProtocolResult,
    Split,
    evaluate,
    evaluate_main,
    run_protocol,
    split_inliers,
)
from .report import markdown_report, markdown_table, plot_roc_curves, write_json

__all__ = [
    "CategoryFrequency",
    "DetectorSpec",
    "ProtocolResult",
    "PyODDetector",
    "SEEDS",
    "Split",
    "auroc",
    "average_precision",
    "evaluate",
    "evaluate_main",
    "get_detector_spec",
    "list_detectors",
    "make_detector",
    "markdown_report",
    "markdown_table",
    "mean_std",
    "plot_roc_curves",
    "register_detector",
    "run_protocol",
    "split_inliers",
    "write_json",
]

# Registers "gnsm" and "gnsm-paper" (their factories import the detector lazily).
from . import gnsm_entry  # noqa: E402,F401
