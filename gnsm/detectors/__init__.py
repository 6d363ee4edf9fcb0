"""gnsm detectors: the shared ``BaseDetector`` contract and the detectors built on it."""
from .base import BaseDetector
from .tabular import GNSMDetector
from .hgad import HGADDetector
from .segmentation import SegmentationQC, SegmentationResult

__all__ = ["BaseDetector", "GNSMDetector", "HGADDetector", "SegmentationQC", "SegmentationResult"]
