"""HGAD: hierarchical Gaussian-mixture normalizing flow for unified (multi-class) anomaly detection.

Yao et al., "Hierarchical Gaussian Mixture Normalizing Flow Modeling for Unified Anomaly
Detection", ECCV 2024 (arXiv 2403.13349). A flow with a single Gaussian prior tends to map
anomalies into the dense region of some normal class when the normal data has several classes;
HGAD gives the latent space one Gaussian mixture component per class (learnable centres and
weights), several mixed centres inside each class, and a mutual-information loss that keeps the
classes apart. Samples are scored by their negative log-likelihood under the full two-level
mixture, so scoring never needs a test sample's class.

Three levels of API:

``HGADModel`` (nn.Module)
    flow + hierarchical prior; ``log_prob(x, cond=None)`` and ``losses(x, labels, cond, stage)``.
    Works on already standardized features; usable as a raw density head.
``fit_hgad_head(features, labels=None, cond=None, **options) -> HGADHead``
    standardizes, picks classes (labels, k-means pseudo-classes or one class), trains, and returns
    an ``HGADHead`` whose ``score(features, cond=None) -> np.ndarray`` gives anomaly scores
    (float64, higher = more anomalous). ``features``: (n, D) array/DataFrame/tensor;
    ``labels``: optional (n,) normal-class labels of any sortable type; ``cond``: optional (n, P)
    condition such as a positional code (``gnsm.flows.positions_as_rows``). ``options`` are the
    :class:`gnsm.detectors.HGADDetector` constructor parameters except ``contamination``.
    ``head.state_tensors()``, ``head.state_meta()`` and ``HGADHead.from_state(tensors, meta)`` let an
    owning detector save it.

:class:`gnsm.detectors.HGADDetector` (``gnsm/detectors/hgad.py``) puts the ``BaseDetector`` API on top.
"""
from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ...core import fit_standardizer
from ...flows import DEFAULT_RADIUS, CouplingFlow, HierarchicalGaussianPrior, hgad_losses
from ..base import resolve_device, sub_state
from ..validation import (as_float_tensor, check_float_param, check_int_param, check_labels, check_n_features,
                          check_same_length)

__all__ = ["HGADModel", "HGADHead", "HEAD_OPTIONS", "fit_hgad_head", "choose_pseudo_classes", "train_hgad"]


class HGADModel(nn.Module):
    """Coupling flow + hierarchical Gaussian-mixture prior.

    Args:
        dim: feature size D.
        n_classes: number of classes C of the inter-class mixture.
        n_intra_centers: centres per class K.
        cond_dim: size of the optional condition vector (0: none).
        n_blocks, hidden_dim, n_hidden_layers, clamp: flow architecture (``CouplingFlow``).
        radius: class-centre initialization radius.
        seed: seeds the subnet weights, mixing matrices and centres.
    """

    def __init__(self, dim: int, n_classes: int = 1, n_intra_centers: int = 1, cond_dim: int = 0, n_blocks: int = 8,
                 hidden_dim: int = 128, n_hidden_layers: int = 1, clamp: float = 1.9,
                 radius: float = DEFAULT_RADIUS, seed: int = 0) -> None:
        super().__init__()
        self.config = dict(dim=dim, n_classes=n_classes, n_intra_centers=n_intra_centers, cond_dim=cond_dim,
                           n_blocks=n_blocks, hidden_dim=hidden_dim, n_hidden_layers=n_hidden_layers, clamp=clamp,
                           radius=radius, seed=seed)
        # A private RNG stream for the subnet init keeps the caller's global RNG untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.flow = CouplingFlow(dim, n_blocks, cond_dim, hidden_dim, n_hidden_layers, clamp, seed=seed)
        self.prior = HierarchicalGaussianPrior(dim, n_classes, n_intra_centers, radius, seed=seed + 1)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (N, D) -> (z (N, D), log|det dz/dx| (N,))."""
        return self.flow(x, cond)

    def log_prob(self, x: Tensor, cond: Tensor | None = None, level: str = "full") -> Tensor:
        """log p(x) = log p_prior(z) + log|det dz/dx|, shape (N,).

        ``level``: "full" (two-level mixture) or "inter" (inter-class mixture only).
        """
        z, log_det = self.flow(x, cond)
        return self.prior.log_prob(z, level) + log_det

    def losses(self, x: Tensor, labels: Tensor, cond: Tensor | None = None, stage: int = 1,
               **weights: float) -> dict[str, Tensor]:
        """The HGAD losses of ``gnsm.flows.mixture_prior.hgad_losses`` on a batch."""
        z, log_det = self.flow(x, cond)
        return hgad_losses(self.prior, z, log_det, labels, stage=stage, **weights)


def train_hgad(model: HGADModel, x: Tensor, labels: Tensor, cond: Tensor | None = None, *, stage1_epochs: int = 60,
               stage2_epochs: int = 40, batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 1e-5,
               noise_std: float = 0.0, centre_lr_mult: float = 3.0, max_grad_norm: float = 10.0,
               seed: int = 0, verbose: bool = False, **loss_weights: float) -> list[dict[str, float]]:
    """Train ``model`` in place on (already standardized) ``x``; returns per-epoch mean losses.

    Stage 1 (``stage1_epochs``) uses the inter-class terms, stage 2 (``stage2_epochs``) adds the
    intra-class terms. ``noise_std`` adds Gaussian jitter to each batch (dequantizes discrete
    features and keeps constant features from collapsing the density). Centres train at
    ``centre_lr_mult`` x ``lr`` (3 by default) without weight decay. This is a deliberate deviation: the
    authors' code builds a 3 x lr group too, but its warm-up / cosine schedule writes one value into every
    group's lr, so there the centres train at the flow's rate (docs/hgad.md).
    """
    device = next(model.parameters()).device
    prior = model.prior
    groups = [
        {"params": list(model.flow.parameters()), "weight_decay": weight_decay},
        {"params": [prior.mu, prior.delta], "lr": lr * centre_lr_mult, "weight_decay": 0.0},
        {"params": [prior.phi, prior.phi_intra], "weight_decay": 0.0},
    ]
    opt = torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    history: list[dict[str, float]] = []
    model.train()
    for epoch in range(stage1_epochs + stage2_epochs):
        stage = 1 if epoch < stage1_epochs else 2
        perm = torch.randperm(n, generator=gen)
        sums: dict[str, Tensor] = {}  # summed on the device: one host sync per epoch, not per step
        t0 = time.perf_counter()
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size].to(device)
            xb = x[idx]
            if noise_std > 0:
                xb = xb + noise_std * torch.randn(xb.shape, generator=gen).to(device)
            cb = None if cond is None else cond[idx]
            out = model.losses(xb, labels[idx], cb, stage=stage, **loss_weights)
            opt.zero_grad(set_to_none=True)
            out["total"].backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            opt.step()
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + v.detach() * idx.numel()
        record = {k: float(v) / n for k, v in sums.items()} | {"epoch": epoch, "stage": stage}
        if not math.isfinite(record["total"]):
            raise FloatingPointError(f"HGAD training diverged at epoch {epoch} (loss {record['total']}); "
                                     "lower lr or raise noise_std")
        history.append(record)
        if verbose:
            terms = " ".join(f"{k}={v:.4f}" for k, v in record.items() if k not in ("epoch", "stage"))
            print(f"[hgad] epoch {epoch + 1}/{stage1_epochs + stage2_epochs} stage {stage} {terms} "
                  f"({time.perf_counter() - t0:.2f}s)")
    model.eval()
    return history


def choose_pseudo_classes(x: np.ndarray, n_classes: int | str | None, max_auto_classes: int = 10,
                          seed: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """Pseudo-class labels for unlabelled data; returns (labels (n,), info).

    * ``None`` or 1: a single class;
    * an int k >= 2: k-means with k clusters;
    * ``"auto"``: k-means for k = 2 .. min(max_auto_classes, n // 20); the k with the highest
      silhouette score (on at most 2000 samples) wins; a single class when fewer than 40 samples.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = x.shape[0]
    if n_classes is None or (not isinstance(n_classes, str) and int(n_classes) == 1):
        return np.zeros(n, dtype=np.int64), {"rule": "single"}
    if isinstance(n_classes, str):
        if n_classes != "auto":
            raise ValueError(f"n_classes: expected 'auto', None or a positive int, got {n_classes!r}")
        k_max = min(int(max_auto_classes), n // 20)
        if k_max < 2:
            return np.zeros(n, dtype=np.int64), {"rule": "auto", "k": 1, "reason": "too few samples"}
        rng = np.random.default_rng(seed)
        sub = rng.choice(n, size=min(n, 2000), replace=False)
        scores: dict[int, float] = {}
        fits: dict[int, np.ndarray] = {}
        for k in range(2, k_max + 1):
            fits[k] = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x)
            scores[k] = float(silhouette_score(x[sub], fits[k][sub]))
        best = max(scores, key=scores.get)
        return fits[best].astype(np.int64), {"rule": "auto", "k": best,
                                             "silhouette": {str(k): v for k, v in scores.items()}}
    k = int(n_classes)
    if k < 1:
        raise ValueError(f"n_classes: expected a positive int, got {n_classes}")
    if n < k:
        raise ValueError(f"n_classes: {k} pseudo-classes need at least {k} samples, got {n}")
    labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x)
    return labels.astype(np.int64), {"rule": "kmeans", "k": k}


@dataclass
class HGADHead:
    """A fitted HGAD density head: feature standardizer + ``HGADModel``.

    ``score`` returns the negative log-likelihood per feature dimension under the full two-level
    mixture (``level="inter"`` when stage 2 was skipped), plus ``score_entropy_weight`` times the
    class-entropy term.
    """

    model: HGADModel
    mean: Tensor  # float64 (D,)
    scale: Tensor  # float64 (D,)
    level: str = "full"
    classes: list | None = None  # user labels in index order; None for pseudo / single class
    class_info: dict = field(default_factory=dict)
    score_entropy_weight: float = 1.0
    batch_size: int = 4096
    history: list = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def standardize(self, features: Any, name: str = "features") -> Tensor:
        x = as_float_tensor(features, name, dtype=torch.float64)
        check_n_features(x, self.mean.shape[0], name)
        return ((x - self.mean) / self.scale).float()

    @torch.no_grad()
    def score(self, features: Any, cond: Any = None) -> np.ndarray:
        """Anomaly scores (float64, shape (n,)), higher = more anomalous."""
        x = self.standardize(features)
        c = None if cond is None else as_float_tensor(cond, "cond")
        if c is not None:
            check_same_length(x, c, "features", "cond")
        self.model.eval()
        D = x.shape[1]
        out = []
        for start in range(0, x.shape[0], self.batch_size):
            xb = x[start:start + self.batch_size].to(self.device)
            cb = None if c is None else c[start:start + self.batch_size].to(self.device)
            z, log_det = self.model.flow(xb, cb)
            s = -(self.model.prior.log_prob(z, self.level) + log_det) / D
            if self.score_entropy_weight:
                s = s + self.score_entropy_weight * self.model.prior.class_entropy(z)
            out.append(s.double().cpu())
        return torch.cat(out).numpy()

    def state_tensors(self) -> dict[str, Tensor]:
        return {"mean": self.mean, "scale": self.scale} | {f"model.{k}": v for k, v in self.model.state_dict().items()}

    def state_meta(self) -> dict[str, Any]:
        return {"config": self.model.config, "level": self.level, "classes": self.classes,
                "class_info": self.class_info, "score_entropy_weight": self.score_entropy_weight,
                "batch_size": self.batch_size}

    @classmethod
    def from_state(cls, tensors: dict[str, Tensor], meta: dict[str, Any], device: str | torch.device = "auto") -> "HGADHead":
        model = HGADModel(**meta["config"])
        model.load_state_dict(sub_state(tensors, "model."))
        model.to(resolve_device(device)).eval()
        return cls(model=model, mean=tensors["mean"].double(), scale=tensors["scale"].double(), level=meta["level"],
                   classes=meta["classes"], class_info=meta["class_info"],
                   score_entropy_weight=meta["score_entropy_weight"], batch_size=meta["batch_size"])


def _seeds(random_state: int | None) -> tuple[int, int, int]:
    """(model, training, k-means) seeds from ``random_state`` (None: fresh entropy)."""
    ss = np.random.SeedSequence(random_state)
    return tuple(int(s) for s in ss.generate_state(3) % (2**31 - 1))  # type: ignore[return-value]


def fit_hgad_head(features: Any, labels: Any = None, cond: Any = None, *, n_classes: int | str | None = "auto",
                  n_intra_centers: int = 3, n_blocks: int = 8, hidden_dim: int = 256, n_hidden_layers: int = 1,
                  clamp: float = 1.9, stage1_epochs: int = 60, stage2_epochs: int = 40, batch_size: int = 64,
                  lr: float = 1e-3, weight_decay: float = 1e-5, noise_std: float = 0.05, lambda1: float = 1.0,
                  lambda2: float = 100.0, entropy_weight: float = 1.0, intra_weight: float = 1.0,
                  label_smoothing: float = 0.02, score_entropy_weight: float = 1.0, max_auto_classes: int = 10,
                  device: str = "auto", random_state: int | None = None, verbose: bool = False) -> HGADHead:
    """Fit an HGAD density head; see the module docstring and ``HGADDetector`` for the options.

    Options are checked before any work (``ValueError`` naming the option).
    """
    _check_options(n_intra_centers=n_intra_centers, n_blocks=n_blocks, hidden_dim=hidden_dim,
                   n_hidden_layers=n_hidden_layers, clamp=clamp, stage1_epochs=stage1_epochs,
                   stage2_epochs=stage2_epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                   noise_std=noise_std, max_auto_classes=max_auto_classes)
    dev = resolve_device(device)
    x64 = as_float_tensor(features, "features", dtype=torch.float64)
    n, D = x64.shape
    if n < 2:
        raise ValueError(f"features: need at least 2 samples to fit, got {n}")
    c = None if cond is None else as_float_tensor(cond, "cond")
    if c is not None:
        check_same_length(x64, c, "features", "cond")
    # Constant features keep scale 1 (dividing by ~0 would blow up any test deviation).
    mean, scale = fit_standardizer(x64)
    x = ((x64 - mean) / scale).float()
    model_seed, train_seed, kmeans_seed = _seeds(random_state)

    if labels is not None:
        y_raw = check_labels(labels, n, "labels")
        classes, y = np.unique(y_raw, return_inverse=True)
        class_list: list | None = classes.tolist()
        info: dict[str, Any] = {"rule": "labels", "k": len(classes)}
    else:
        y, info = choose_pseudo_classes(x.numpy(), n_classes, max_auto_classes, kmeans_seed)
        class_list = None
    n_cls = int(y.max()) + 1

    model = HGADModel(D, n_cls, n_intra_centers, 0 if c is None else c.shape[1], n_blocks, hidden_dim,
                      n_hidden_layers, clamp, seed=model_seed).to(dev)
    history = train_hgad(
        model, x.to(dev), torch.as_tensor(y, dtype=torch.int64, device=dev), None if c is None else c.to(dev),
        stage1_epochs=stage1_epochs, stage2_epochs=stage2_epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, noise_std=noise_std, seed=train_seed, verbose=verbose, lambda1=lambda1,
        lambda2=lambda2, entropy_weight=entropy_weight, intra_weight=intra_weight, label_smoothing=label_smoothing)
    level = "full" if stage2_epochs > 0 and n_intra_centers > 1 else "inter"
    return HGADHead(model=model, mean=mean, scale=scale, level=level, classes=class_list, class_info=info,
                    score_entropy_weight=score_entropy_weight, history=history)


def _check_options(**options: Any) -> None:
    for name in ("n_intra_centers", "n_blocks", "hidden_dim", "batch_size", "max_auto_classes"):
        check_int_param(options[name], name, low=1)
    for name in ("n_hidden_layers", "stage1_epochs", "stage2_epochs"):
        check_int_param(options[name], name, low=0)
    check_float_param(options["clamp"], "clamp", low=0.0, low_open=True)
    check_float_param(options["lr"], "lr", low=0.0, low_open=True)
    for name in ("weight_decay", "noise_std"):
        check_float_param(options[name], name, low=0.0)


#: The options of :func:`fit_hgad_head` (its keyword-only parameters): the HGAD constructor parameters.
HEAD_OPTIONS: tuple[str, ...] = tuple(p.name for p in inspect.signature(fit_hgad_head).parameters.values()
                                      if p.kind is p.KEYWORD_ONLY)
