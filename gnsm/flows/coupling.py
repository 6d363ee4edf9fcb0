"""Affine coupling normalizing flow with exact log-determinant and exact inverse.

Written for gnsm's density heads (HGAD) without a flow library. One ``AffineCouplingBlock`` maps
x -> y in three steps:

1. coupling: split x = [x1, x2]; a subnet MLP on [x1, cond] gives (a, t); with the soft-clamped
   log-scale s = alpha * tanh(a / alpha), x2 <- x2 * exp(s) + t  (log-det sum(s));
2. global affine ("ActNorm-like"): y <- y * exp(g) + b with learnable per-channel g, b (log-det sum(g));
3. mixing: y <- y @ Q^T with a fixed random orthogonal Q (|det Q| = 1, log-det 0), so that every
   feature is transformed by some later block.

The soft clamp bounds each block's log-scale to (-alpha, alpha), which keeps training stable; the
subnet's last layer starts at zero so a fresh flow is the identity up to the mixing rotations.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["AffineCouplingBlock", "CouplingFlow", "random_orthogonal"]


def random_orthogonal(dim: int, generator: torch.Generator | None = None) -> Tensor:
    """A Haar-random ``dim x dim`` orthogonal matrix (float64), from the QR of a Gaussian matrix."""
    a = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    # Sign fix makes the distribution uniform over O(dim) rather than biased by the QR convention.
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1.0
    return q * signs


def _mlp(n_in: int, n_out: int, hidden_dim: int, n_hidden_layers: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(n_hidden_layers):
        layers += [nn.Linear(width, hidden_dim), nn.ReLU()]
        width = hidden_dim
    last = nn.Linear(width, n_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


class AffineCouplingBlock(nn.Module):
    """Coupling + global affine + fixed orthogonal mixing (see the module docstring).

    Args:
        dim: number of features D (>= 1; with D = 1 the subnet sees only ``cond``, or a constant).
        cond_dim: size of the optional condition vector (0: unconditional).
        hidden_dim: width of the subnet's hidden layers.
        n_hidden_layers: number of hidden layers of the subnet.
        clamp: alpha of the soft clamp alpha * tanh(a / alpha) on the log-scale.
        mixing: the fixed orthogonal D x D matrix; drawn at random when ``None``.
    """

    def __init__(self, dim: int, cond_dim: int = 0, hidden_dim: int = 128, n_hidden_layers: int = 1,
                 clamp: float = 2.0, mixing: Tensor | None = None) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim: expected >= 1, got {dim}")
        if clamp <= 0:
            raise ValueError(f"clamp: expected > 0, got {clamp}")
        self.dim, self.cond_dim, self.clamp = dim, cond_dim, float(clamp)
        self.split = dim // 2  # x1 = x[:, :split] conditions x2 = x[:, split:]
        self.n_in = self.split + cond_dim
        self.subnet = _mlp(max(self.n_in, 1), 2 * (dim - self.split), hidden_dim, n_hidden_layers)
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.offset = nn.Parameter(torch.zeros(dim))
        if mixing is None:
            mixing = random_orthogonal(dim)
        if mixing.shape != (dim, dim):
            raise ValueError(f"mixing: expected shape ({dim}, {dim}), got {tuple(mixing.shape)}")
        self.register_buffer("mixing", mixing.to(torch.get_default_dtype()))

    def _scale_shift(self, x1: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        parts = [x1] if cond is None else [x1, cond]
        h = torch.cat(parts, dim=1)
        if self.n_in == 0:  # nothing to condition on: a learnable constant affine map
            h = h.new_ones(h.shape[0], 1)
        a, t = self.subnet(h).chunk(2, dim=1)
        s = self.clamp * torch.tanh(a / self.clamp)
        return s, t

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (N, D) -> (y (N, D), log|det dy/dx| (N,))."""
        x1, x2 = x[:, : self.split], x[:, self.split:]
        s, t = self._scale_shift(x1, cond)
        y = torch.cat([x1, x2 * torch.exp(s) + t], dim=1)
        y = y * torch.exp(self.log_scale) + self.offset
        log_det = s.sum(dim=1) + self.log_scale.sum()
        return y @ self.mixing.T, log_det

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> Tensor:
        """Exact inverse of ``forward``."""
        # Solve rather than multiply by Q^T: Q rounded to float32 is orthogonal only to ~1e-7,
        # and the transpose's error would be amplified by the later blocks' inverses.
        y = torch.linalg.solve(self.mixing, y.T).T
        y = (y - self.offset) * torch.exp(-self.log_scale)
        x1, y2 = y[:, : self.split], y[:, self.split:]
        s, t = self._scale_shift(x1, cond)
        return torch.cat([x1, (y2 - t) * torch.exp(-s)], dim=1)


class CouplingFlow(nn.Module):
    """A stack of ``AffineCouplingBlock``s: x -> z with exact log-determinant and inverse.

    Args:
        dim: number of features D.
        n_blocks: number of coupling blocks.
        cond_dim: size of the optional condition (e.g. a positional code); 0 for none.
        hidden_dim, n_hidden_layers, clamp: passed to every block.
        seed: seed of the fixed orthogonal mixing matrices (they are buffers, so saved with the
            state dict; the seed only matters for a fresh model).
    """

    def __init__(self, dim: int, n_blocks: int = 8, cond_dim: int = 0, hidden_dim: int = 128,
                 n_hidden_layers: int = 1, clamp: float = 2.0, seed: int = 0) -> None:
        super().__init__()
        if n_blocks < 1:
            raise ValueError(f"n_blocks: expected >= 1, got {n_blocks}")
        if cond_dim < 0:
            raise ValueError(f"cond_dim: expected >= 0, got {cond_dim}")
        self.dim, self.cond_dim = dim, cond_dim
        gen = torch.Generator().manual_seed(int(seed))
        self.blocks = nn.ModuleList(
            AffineCouplingBlock(dim, cond_dim, hidden_dim, n_hidden_layers, clamp, random_orthogonal(dim, gen))
            for _ in range(n_blocks)
        )

    def _check(self, x: Tensor, cond: Tensor | None) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x: expected shape (N, {self.dim}), got {tuple(x.shape)}")
        if self.cond_dim == 0 and cond is not None:
            raise ValueError("cond: this flow was built with cond_dim=0 and takes no condition")
        if self.cond_dim > 0:
            if cond is None:
                raise ValueError(f"cond: expected a tensor of shape (N, {self.cond_dim}), got None")
            if cond.shape != (x.shape[0], self.cond_dim):
                raise ValueError(f"cond: expected shape ({x.shape[0]}, {self.cond_dim}), got {tuple(cond.shape)}")

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (N, D) -> (z (N, D), log|det dz/dx| (N,))."""
        self._check(x, cond)
        log_det = x.new_zeros(x.shape[0])
        for block in self.blocks:
            x, ld = block(x, cond)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        """z (N, D) -> x (N, D), the exact inverse of ``forward``."""
        self._check(z, cond)
        for block in reversed(self.blocks):
            z = block.inverse(z, cond)
        return z
