"""Temperature conditioning shared by every score network: an embedding of log(tau) and FiLM.

Networks are conditioned on the continuous log temperature rather than a schedule index, so a
trained model can be evaluated at any temperature inside (and near) the range it was trained on.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class LogTauEmbedding(nn.Module):
    """Fourier features of log(tau) followed by a two-layer MLP: ``(B,) -> (B, dim)``.

    ``log_tau`` is first mapped affinely so that ``[log tau_min, log tau_max]`` lands on ``[-1, 1]``;
    the sinusoids then use geometric frequencies ``pi * 2^k`` (k = 0..num_frequencies-1), which
    resolve neighbouring temperatures of a 20-level schedule without aliasing over the range.
    """

    def __init__(self, dim: int = 128, num_frequencies: int = 8, tau_min: float = 2.0, tau_max: float = 20.0):
        super().__init__()
        if dim < 1 or num_frequencies < 1:
            raise ValueError(f"LogTauEmbedding: dim and num_frequencies must be >= 1, got {dim}, {num_frequencies}")
        lo, hi = math.log(tau_min), math.log(tau_max)
        self.center = 0.5 * (lo + hi)
        self.half_width = max(0.5 * abs(hi - lo), 1e-3)
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(num_frequencies, dtype=torch.float32),
                             persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * num_frequencies + 1, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, log_tau: torch.Tensor) -> torch.Tensor:
        if log_tau.dim() != 1:
            raise ValueError(f"log_tau: expected shape (B,), got {tuple(log_tau.shape)}")
        u = ((log_tau.float() - self.center) / self.half_width).unsqueeze(1)
        ang = u * self.freqs
        return self.mlp(torch.cat([u, torch.sin(ang), torch.cos(ang)], dim=1))


class FiLM(nn.Module):
    """Feature-wise affine modulation ``x * (1 + scale) + shift`` from a conditioning vector.

    The projection starts at zero, so an untrained FiLM is the identity. ``channel_dim`` says where
    the features are (1 for ``(B, C, *spatial)`` maps, -1 for ``(B, ..., F)`` token/feature tensors).
    ``emb`` is ``(B, cond_dim)``, or ``(1, cond_dim)`` for one conditioning shared by the whole batch.
    """

    def __init__(self, cond_dim: int, features: int, channel_dim: int = -1):
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * features)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.channel_dim = channel_dim

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.proj(emb).chunk(2, dim=-1)
        if self.channel_dim == 1:
            shape = (emb.shape[0], -1) + (1,) * (x.dim() - 2)
        else:
            shape = (emb.shape[0],) + (1,) * (x.dim() - 2) + (-1,)
        return x * (1 + scale.reshape(shape).to(x.dtype)) + shift.reshape(shape).to(x.dtype)
