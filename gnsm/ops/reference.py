"""Plain-PyTorch implementation of the method (docs/design.md, section 1): the oracle for the fused ops' tests and the
"eager" / "compiled" baselines of the benchmarks.

Everything here works on explicit tensors (the Gumbel noise ``g`` is an argument), materializes the
one-hot and every intermediate, and favours clarity over speed. Layout: fields side by side along
dim 1, ``(B, C, *spatial)`` with ``C = sum(field_sizes)``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

DEFAULT_EPS = 1e-5


def _split(x: torch.Tensor, field_sizes: Sequence[int]) -> tuple[torch.Tensor, ...]:
    return torch.split(x, list(field_sizes), dim=1)


def _tau_view(tau: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """tau (B,) or a scalar, shaped to broadcast against (B, C, *spatial)."""
    tau = torch.as_tensor(tau, dtype=x.dtype, device=x.device)
    if tau.dim() == 0:
        return tau
    return tau.reshape(-1, *([1] * (x.dim() - 1)))


def per_field(fn, x: torch.Tensor, field_sizes: Sequence[int]) -> torch.Tensor:
    """Apply ``fn`` (a function over dim 1) to each field and put the fields back side by side."""
    return torch.cat([fn(part) for part in _split(x, field_sizes)], dim=1)


def logits_from_labels(labels: torch.Tensor, field_sizes: Sequence[int], eps: float = DEFAULT_EPS,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Class logits a = log(clip(onehot(c), eps, 1)) of integer labels (B, J, *spatial) -> (B, C, *spatial)."""
    parts = []
    for j, k in enumerate(field_sizes):
        onehot = F.one_hot(labels[:, j].long(), int(k)).movedim(-1, 1).to(dtype)
        parts.append(torch.log(onehot.clamp(eps, 1.0)))
    return torch.cat(parts, dim=1)


def logits_from_probs(probs: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Soft inputs (a segmenter's probabilities): a = log(clip(p, eps, 1))."""
    return torch.log(probs.clamp(eps, 1.0))


def sample_gumbel(shape: Sequence[int], generator: torch.Generator | None = None,
                  device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The paper's Gumbel draw: -log(-log(U + 1e-20) + 1e-20), U uniform on [0, 1)."""
    u = torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype)
    return -torch.log(-torch.log(u + 1e-20) + 1e-20)


def relax(a: torch.Tensor, g: torch.Tensor, tau: torch.Tensor | float, field_sizes: Sequence[int]) -> torch.Tensor:
    """Log-space Concrete sample y = (a + g)/tau - logsumexp((a + g)/tau) per field (DESIGN 1.2)."""
    z = (a + g) / _tau_view(tau, a)
    return per_field(lambda part: torch.log_softmax(part, dim=1), z, field_sizes)


def relax_from_labels(labels: torch.Tensor, field_sizes: Sequence[int], tau: torch.Tensor | float,
                      g: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Relaxed sample of hard labels (B, J, *spatial) given the noise g (B, C, *spatial)."""
    return relax(logits_from_labels(labels, field_sizes, eps, dtype=g.dtype), g, tau, field_sizes)


def target_score(g: torch.Tensor, tau: torch.Tensor | float, field_sizes: Sequence[int]) -> torch.Tensor:
    """Closed-form target given the noise: t = tau * (K softmax(-g) - 1) per field (DESIGN 1.3)."""
    t = per_field(lambda part: part.shape[1] * torch.softmax(-part, dim=1) - 1.0, g, field_sizes)
    return _tau_view(tau, g) * t


def target_score_from_sample(y: torch.Tensor, a: torch.Tensor, tau: torch.Tensor | float,
                             field_sizes: Sequence[int]) -> torch.Tensor:
    """The same target from the sample and the class logits: t = -tau + tau K softmax(a - tau y)."""
    tv = _tau_view(tau, y)
    t = per_field(lambda part: part.shape[1] * torch.softmax(part, dim=1) - 1.0, a - tv * y, field_sizes)
    return tv * t


def score_from_output(l: torch.Tensor, tau: torch.Tensor | float, field_sizes: Sequence[int]) -> torch.Tensor:
    """The network's score s = tau * (K softmax(l) - 1) per field (DESIGN 1.4)."""
    s = per_field(lambda part: part.shape[1] * torch.softmax(part, dim=1) - 1.0, l, field_sizes)
    return _tau_view(tau, l) * s


def _field_sums(x: torch.Tensor, field_sizes: Sequence[int]) -> torch.Tensor:
    """Sum over each field's classes: (B, C, *spatial) -> (B, J, *spatial)."""
    return torch.stack([part.sum(dim=1) for part in _split(x, field_sizes)], dim=1)


def _reduce(per_position: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_position
    if reduction == "sum":
        return per_position.sum()
    if reduction == "mean":
        return per_position.sum() / per_position.shape[0]
    raise ValueError(f"reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")


def score_matching_loss(l: torch.Tensor, g: torch.Tensor, tau: torch.Tensor | float, field_sizes: Sequence[int],
                        kind: str = "kl", reduction: str = "mean") -> torch.Tensor:
    """Score-matching loss of the network output l against the noise g (DESIGN 1.4).

    ``kl``: sum over fields of KL(softmax(-g) || softmax(l)); ``mse``: 0.5 ||s - t||^2.
    ``reduction="none"`` gives the per-position, per-field loss (B, J, *spatial); ``mean`` sums
    everything and divides by the batch size B.
    """
    g = g.to(l.dtype)
    if kind == "kl":
        log_q = per_field(lambda part: torch.log_softmax(-part, dim=1), g, field_sizes)
        log_p = per_field(lambda part: torch.log_softmax(part, dim=1), l, field_sizes)
        terms = log_q.exp() * (log_q - log_p)
    elif kind == "mse":
        diff = score_from_output(l, tau, field_sizes) - target_score(g, tau, field_sizes)
        terms = 0.5 * diff.square()
    else:
        raise ValueError(f"kind: expected 'kl' or 'mse', got {kind!r}")
    return _reduce(_field_sums(terms, field_sizes), reduction)


def score_norms(l: torch.Tensor, tau: torch.Tensor | float, field_sizes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """L2 norms of the score s: per record (B,) and per field and position (B, J, *spatial)."""
    s = score_from_output(l if l.dtype == torch.float64 else l.float(), tau, field_sizes)
    sq = _field_sums(s.square(), field_sizes)
    return _safe_sqrt(sq.flatten(1).sum(dim=1)), _safe_sqrt(sq)


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt with a zero (not NaN) gradient at 0: K = 1 fields have a score of exactly 0."""
    positive = x > 0
    return torch.where(positive, x, torch.ones_like(x)).sqrt() * positive


def gaussian_dsm_loss(s_num: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Numerical columns: 0.5 ||s_num + eps/sigma||^2 per record, with x_noisy = x + sigma * eps."""
    sig = sigma.reshape(-1, *([1] * (s_num.dim() - 1)))
    return 0.5 * (s_num + noise / sig).square().flatten(1).sum(dim=1)
