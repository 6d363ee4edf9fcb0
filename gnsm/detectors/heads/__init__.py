"""Density heads: per-sample feature vectors -> anomaly scores (higher = more anomalous).

``DensityHead`` (``density.py``) wraps the kinds in ``HEAD_KINDS`` (GMM, KDE, k-NN, HGAD, the summed
features); ``hgad.py`` holds the HGAD flow head (``fit_hgad_head`` -> ``HGADHead``) it and
``HGADDetector`` use.
"""
from .density import HEAD_KINDS, DensityHead, blas_limit
from .hgad import HEAD_OPTIONS, HGADHead, HGADModel, choose_pseudo_classes, fit_hgad_head, train_hgad

__all__ = ["HEAD_KINDS", "HEAD_OPTIONS", "DensityHead", "HGADHead", "HGADModel", "blas_limit",
           "choose_pseudo_classes", "fit_hgad_head", "train_hgad"]
