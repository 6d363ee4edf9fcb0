"""UNet score network for masks and label volumes, generic in ``spatial_dims`` (2 or 3).

Input ``y`` is ``(B, C, *spatial)`` (C = K for a mask, or the sum over fields); optional extra
conditioning channels (``cond``, e.g. the image a mask belongs to) are concatenated to the input
only and get no score output. Every residual block is GroupNorm -> SiLU -> conv with FiLM from the
log-tau embedding. Sizes that are not multiples of ``2 ** (levels - 1)`` are replicate-padded on
the high side and the output is cropped back, so any size >= 1 works.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core import FieldLayout
from .conditioning import FiLM, LogTauEmbedding


def _conv(dims: int):
    return nn.Conv3d if dims == 3 else nn.Conv2d


def _groups(channels: int, groups: int) -> int:
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g


class _GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that also accepts a group holding a single value (a 1-voxel deepest level with
    one channel per group, batch 1): the normalized value is 0, as the formula gives, where
    ``F.group_norm`` refuses such an input in training. Same parameters, same state dict."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.group_norm(x, self.num_groups, self.weight, self.bias, self.eps,
                                torch.backends.cudnn.enabled)


class _ResBlock(nn.Module):
    def __init__(self, dims: int, cin: int, cout: int, emb_dim: int, groups: int):
        super().__init__()
        conv = _conv(dims)
        self.norm1 = _GroupNorm(_groups(cin, groups), cin)
        self.conv1 = conv(cin, cout, 3, padding=1)
        self.norm2 = _GroupNorm(_groups(cout, groups), cout)
        self.film = FiLM(emb_dim, cout, channel_dim=1)
        self.conv2 = conv(cout, cout, 3, padding=1)
        self.skip = conv(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.film(self.norm2(h), emb)))
        return self.skip(x) + h


class UNet(nn.Module):
    """``forward(y, log_tau, cond=None)``: ``y`` (B, C, *spatial) -> (B, C, *spatial) raw logits per field."""

    def __init__(self, field_sizes: int | Sequence[int], spatial_dims: int = 3, cond_channels: int = 0,
                 channels: Sequence[int] = (16, 32, 64), num_res_blocks: int = 1, emb_dim: int = 128,
                 groups: int = 8, tau_min: float = 2.0, tau_max: float = 20.0):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims: expected 2 or 3, got {spatial_dims}")
        if len(channels) < 1:
            raise ValueError("channels: expected at least one level")
        layout = FieldLayout.from_sizes(field_sizes)
        self.field_sizes = layout.field_sizes
        self.num_numerical = 0
        self.spatial_dims = spatial_dims
        self.cond_channels = int(cond_channels)
        channels = [int(c) for c in channels]
        self._config = dict(field_sizes=self.field_sizes, spatial_dims=spatial_dims, cond_channels=cond_channels,
                            channels=channels, num_res_blocks=num_res_blocks, emb_dim=emb_dim, groups=groups,
                            tau_min=tau_min, tau_max=tau_max)
        conv = _conv(spatial_dims)
        self.out_channels = layout.width
        self.embed = LogTauEmbedding(emb_dim, tau_min=tau_min, tau_max=tau_max)
        self.stem = conv(self.out_channels + self.cond_channels, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i, c in enumerate(channels):
            cin = channels[max(i - 1, 0)]
            blocks = [_ResBlock(spatial_dims, cin if b == 0 else c, c, emb_dim, groups) for b in range(num_res_blocks)]
            self.down.append(nn.ModuleList(blocks))
            if i < len(channels) - 1:
                self.downsample.append(conv(c, c, 3, stride=2, padding=1))
        self.mid = _ResBlock(spatial_dims, channels[-1], channels[-1], emb_dim, groups)
        self.up = nn.ModuleList()
        for i in reversed(range(len(channels) - 1)):
            c = channels[i]
            blocks = [_ResBlock(spatial_dims, channels[i + 1] + c if b == 0 else c, c, emb_dim, groups)
                      for b in range(num_res_blocks)]
            self.up.append(nn.ModuleList(blocks))
        self.out_norm = _GroupNorm(_groups(channels[0], groups), channels[0])
        self.out = conv(channels[0], self.out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.multiple = 2 ** (len(channels) - 1)

    def config(self) -> dict:
        return {"name": "unet", **self._config}

    def forward(self, y: torch.Tensor, log_tau: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if y.dim() != 2 + self.spatial_dims or y.shape[1] != self.out_channels:
            raise ValueError(f"y: expected shape (B, {self.out_channels}, {self.spatial_dims} spatial dims), "
                             f"got {tuple(y.shape)}")
        if self.cond_channels:
            if cond is None or cond.shape[1] != self.cond_channels or cond.shape[2:] != y.shape[2:]:
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(f"cond: expected shape (B, {self.cond_channels}, {tuple(y.shape[2:])}), got {got}")
            x = torch.cat([y, cond.to(y.dtype)], dim=1)
        elif cond is not None:
            raise ValueError("cond: this UNet was built with cond_channels=0")
        else:
            x = y
        size = x.shape[2:]
        pad = []
        for s in reversed(size):
            pad += [0, (-s) % self.multiple]
        if any(pad):
            x = F.pad(x, pad, mode="replicate")
        emb = F.silu(self.embed(log_tau))
        h = self.stem(x)
        skips = []
        for i, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
            if i < len(self.downsample):
                skips.append(h)
                h = self.downsample[i](h)
        h = self.mid(h, emb)
        for blocks in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[2:], mode="nearest")
            h = torch.cat([h, skip], dim=1)
            for block in blocks:
                h = block(h, emb)
        out = self.out(F.silu(self.out_norm(h)))
        if any(pad):
            out = out[(slice(None), slice(None)) + tuple(slice(0, s) for s in size)]
        return out
