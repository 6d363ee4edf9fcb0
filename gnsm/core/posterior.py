"""The clean-label posterior behind a denoiser's output, in closed form (docs/design.md 1.9).

For one categorical field with the clipped one-hot logits a^(c) (0 at the class c, log eps elsewhere), a
noisy ExpConcrete sample y at temperature tau fixes the noise up to a constant for every hypothesis c:
-g = a^(c) - tau y. The KL loss KL(softmax(-g) || softmax(l)) is minimized by

    E[softmax(-g) | y] = sum_c p(c | y) softmax(a^(c) - tau y)                                  (1)

With w = softmax(-tau y) and Z_c = eps + (1 - eps) w_c this is, per class j,
E_j = w_j (eps S + (1 - eps) p_j / Z_j) with S = sum_c p_c / Z_c: linear in p, so a network's output
E = softmax(l) can be inverted for the posterior p(c | y) it implies (:func:`class_posterior`).
Under a uniform prior the posterior from y alone is p(c | y) ~ Z_c^(-K) (:func:`likelihood_posterior`),
so p(c | y) Z_c^K is in principle the prior the network brings from the context (in practice
undetermined for the classes the likelihood rules out: a float32 output does not resolve their posterior).

All functions take the class dim at ``dim`` (default 1: ``(B, K, *spatial)``), ``tau`` as a float or a
``(B,)`` tensor, and compute in float64.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["class_posterior", "denoiser_mean", "likelihood_posterior"]


def _check(y: Tensor, tau: float | Tensor, eps: float, dim: int) -> tuple[Tensor, Tensor, int]:
    if not 0.0 < float(eps) < 1.0:
        raise ValueError(f"eps: expected a clip in (0, 1), got {eps}")
    t = torch.as_tensor(tau, dtype=torch.float64, device=y.device)
    if t.numel() and not bool((t > 0).all()):
        raise ValueError("tau: temperatures must be > 0")
    if t.dim() == 1:  # one temperature per sample of the batch dim 0
        if t.shape[0] != y.shape[0]:
            raise ValueError(f"tau: expected {y.shape[0]} temperatures (one per sample), got {t.shape[0]}")
        t = t.view(-1, *([1] * (y.dim() - 1)))
    elif t.dim() != 0:
        raise ValueError(f"tau: expected a float or a (B,) tensor, got shape {tuple(t.shape)}")
    d = dim % y.dim()
    return y.double(), t, d


def _weights(y: Tensor, tau: Tensor, eps: float, dim: int) -> tuple[Tensor, Tensor]:
    """log w = log_softmax(-tau y) and Z_c = eps + (1 - eps) w_c."""
    log_w = torch.log_softmax(-tau * y, dim=dim)
    return log_w, eps + (1.0 - eps) * log_w.exp()


def denoiser_mean(posterior: Tensor, y: Tensor, tau: float | Tensor, eps: float, dim: int = 1) -> Tensor:
    """E[softmax(-g) | y] of equation (1) for a class posterior ``posterior`` (same shape as ``y``)."""
    if posterior.shape != y.shape:
        raise ValueError(f"posterior: expected the shape of y {tuple(y.shape)}, got {tuple(posterior.shape)}")
    y, t, d = _check(y, tau, eps, dim)
    log_w, Z = _weights(y, t, eps, d)
    q = posterior.double() / Z
    return log_w.exp() * (eps * q.sum(dim=d, keepdim=True) + (1.0 - eps) * q)


def class_posterior(output: Tensor, y: Tensor, tau: float | Tensor, eps: float, dim: int = 1) -> Tensor:
    """The posterior p(c | y) implied by a denoiser's raw output ``output`` (logits l, E = softmax(l)).

    Exact for an output of the form (1); a network's output is not exactly of that form, so negative
    solutions are set to 0 and the result renormalized. Computed with every ratio E_j / w_j scaled by
    its largest value, so temperatures up to the schedule's top (20) do not overflow.
    """
    if output.shape != y.shape:
        raise ValueError(f"output: expected the shape of y {tuple(y.shape)}, got {tuple(output.shape)}")
    y, t, d = _check(y, tau, eps, dim)
    K = y.shape[d]
    log_w, Z = _weights(y, t, eps, d)
    log_r = torch.log_softmax(output.double(), dim=d) - log_w  # log(E_j / w_j)
    m = log_r.amax(dim=d, keepdim=True)
    r = (log_r - m).exp()
    S = ((Z * r).sum(dim=d, keepdim=True) - (1.0 - eps) * (-m).exp()) / (eps * (1.0 + (K - 1) * eps))
    p = (Z * (r - eps * S)).clamp_min(0.0)
    total = p.sum(dim=d, keepdim=True)
    return torch.where(total > 0, p / total.clamp_min(1e-300), torch.full_like(p, 1.0 / K))


def likelihood_posterior(y: Tensor, tau: float | Tensor, eps: float, dim: int = 1) -> Tensor:
    """p(c | y) from the noisy sample alone (uniform prior): softmax_c(-K log Z_c)."""
    y, t, d = _check(y, tau, eps, dim)
    _, Z = _weights(y, t, eps, d)
    return torch.softmax(-y.shape[d] * Z.log(), dim=d)
