"""Sin-cos positional codes for 2D/3D maps, the condition of per-position density heads.

A per-position head (e.g. HGAD on N-channel norm maps) models the features of every pixel/voxel
with one flow; the positional code tells the flow where a feature vector comes from. The code
splits its channels evenly over the spatial axes; on each axis, channel pairs hold
sin/cos(pos * w_k) with geometric frequencies w_k = temperature^(-2k / channels_per_axis), as in
the Transformer's 1-D code.
"""
from __future__ import annotations

from typing import Sequence

import math

import torch
from torch import Tensor

__all__ = ["sincos_positional_encoding", "positional_encoding_2d", "positional_encoding_3d", "positions_as_rows"]


def sincos_positional_encoding(channels: int, shape: Sequence[int], *, temperature: float = 10000.0,
                               dtype: torch.dtype = torch.float32,
                               device: torch.device | str | None = None) -> Tensor:
    """Positional code of shape ``(channels, *shape)`` for a map with ``len(shape)`` spatial axes.

    ``channels`` must be a multiple of ``2 * len(shape)`` (a sin/cos pair per frequency per axis).
    """
    n_axes = len(shape)
    if n_axes == 0 or any(int(s) < 1 for s in shape):
        raise ValueError(f"shape: expected one or more positive sizes, got {tuple(shape)}")
    if channels < 1 or channels % (2 * n_axes):
        raise ValueError(f"channels: expected a positive multiple of {2 * n_axes} for {n_axes} axes, got {channels}")
    per_axis = channels // n_axes
    exponents = torch.arange(0, per_axis, 2, dtype=torch.float64) / per_axis
    freqs = torch.exp(-math.log(temperature) * exponents)  # (per_axis / 2,)
    codes = []
    for axis, size in enumerate(shape):
        angles = torch.arange(int(size), dtype=torch.float64)[:, None] * freqs[None, :]
        enc = torch.stack([angles.sin(), angles.cos()], dim=2).reshape(int(size), per_axis).T  # (per_axis, size)
        view = [per_axis] + [1] * n_axes
        view[1 + axis] = int(size)
        codes.append(enc.reshape(view).expand(per_axis, *[int(s) for s in shape]))
    return torch.cat(codes, dim=0).to(dtype=dtype, device=device)


def positional_encoding_2d(channels: int, height: int, width: int, **kwargs) -> Tensor:
    """(channels, height, width) sin-cos code; ``channels`` a multiple of 4."""
    return sincos_positional_encoding(channels, (height, width), **kwargs)


def positional_encoding_3d(channels: int, depth: int, height: int, width: int, **kwargs) -> Tensor:
    """(channels, depth, height, width) sin-cos code; ``channels`` a multiple of 6."""
    return sincos_positional_encoding(channels, (depth, height, width), **kwargs)


def positions_as_rows(code: Tensor) -> Tensor:
    """(C, *spatial) -> (prod(spatial), C): one condition row per position, in C-order of the map.

    Matches ``features.reshape(N, -1).T`` for an (N, *spatial) feature map.
    """
    return code.reshape(code.shape[0], -1).T.contiguous()
