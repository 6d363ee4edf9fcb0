"""``HGADDetector``: the :class:`BaseDetector` API on an HGAD density model of feature vectors.

The model itself (hierarchical Gaussian-mixture normalizing flow, Yao et al., ECCV 2024) and
:func:`fit_hgad_head` live in :mod:`gnsm.detectors.heads.hgad`; every constructor parameter except
``contamination`` is one of its options (``HEAD_OPTIONS``), so detector and head cannot drift apart.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from .base import BaseDetector
from .heads.hgad import HEAD_OPTIONS, HGADHead, fit_hgad_head

__all__ = ["HGADDetector"]


class HGADDetector(BaseDetector):
    """HGAD anomaly detector on feature vectors (DataFrame of numerical columns, numpy, tensor).

    ``fit(X, y=None)``: ``y`` are optional normal-class labels (the paper's setting); without them
    the classes come from ``n_classes``. Scores are per-dimension negative log-likelihoods under the
    full mixture; no class is needed at test time. Inputs are standardized with training statistics.

    Args:
        n_classes: classes when ``y`` is not given: ``"auto"`` (k-means, k by silhouette, see
            ``choose_pseudo_classes``), an int k (k-means with k clusters) or 1/``None`` (one class).
        n_intra_centers: centres per class K (the intra-class mixture; 1 disables it).
        n_blocks, hidden_dim, n_hidden_layers, clamp: flow architecture.
        stage1_epochs, stage2_epochs: epochs with inter-class losses only, then with all losses.
        batch_size, lr, weight_decay: Adam settings (centres: 3 x lr, no weight decay).
        noise_std: training jitter in standardized units (dequantizes discrete features).
        lambda1, lambda2, entropy_weight, intra_weight, label_smoothing: loss weights
            (``gnsm.flows.mixture_prior.hgad_losses``).
        score_entropy_weight: weight of the class-entropy term added to the score (0: NLL only).
        max_auto_classes: largest k tried by ``n_classes="auto"``.
        contamination: expected anomaly fraction of the training data, in (0, 0.5].
        device: "auto" (CUDA when available), "cpu", "cuda", ...
        random_state: seed for initialization, shuffling, jitter and k-means (None: random).
        verbose: print per-epoch losses.

    Attributes (after fit): ``head_`` (``HGADHead``), ``n_features_in_``, ``classes_`` (user labels
    or None), ``n_classes_``, plus the ``BaseDetector`` attributes.
    """

    def __init__(self, n_classes: int | str | None = "auto", n_intra_centers: int = 3, n_blocks: int = 8,
                 hidden_dim: int = 256, n_hidden_layers: int = 1, clamp: float = 1.9, stage1_epochs: int = 60,
                 stage2_epochs: int = 40, batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 1e-5,
                 noise_std: float = 0.05, lambda1: float = 1.0, lambda2: float = 100.0, entropy_weight: float = 1.0,
                 intra_weight: float = 1.0, label_smoothing: float = 0.02, score_entropy_weight: float = 1.0,
                 max_auto_classes: int = 10, contamination: float = 0.1, device: str = "auto",
                 random_state: int | None = None, verbose: bool = False) -> None:
        self.n_classes = n_classes
        self.n_intra_centers = n_intra_centers
        self.n_blocks = n_blocks
        self.hidden_dim = hidden_dim
        self.n_hidden_layers = n_hidden_layers
        self.clamp = clamp
        self.stage1_epochs = stage1_epochs
        self.stage2_epochs = stage2_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.noise_std = noise_std
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.entropy_weight = entropy_weight
        self.intra_weight = intra_weight
        self.label_smoothing = label_smoothing
        self.score_entropy_weight = score_entropy_weight
        self.max_auto_classes = max_auto_classes
        self.contamination = contamination
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _set_fitted(self, head: HGADHead) -> None:
        self.head_ = head
        self.n_features_in_ = int(head.mean.shape[0])
        self.classes_ = None if head.classes is None else np.asarray(head.classes)
        self.n_classes_ = head.model.prior.n_classes

    def _fit(self, X: Any, y: Any = None) -> None:
        options = {name: getattr(self, name) for name in HEAD_OPTIONS}
        self._set_fitted(fit_hgad_head(X, y, **options))

    def _score(self, X: Any) -> np.ndarray:
        return self.head_.score(X)

    def _state_tensors(self) -> dict[str, Tensor]:
        return self.head_.state_tensors()

    def _state_meta(self) -> dict[str, Any]:
        return self.head_.state_meta()

    def _load_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        self._set_fitted(HGADHead.from_state(tensors, meta, self.device))
