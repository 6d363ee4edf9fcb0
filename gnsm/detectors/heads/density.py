"""Density heads: turn per-sample feature vectors into anomaly scores (higher = more anomalous).

A :class:`DensityHead` standardizes its features with the training mean / std and fits one of:

``"gmm"``   sklearn ``GaussianMixture`` (full covariance); the number of components is chosen by the
            held-out log-likelihood on validation features, or by 3-fold CV without them. Score = NLL.
``"kde"``   Gaussian KDE, bandwidth chosen the same way from multiples of Scott's rule. Score = NLL.
``"knn"``   distance to the k-th nearest training feature vector.
``"hgad"``  :func:`gnsm.detectors.heads.fit_hgad_head` (normal-class labels optional). Score = NLL / D
            under the mixture + ``score_entropy_weight`` (default 1) x the class entropy.
``"loss"``  no density model: the sum of the raw features (for denoising-error features this is a
            diffusion-style likelihood bound).

Every sklearn fit runs under a one-thread BLAS limit: a multithreaded BLAS made a small GMM fit
~100x slower on a 2-core machine. The fitted state is plain arrays (``state_tensors`` /
``state_meta`` / ``from_state``), so detectors can save it with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ...core import fit_standardizer, limit_blas_threads
from ..base import sub_state
from .hgad import HGADHead, fit_hgad_head

__all__ = ["DensityHead", "HEAD_KINDS", "blas_limit"]

HEAD_KINDS = ("gmm", "kde", "knn", "hgad", "loss")


def blas_limit():
    """Context manager limiting BLAS/OpenMP threads of numpy/scipy/sklearn to one."""
    return limit_blas_threads(1)


def _gmm_from_arrays(arrays: dict[str, np.ndarray]):
    from sklearn.mixture import GaussianMixture
    gm = GaussianMixture(n_components=int(arrays["weights"].shape[0]), covariance_type="full")
    gm.weights_ = arrays["weights"]
    gm.means_ = arrays["means"]
    gm.covariances_ = arrays["covariances"]
    gm.precisions_cholesky_ = arrays["precisions_cholesky"]
    gm.converged_ = True
    gm.n_features_in_ = arrays["means"].shape[1]
    return gm


def _fit_gmm(Z: np.ndarray, Z_val: np.ndarray | None, max_components: int, seed: int) -> tuple[Any, dict]:
    from sklearn.mixture import GaussianMixture
    from sklearn.model_selection import KFold

    n = Z.shape[0]
    ks = [k for k in range(1, max_components + 1) if k * 5 <= n] or [1]

    def make(k: int) -> GaussianMixture:
        return GaussianMixture(k, covariance_type="full", reg_covar=1e-3, n_init=1, max_iter=200, random_state=seed)

    held: dict[int, float] = {}
    for k in ks:
        if Z_val is not None and len(Z_val) >= 10:
            held[k] = float(make(k).fit(Z).score(Z_val))
        else:
            folds = KFold(n_splits=3, shuffle=True, random_state=seed).split(Z)
            held[k] = float(np.mean([make(k).fit(Z[tr]).score(Z[te]) for tr, te in folds]))
        if k > 2 and held[k] < max(held.values()) - 1.0:
            break  # held-out likelihood is falling clearly: stop the search
    best = max(held, key=held.get)
    gm = make(best).fit(Z if Z_val is None else np.concatenate([Z, Z_val]))
    return gm, {"n_components": int(best), "heldout_loglik": {str(k): v for k, v in held.items()}}


def _fit_kde(Z: np.ndarray, Z_val: np.ndarray | None, seed: int) -> tuple[float, dict]:
    from sklearn.model_selection import KFold
    from sklearn.neighbors import KernelDensity

    n, d = Z.shape
    scott = n ** (-1.0 / (d + 4))
    held = {}
    for bw in [scott * f for f in (0.25, 0.5, 1.0, 2.0)]:
        if Z_val is not None and len(Z_val) >= 10:
            held[bw] = float(KernelDensity(bandwidth=bw).fit(Z).score_samples(Z_val).mean())
        else:
            folds = KFold(n_splits=3, shuffle=True, random_state=seed).split(Z)
            held[bw] = float(np.mean([KernelDensity(bandwidth=bw).fit(Z[tr]).score_samples(Z[te]).mean()
                                      for tr, te in folds]))
    best = max(held, key=held.get)
    return best, {"bandwidth": float(best), "heldout_loglik": {f"{k:.4g}": v for k, v in held.items()}}


class DensityHead:
    """A density model on feature vectors; ``fit`` returns the training scores.

    Args:
        kind: one of :data:`HEAD_KINDS`.
        max_components: largest GMM size tried.
        n_neighbors: k of the k-NN head.
        hgad_options: keyword arguments of :func:`gnsm.detectors.heads.fit_hgad_head`.
        device: device of the HGAD head.
        seed: random state of the fits.
    """

    def __init__(self, kind: str, max_components: int = 6, n_neighbors: int = 5,
                 hgad_options: dict | None = None, device: str | torch.device = "cpu", seed: int = 0) -> None:
        if kind not in HEAD_KINDS:
            raise ValueError(f"head: expected one of {list(HEAD_KINDS)}, got {kind!r}")
        self.kind = kind
        self.max_components = int(max_components)
        self.n_neighbors = int(n_neighbors)
        self.hgad_options = dict(hgad_options or {})
        self.device = device
        self.seed = int(seed)
        self.mean = self.scale = None
        self.meta: dict[str, Any] = {}
        self.arrays: dict[str, np.ndarray] = {}
        self.model: Any = None

    def z(self, F: np.ndarray) -> np.ndarray:
        return (F - self.mean) / self.scale

    def fit(self, F: np.ndarray, F_val: np.ndarray | None = None, labels: Any = None) -> np.ndarray:
        """Fit on training features ``F`` (n, d); ``F_val`` picks the GMM/KDE size; returns training scores."""
        F = np.asarray(F, dtype=np.float64)
        if F.ndim != 2 or len(F) < 2:
            raise ValueError(f"features: expected at least 2 rows of shape (n, d), got {F.shape}")
        if not np.isfinite(F).all():
            raise ValueError("features: contain NaN or inf")
        self.mean, self.scale = fit_standardizer(F)
        Z = self.z(F)
        Z_val = None if F_val is None else self.z(np.asarray(F_val, dtype=np.float64))
        kind = self.kind
        with blas_limit():
            if kind == "gmm":
                gm, self.meta = _fit_gmm(Z, Z_val, self.max_components, self.seed)
                self.model = gm
                self.arrays = {"weights": gm.weights_, "means": gm.means_, "covariances": gm.covariances_,
                               "precisions_cholesky": gm.precisions_cholesky_}
            elif kind == "kde":
                _, self.meta = _fit_kde(Z, Z_val, self.seed)
                self.arrays = {"reference": Z}
            elif kind == "knn":
                self.meta = {"n_neighbors": int(min(self.n_neighbors, len(Z) - 1))}
                self.arrays = {"reference": Z}
            elif kind == "hgad":
                opts = {"random_state": self.seed, "device": str(self.device), **self.hgad_options}
                self.model = fit_hgad_head(Z, labels, **opts)
        if kind == "knn":
            return self._knn(Z, exclude_self=True)
        return self._score_z(Z)

    def out_of_fold_scores(self, F: np.ndarray, n_folds: int = 10) -> np.ndarray:
        """Scores of the training rows ``F`` as unseen rows: each of ``min(n_folds, len(F) // 2)`` folds
        scored by a head of the same settings fitted on the other folds (standardizer included).

        A GMM / KDE scores the rows it was fitted on far lower than new rows of the same kind (few cases,
        many features), so a threshold on in-sample scores flags new normal cases much more often than
        the contamination says. The k-NN head already leaves each row out and the loss head fits
        nothing: both return their in-sample scores, as does HGAD (a flow per fold is too costly) and any
        head with fewer than 10 rows (too few to refit on a part). Many folds keep each refit close to the
        full head: with 5 folds of 30 rows the refits, on 24 rows, are worse than the full head and the
        threshold flags too few new cases.
        """
        F = np.asarray(F, dtype=np.float64)
        folds = min(int(n_folds), len(F) // 2)
        if self.kind not in ("gmm", "kde") or len(F) < 10 or folds < 2:
            return self._knn(self.z(F), exclude_self=True) if self.kind == "knn" else self.score(F)
        from sklearn.model_selection import KFold
        out = np.empty(len(F))
        for tr, te in KFold(n_splits=folds, shuffle=True, random_state=self.seed).split(F):
            head = DensityHead(self.kind, self.max_components, self.n_neighbors, self.hgad_options,
                               self.device, self.seed)
            head.fit(F[tr])
            out[te] = head.score(F[te])
        return out

    def score(self, F: np.ndarray) -> np.ndarray:
        """Anomaly scores (float64, (n,)) of feature vectors ``F`` (n, d)."""
        return self._score_z(self.z(np.asarray(F, dtype=np.float64)))

    def _score_z(self, Z: np.ndarray) -> np.ndarray:
        with blas_limit():
            if self.kind == "gmm":
                if self.model is None:
                    self.model = _gmm_from_arrays(self.arrays)
                return -self.model.score_samples(Z)
            if self.kind == "kde":
                from sklearn.neighbors import KernelDensity
                if self.model is None:
                    self.model = KernelDensity(bandwidth=float(self.meta["bandwidth"])).fit(self.arrays["reference"])
                return -self.model.score_samples(Z)
            if self.kind == "knn":
                return self._knn(Z, exclude_self=False)
            if self.kind == "loss":
                return (Z * self.scale + self.mean).sum(axis=1)
            return np.asarray(self.model.score(Z), dtype=np.float64)

    def _knn(self, Z: np.ndarray, exclude_self: bool) -> np.ndarray:
        from sklearn.neighbors import NearestNeighbors
        k = max(1, int(self.meta["n_neighbors"]))
        with blas_limit():
            if self.model is None:
                self.model = NearestNeighbors(n_neighbors=k + 1).fit(self.arrays["reference"])
            dist, _ = self.model.kneighbors(Z, n_neighbors=k + 1 if exclude_self else k)
        return dist[:, -1].astype(np.float64)

    # -- persistence (flat tensors + JSON meta)
    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {"mean": torch.as_tensor(self.mean), "scale": torch.as_tensor(self.scale)}
        out.update({f"array.{k}": torch.as_tensor(v) for k, v in self.arrays.items()})
        if self.kind == "hgad":
            out.update({f"hgad.{k}": v for k, v in self.model.state_tensors().items()})
        return out

    def state_meta(self) -> dict[str, Any]:
        meta = {"kind": self.kind, "meta": self.meta}
        if self.kind == "hgad":
            meta["hgad"] = self.model.state_meta()
        return meta

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                   device: str | torch.device = "cpu") -> "DensityHead":
        head = cls(meta["kind"], device=device)
        head.meta = dict(meta["meta"])
        head.mean = tensors["mean"].numpy()
        head.scale = tensors["scale"].numpy()
        head.arrays = {k: v.numpy() for k, v in sub_state(tensors, "array.").items()}
        if head.kind == "hgad":
            head.model = HGADHead.from_state(sub_state(tensors, "hgad."), meta["hgad"], device=device)
        return head
