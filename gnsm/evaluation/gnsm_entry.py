"""Registers the GNSM detectors with the evaluation registry.

``"gnsm"``: :class:`~gnsm.detectors.gnsm_detector.GNSMDetector` with the package defaults (summed
denoising error, clip eps = 0.01); ``"gnsm-paper"``: the paper's configuration (eps = 1e-5, score norms
at all temperatures + GMM).
Both take the raw DataFrame (``input_kind="frame"``) and do their own encoding, and use the protocol's
validation inliers (``fit(X, X_val=...)``) for the head's held-out likelihood. Importing this module is
enough; :func:`register` is idempotent.
"""
from __future__ import annotations

from typing import Any

from .baselines import register_detector

__all__ = ["register", "make_gnsm", "make_gnsm_paper"]


def make_gnsm(seed: int = 42, **params: Any):
    """GNSMDetector with the package defaults, seeded by the protocol seed."""
    from ..detectors.tabular import GNSMDetector
    return GNSMDetector(random_state=seed, **params)


def make_gnsm_paper(seed: int = 42):
    """GNSMDetector in the paper's configuration: clip eps = 1e-5, score norms + GMM."""
    return make_gnsm(seed, scoring="paper", eps=1e-5)


def register() -> None:
    register_detector("gnsm", make_gnsm, "frame",
                      "GNSMDetector defaults: summed denoising error (eps=0.01)", replace=True)
    register_detector("gnsm-paper", make_gnsm_paper, "frame",
                      "GNSMDetector scoring='paper', eps=1e-5: score norms at all temperatures + GMM", replace=True)


register()
