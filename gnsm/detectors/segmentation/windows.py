"""Sliding windows over a case: window starts with 50% overlap and the triangular blending weight.

A case larger than the scoring window is cut into windows whose starts come from
:func:`window_starts` (the last window is flush with the far edge); their outputs are summed with
the weight :func:`blend_weight` and divided by the summed weight, so seams fade smoothly.
"""
from __future__ import annotations

import itertools
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["window_starts", "ramp", "blend_weight", "window_grid"]


def window_starts(size: int, window: int) -> list[int]:
    """Starts of windows of length ``window`` covering ``size`` cells with (about) 50% overlap."""
    if size <= window:
        return [0]
    stride = max(window // 2, 1)
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def ramp(window: int, size: int) -> Tensor:
    """Triangular 1-D blending weight (never zero, so every voxel gets a weight)."""
    n = min(window, size)
    x = torch.arange(n, dtype=torch.float32)
    return torch.minimum(x + 1, n - x).clamp_max(max(n // 4, 1)) / max(n // 4, 1)


def blend_weight(window: Sequence[int], shape: Sequence[int]) -> Tensor:
    """The separable blending weight of one window: the outer product of the per-axis ramps."""
    ramps = [ramp(w, n) for w, n in zip(window, shape)]
    weight = ramps[0]
    for r in ramps[1:]:
        weight = weight.unsqueeze(-1) * r
    return weight


def window_grid(shape: Sequence[int], window: Sequence[int]) -> list[tuple[slice, ...]]:
    """The spatial slices of every window covering ``shape``."""
    starts = itertools.product(*[window_starts(n, w) for n, w in zip(shape, window)])
    return [tuple(slice(s, s + w) for s, w in zip(st, window)) for st in starts]
