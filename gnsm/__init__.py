"""gnsm: Gumbel Noise Score Matching for anomaly detection on categorical data.

The import is light on purpose: the compiled ops load with ``gnsm.ops`` (or on first use of a
detector), so pure-Python parts such as the dataset registry work without a build.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
