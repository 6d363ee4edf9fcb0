"""Segmentation quality control: :class:`SegmentationQC` (``detector.py``), its sliding windows
(``windows.py``) and the positional prior / position codes (``positional.py``)."""
from .detector import CASE_SCORES, CASE_STATS, PIXEL_HEADS, SEG_SCORINGS, SegmentationQC, SegmentationResult
from .positional import fit_positional_prior, position_code, positional_nll

__all__ = ["CASE_SCORES", "CASE_STATS", "PIXEL_HEADS", "SEG_SCORINGS", "SegmentationQC", "SegmentationResult",
           "fit_positional_prior", "position_code", "positional_nll"]
