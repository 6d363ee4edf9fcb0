"""gnsm detectors: the shared ``BaseDetector`` contract and the detectors built on it.

``GNSMDetector`` (tables), ``SegmentationQC`` (masks and label volumes) and ``HGADDetector`` (feature
vectors); ``ScoreModelDetector`` is the base of the two score-network detectors, ``heads`` the density
heads, ``validation`` the input and parameter checks they share.
"""
from .base import (META_FILE, WEIGHTS_FILE, BaseDetector, contamination_threshold, load_network, resolve_device,
                   sub_state)
from .heads import HEAD_KINDS, DensityHead
from .hgad import HGADDetector
from .score_model import SCORINGS, ScoreModelDetector
from .segmentation import CASE_SCORES, SEG_SCORINGS, SegmentationQC, SegmentationResult
from .tabular import HEADS, GNSMDetector, check_storable_categories
from .validation import (as_float_tensor, check_choice, check_float_param, check_int_param, check_labels,
                         check_n_features, check_same_length)

__all__ = [
    "HEADS",
    "HEAD_KINDS",
    "META_FILE",
    "SCORINGS",
    "SEG_SCORINGS",
    "CASE_SCORES",
    "WEIGHTS_FILE",
    "BaseDetector",
    "DensityHead",
    "GNSMDetector",
    "HGADDetector",
    "ScoreModelDetector",
    "SegmentationQC",
    "SegmentationResult",
    "as_float_tensor",
    "check_choice",
    "check_float_param",
    "check_int_param",
    "check_labels",
    "check_n_features",
    "check_same_length",
    "check_storable_categories",
    "contamination_threshold",
    "load_network",
    "resolve_device",
    "sub_state",
]
