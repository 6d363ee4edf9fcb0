"""Hierarchical Gaussian-mixture latent prior of HGAD and its training losses.

Prior (all components have identity covariance), for a latent z in R^D:

* inter-class mixture  p(z) = sum_y pi_y N(z; mu_y, I),  pi = softmax(phi);
* intra-class mixed centres: class y has K centres c_{y,1} = mu_y, c_{y,k} = mu_y + delta_{y,k},
  weights w_y = softmax(phi_intra_y);  p(z | y) = sum_k w_{y,k} N(z; c_{y,k}, I);
* the full two-level mixture  p(z) = sum_y pi_y sum_k w_{y,k} N(z; c_{y,k}, I)  scores samples
  without needing their class.

``hgad_losses`` implements the losses of Yao et al. (ECCV 2024) on a batch of flow outputs; see its
docstring for the exact formulas.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DEFAULT_RADIUS", "HALF_LOG_2PI", "HierarchicalGaussianPrior", "hgad_losses", "init_class_centres"]

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)

# Orthogonal centres on a sphere of this radius lie 5 apart, the spacing of the published init
# (5 / sqrt(2 D / C) on D / C coordinates each) wherever that init is defined.
DEFAULT_RADIUS = 5.0 / math.sqrt(2.0)


def init_class_centres(n_classes: int, dim: int, radius: float = DEFAULT_RADIUS,
                       generator: torch.Generator | None = None, n_draws: int = 16) -> Tensor:
    """Distinct class centres, shape (n_classes, dim), for any number of classes and dimensions.

    * one class: the origin (a plain flow prior);
    * ``n_classes <= dim``: orthonormal random directions times ``radius`` (pairwise distance
      radius * sqrt(2));
    * ``n_classes > dim >= 2``: random unit directions times ``radius``; the best of ``n_draws``
      draws by smallest pairwise distance, so no two centres nearly coincide;
    * ``dim == 1``: evenly spaced points on [-radius, radius].

    The published init writes scaled identity blocks into D // C column groups, which leaves all
    centres at zero when C > D and divides by zero (2D // C = 0) when C > 2D.
    """
    if n_classes < 1 or dim < 1:
        raise ValueError(f"n_classes, dim: expected >= 1, got {n_classes}, {dim}")
    if n_classes == 1:
        return torch.zeros(1, dim)
    if dim == 1:
        return torch.linspace(-radius, radius, n_classes).reshape(n_classes, 1)
    if n_classes <= dim:
        from .coupling import random_orthogonal
        return (radius * random_orthogonal(dim, generator)[:n_classes]).float()
    best, best_gap = None, -1.0
    for _ in range(n_draws):
        dirs = torch.randn(n_classes, dim, generator=generator, dtype=torch.float64)
        dirs = dirs / dirs.norm(dim=1, keepdim=True)
        gap = torch.pdist(dirs).min().item()
        if gap > best_gap:
            best, best_gap = dirs, gap
    return (radius * best).float()


class HierarchicalGaussianPrior(nn.Module):
    """The two-level Gaussian mixture prior (see the module docstring).

    Args:
        dim: latent size D.
        n_classes: number of classes C (1: a single class).
        n_intra_centers: centres per class K (1: class y is N(mu_y, I)).
        radius: radius of the class-centre initialization (``init_class_centres``).
        delta_scale: std per coordinate of the initial offsets delta_{y,k} of the extra intra-class
            centres; default 1 / sqrt(D), i.e. offsets of norm ~1. (The published init, std 1, gives
            offsets of norm sqrt(D): beyond the class's own sample shell, so those centres start, and
            in short trainings stay, unused.)
        seed: seed of the centre initialization.
    """

    def __init__(self, dim: int, n_classes: int = 1, n_intra_centers: int = 1, radius: float = DEFAULT_RADIUS,
                 delta_scale: float | None = None, seed: int = 0) -> None:
        super().__init__()
        if n_intra_centers < 1:
            raise ValueError(f"n_intra_centers: expected >= 1, got {n_intra_centers}")
        gen = torch.Generator().manual_seed(int(seed))
        if delta_scale is None:
            delta_scale = 1.0 / math.sqrt(dim)
        self.dim, self.n_classes, self.n_intra_centers = dim, n_classes, n_intra_centers
        self.mu = nn.Parameter(init_class_centres(n_classes, dim, radius, gen))
        self.phi = nn.Parameter(torch.zeros(n_classes))
        self.delta = nn.Parameter(delta_scale * torch.randn(n_classes, n_intra_centers - 1, dim, generator=gen))
        self.phi_intra = nn.Parameter(torch.zeros(n_classes, n_intra_centers))

    def log_class_weights(self) -> Tensor:
        """log pi, shape (C,)."""
        return torch.log_softmax(self.phi, dim=0)

    def inter_sq_dists(self, z: Tensor) -> Tensor:
        """|z - mu_y|^2, shape (N, C)."""
        return (z[:, None, :] - self.mu[None]).pow(2).sum(dim=2)

    def intra_centres(self, detach_mu: bool = False) -> Tensor:
        """All centres c_{y,k}, shape (C, K, D); ``detach_mu`` stops gradients into mu_y."""
        mu = self.mu.detach() if detach_mu else self.mu
        return torch.cat([mu[:, None, :], mu[:, None, :] + self.delta], dim=1)

    def log_prob(self, z: Tensor, level: str = "full") -> Tensor:
        """log p(z) under the prior, shape (N,), Gaussian constants included.

        ``level="full"``: the two-level mixture; ``"inter"``: the inter-class mixture only.
        """
        D = z.shape[1]
        if level == "inter":
            logits = -0.5 * self.inter_sq_dists(z) + self.log_class_weights()
            return torch.logsumexp(logits, dim=1) - D * HALF_LOG_2PI
        if level != "full":
            raise ValueError(f"level: expected 'full' or 'inter', got {level!r}")
        centres = self.intra_centres()  # (C, K, D)
        sq = (z[:, None, None, :] - centres[None]).pow(2).sum(dim=3)  # (N, C, K)
        log_w = self.log_class_weights()[:, None] + torch.log_softmax(self.phi_intra, dim=1)
        return torch.logsumexp((-0.5 * sq + log_w).flatten(1), dim=1) - D * HALF_LOG_2PI

    def class_entropy(self, z: Tensor) -> Tensor:
        """Entropy of softmax_y(-|z - mu_y|^2 / 2), shape (N,): low when z is near one centre."""
        logits = -0.5 * self.inter_sq_dists(z)
        return -(torch.softmax(logits, dim=1) * torch.log_softmax(logits, dim=1)).sum(dim=1)


def hgad_losses(prior: HierarchicalGaussianPrior, z: Tensor, log_det: Tensor, labels: Tensor, *,
                stage: int = 1, lambda1: float = 1.0, lambda2: float = 100.0, entropy_weight: float = 1.0,
                intra_weight: float = 1.0, label_smoothing: float = 0.02) -> dict[str, Tensor]:
    """HGAD losses on a batch, each a batch mean; ``total`` is the one to minimize.

    With D = latent size, sq_y = |z - mu_y|^2, log pi = log_softmax(phi), pi' = pi detached and
    ytilde = (1 - eps) onehot(y) + eps / C (label smoothing eps):

    * ``nll`` (L_g)  = -(logsumexp_y(log pi_y - sq_y / 2) - D log(2 pi) / 2 + log_det) / D;
    * ``mi``  (L_mi) = sum_y ytilde_y [log q(y|z) - log pi'_y],  q = softmax_y(log pi'_y - sq_y / 2);
    * ``entropy`` (L_e) = H(softmax_y(-sq_y / 2));
    * stage 2 only, with centres c_{y,k} built on mu_y detached and u = log p(z | y) + log_det
      divided by D (Gaussian constant included):
      ``intra_nll`` = -u and ``intra_sat`` = softplus(-u), the saturating form that stops pushing
      once a sample is likely under its class.

    total = lambda1 * nll - lambda2 * mi + entropy_weight * entropy
            [+ intra_weight * (intra_nll + intra_sat) in stage 2].

    Args:
        labels: class index per sample, shape (N,), int64 in [0, C).
        stage: 1 (inter-class terms) or 2 (all terms).
    """
    if stage not in (1, 2):
        raise ValueError(f"stage: expected 1 or 2, got {stage}")
    N, D = z.shape
    C = prior.n_classes
    sq = prior.inter_sq_dists(z)
    log_pi = prior.log_class_weights()
    nll = -(torch.logsumexp(log_pi - 0.5 * sq, dim=1) - D * HALF_LOG_2PI + log_det) / D

    log_pi_d = log_pi.detach()
    log_q = torch.log_softmax(log_pi_d - 0.5 * sq, dim=1)
    y_soft = F.one_hot(labels, C).to(z.dtype) * (1.0 - label_smoothing) + label_smoothing / C
    mi = (y_soft * (log_q - log_pi_d)).sum(dim=1)

    logits = -0.5 * sq
    entropy = -(torch.softmax(logits, dim=1) * torch.log_softmax(logits, dim=1)).sum(dim=1)

    out = {"nll": nll.mean(), "mi": mi.mean(), "entropy": entropy.mean()}
    total = lambda1 * out["nll"] - lambda2 * out["mi"] + entropy_weight * out["entropy"]
    if stage == 2:
        centres = prior.intra_centres(detach_mu=True)[labels]  # (N, K, D)
        log_w = torch.log_softmax(prior.phi_intra, dim=1)[labels]  # (N, K)
        sq_in = (z[:, None, :] - centres).pow(2).sum(dim=2)
        u = (torch.logsumexp(log_w - 0.5 * sq_in, dim=1) - D * HALF_LOG_2PI + log_det) / D
        out["intra_nll"] = (-u).mean()
        out["intra_sat"] = F.softplus(-u).mean()
        total = total + intra_weight * (out["intra_nll"] + out["intra_sat"])
    out["total"] = total
    return out
