"""Normalizing flows written for gnsm's density heads (no flow library needed)."""
from .coupling import AffineCouplingBlock, CouplingFlow, random_orthogonal
from .mixture_prior import DEFAULT_RADIUS, HALF_LOG_2PI, HierarchicalGaussianPrior, hgad_losses, init_class_centres
from .positional import positional_encoding_2d, positional_encoding_3d, positions_as_rows, sincos_positional_encoding

__all__ = [
    "DEFAULT_RADIUS",
    "HALF_LOG_2PI",
    "AffineCouplingBlock",
    "CouplingFlow",
    "HierarchicalGaussianPrior",
    "hgad_losses",
    "init_class_centres",
    "positional_encoding_2d",
    "positional_encoding_3d",
    "positions_as_rows",
    "random_orthogonal",
    "sincos_positional_encoding",
]
