"""``SegmentationQC``: flag poor segmentations and show where they are wrong (GNSM on masks / volumes).

A tau-conditioned UNet (:class:`gnsm.models.UNet`) is trained with the fused score-matching loss
on random patches of *good* segmentations (ground-truth masks or label volumes, optionally with the
image as conditioning channels). A predicted segmentation (integer labels or soft probabilities)
is then turned into an N-channel per-voxel feature map, one channel per scoring temperature:

``scoring="auto"`` (default) is ``"denoise"`` for 2-D masks and ``"paper"`` for 3-D volumes: what
measured best on each (CamVid masks: denoise; the spine volume: paper, the only mode of the two that
ranks its real prediction above the good volumes; docs/segmentation.md). ``scoring_`` is the resolved mode.

``scoring="denoise"``
    the model's own per-voxel denoising error KL(softmax(-g) || softmax(l)) on ``n_noise_copies``
    noised copies (``gnsm.ops.score_matching_loss(reduction="none")``), averaged over the copies.
    With ``eps=0.01`` about 10% of the voxels are flipped to another class by the noise, so the
    network learns which labels fit their context; a wrong region of the prediction is one it
    cannot explain.
``scoring="paper"``
    the per-voxel L2 norm of the score of the clean segmentation at every temperature of the
    schedule (``gnsm.ops.score_norms``; docs/design.md).

From the feature map:

- ``anomaly_map`` (``pixel_head="mean"``, default): each channel standardized by the training voxels'
  mean / std, averaged over channels. ``pixel_head="hgad"``: a per-position density head, an HGAD
  flow (:mod:`gnsm.detectors.heads.hgad`) fitted on a sample of training voxels' N-channel vectors (log
  scale) conditioned on a sin-cos code of the voxel's position; the map is each voxel's negative
  log-likelihood per dimension. ``pred_mask`` = ``anomaly_map > pixel_threshold_`` (the
  ``1 - pixel_contamination`` quantile of the training maps).
- ``positional_prior=True`` (for aligned data: a fixed camera, canonical volumes) appends one channel,
  -log p(label | position) under the Laplace-smoothed per-position label frequencies of the training
  cases (an atlas, ``positional.py``). The ``"mean"`` anomaly map then weighs the two sources of
  evidence equally: half the mean of the GNSM channels, half the standardized prior channel. GNSM
  sees what does not fit its context (boundaries, texture of the labels); the prior sees labels
  where they never occur (a swapped class, an object in the sky).
- the case score (``case_score="head"``, default): statistics of each channel over the voxels
  (``case_stats``: mean, rms, max or a quantile ``"q99"``), fed to a density head
  (:class:`gnsm.detectors.heads.DensityHead`, default GMM); its negative log-likelihood is ``pred_score``;
  ``pred_label`` thresholds it at ``threshold_`` (the ``1 - contamination`` quantile of the training
  scores). The training scores ``decision_scores_`` are out of fold for the GMM / KDE head (up to 10
  folds, from 10 training cases on; ``DensityHead.out_of_fold_scores``): scored in-sample, a head fitted
  on a few dozen cases puts the threshold so low that it flags most new good cases. The in-sample scores
  are kept in ``in_sample_scores_`` (set by ``fit`` / ``refit_scoring``, saved with the model).
  ``case_score="map_mean"``: the case score is the mean of the case's anomaly map, with no head to fit
  (on real CamVid predictions it ranks frames like the segmenter's entropy where the GMM head is at chance,
  docs/segmentation.md); ``threshold_`` is the quantile of the training cases' map means (with
  ``pixel_head="hgad"`` estimated from each case's share of the sampled training voxels).

Cases larger than ``window`` are scored by sliding windows with 50% overlap, blended with a
separable triangular weight (``windows.py``), so volumes larger than GPU memory work.

Extra inputs are keyword arguments: ``fit(X, y, cond=, X_val=, cond_val=)`` and, for scoring,
``cond=`` (``decision_function`` / ``predict`` / ``predict_proba`` / ``predict_maps`` /
``anomaly_maps`` / ``feature_maps``).
"""
from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from torch import Tensor

from ...core import DETECTOR_EPS, FieldLayout, near_zero_scale
from ...data import MaskCase, as_cases, as_cond
from ..base import load_network, resolve_device, sub_state
from ..heads import HEAD_OPTIONS, DensityHead, HGADHead, fit_hgad_head
from ..score_model import ScoreModelDetector
from ..validation import (check_bool_param, check_choice, check_float_param, check_int_param,
                          check_int_sequence_param)
from .positional import fit_positional_prior, position_code, positional_nll
from .windows import blend_weight, window_grid

__all__ = ["SegmentationQC", "SegmentationResult", "CASE_SCORES", "CASE_STATS", "PIXEL_HEADS", "SEG_SCORINGS"]

SEG_SCORINGS = ("auto", "denoise", "paper")
CASE_SCORES = ("head", "map_mean")

PIXEL_HEADS = ("mean", "hgad")
_HGAD_FIT_ARGS = frozenset(HEAD_OPTIONS) - {"device", "random_state"}
# Per-position HGAD head: small and quick by default (it sees up to max_samples voxels, not cases).
_PIXEL_HGAD_DEFAULTS = {"n_classes": "auto", "n_intra_centers": 3, "n_blocks": 4, "hidden_dim": 64,
                        "stage1_epochs": 8, "stage2_epochs": 4, "batch_size": 512, "score_entropy_weight": 0.0,
                        "max_samples": 50_000, "position_channels": None}
CASE_STATS = ("mean", "rms", "max", "q90", "q95", "q99")
_DEFAULT_PATCH = {2: (128, 128), 3: (64, 64, 64)}
_WHOLE_CASE_VOXELS = 1 << 21  # cases up to this many voxels are scored in one piece
_MAP_SAMPLE_VOXELS = 2_000_000  # training voxels kept (over all cases) for the pixel threshold and pixel head


@dataclass
class SegmentationResult:
    """Anomalib-style outputs of :meth:`SegmentationQC.predict_maps` (one entry per case).

    ``anomaly_map`` / ``pred_mask`` / ``feature_maps`` are lists of arrays ``(*spatial)`` /
    ``(T, *spatial)`` (cases may differ in size).
    """

    pred_score: np.ndarray
    pred_label: np.ndarray
    anomaly_map: list[np.ndarray]
    pred_mask: list[np.ndarray]
    feature_maps: list[np.ndarray] | None = None


class SegmentationQC(ScoreModelDetector):
    """GNSM quality control of segmentation masks (2-D) and label volumes (3-D).

    Args:
        num_classes: K; None infers ``max label + 1`` from the training masks.
        contamination: expected fraction of poor cases (sets ``threshold_``).
        pixel_contamination: fraction of training voxels above ``pixel_threshold_``.
        scoring: ``"auto"`` (denoise in 2-D, paper in 3-D), ``"denoise"`` or ``"paper"`` (module docstring).
        head: density head of the per-case features (``gmm``, ``kde``, ``knn``, ``hgad``, ``loss``;
            None: ``gmm``).
        case_score: ``"head"`` (the density head's negative log-likelihood of the case features) or
            ``"map_mean"`` (the mean of the anomaly map; no head is fitted).
        pixel_head: how the N channels become the anomaly map: ``"mean"`` of the standardized channels,
            or ``"hgad"``, a per-position HGAD flow (module docstring).
        pixel_head_options: overrides of the per-position HGAD settings (``_PIXEL_HGAD_DEFAULTS``: any
            :func:`gnsm.detectors.heads.fit_hgad_head` option, plus ``max_samples`` voxels to fit on and
            ``position_channels`` of the sin-cos code, default 16 in 2-D and 24 in 3-D).
        case_stats: per-channel statistics forming the case feature vector (see ``CASE_STATS``).
        max_components, n_neighbors, head_options: head settings.
        n_temperatures, tau_max, tau_min: training schedule (docs/design.md).
        n_score_temperatures: temperatures of the denoise features (evenly spaced schedule indices;
            None: all).
        n_noise_copies: noised copies per temperature (denoise).
        eps: one-hot clip; 0.01 lets the noise flip ~10% of the voxels (K = 12).
        eps_max: None (one clip ``eps`` at every level) or the clip of the noisiest level: the clip then
            rises geometrically from ``eps`` (least noisy level) to ``eps_max`` (noisiest), so the top levels
            flip most voxels and the network has to infer the labels from the conditioning image
            (docs/segmentation.md, "Real predictions with the image"). Used in training and in scoring.
        channels, num_res_blocks: UNet size.
        cond_channels: image channels given as conditioning (``cond=`` of fit / scoring).
        coord_channels: add each voxel's normalized coordinates (-1..1 along every axis of its case) as
            extra input channels, so the network can learn where labels belong (for aligned data such
            as street scenes or canonical medical volumes).
        positional_prior: append the per-position label-frequency channel (module docstring); it needs no
            training and can be switched with :meth:`refit_scoring`.
        patch_size: training patch; None: (128, 128) / (64, 64, 64), capped at the largest case.
        flip_axes: spatial axes of random mirroring during training.
        window: scoring window; None: whole cases up to 2**21 voxels, else the patch size.
        n_steps, batch_size, lr, weight_decay, ema_decay: optimizer settings.
        score_batch_size: windows per forward pass when scoring.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        random_state: seed of weights, patches, noise, voxel sample and head (None: 0).
        verbose: progress bar.
    """

    SAMPLE_WORD = "case"
    SCORING_CHOICES: ClassVar[tuple[str, ...]] = SEG_SCORINGS
    #: parameters :meth:`refit_scoring` may change; every other constructor parameter shapes the network
    SCORING_PARAMS: ClassVar[frozenset[str]] = frozenset({
        "contamination", "pixel_contamination", "scoring", "head", "case_score", "pixel_head", "pixel_head_options",
        "case_stats", "max_components", "n_neighbors", "head_options", "n_score_temperatures", "n_noise_copies",
        "positional_prior", "window", "score_batch_size", "device", "random_state", "verbose"})

    def __init__(self, num_classes: int | None = None, contamination: float = 0.1,
                 pixel_contamination: float = 0.01, scoring: str = "auto", head: str | None = "gmm",
                 case_score: str = "head", pixel_head: str = "mean", pixel_head_options: dict | None = None,
                 case_stats: Sequence[str] = ("mean", "q99"), max_components: int = 4, n_neighbors: int = 5,
                 head_options: dict | None = None, n_temperatures: int = 20, tau_max: float = 20.0,
                 tau_min: float = 2.0, n_score_temperatures: int | None = 5, n_noise_copies: int = 2,
                 eps: float = DETECTOR_EPS, eps_max: float | None = None, channels: Sequence[int] = (32, 64, 128),
                 num_res_blocks: int = 1,
                 cond_channels: int = 0, coord_channels: bool = False, positional_prior: bool = False,
                 patch_size: Sequence[int] | None = None, flip_axes: Sequence[int] = (),
                 window: Sequence[int] | None = None, n_steps: int = 2000, batch_size: int = 16,
                 lr: float = 2e-3, weight_decay: float = 1e-4, ema_decay: float = 0.995, score_batch_size: int = 8,
                 device: str = "auto", random_state: int | None = 0, verbose: bool = False) -> None:
        super().__init__(contamination=contamination)
        self.num_classes = num_classes
        self.pixel_contamination = pixel_contamination
        self.scoring = scoring
        self.head = head
        self.case_score = case_score
        self.pixel_head = pixel_head
        self.pixel_head_options = pixel_head_options
        self.case_stats = case_stats
        self.max_components = max_components
        self.n_neighbors = n_neighbors
        self.head_options = head_options
        self.n_temperatures = n_temperatures
        self.tau_max = tau_max
        self.tau_min = tau_min
        self.n_score_temperatures = n_score_temperatures
        self.n_noise_copies = n_noise_copies
        self.eps = eps
        self.eps_max = eps_max
        self.channels = channels
        self.num_res_blocks = num_res_blocks
        self.cond_channels = cond_channels
        self.coord_channels = coord_channels
        self.positional_prior = positional_prior
        self.patch_size = patch_size
        self.flip_axes = flip_axes
        self.window = window
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.ema_decay = ema_decay
        self.score_batch_size = score_batch_size
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ parameters
    def _check_params(self) -> None:
        check_choice(self.pixel_head, "pixel_head", PIXEL_HEADS)
        check_choice(self.case_score, "case_score", CASE_SCORES)
        unknown = sorted(set(self.pixel_head_options or {}) - set(_PIXEL_HGAD_DEFAULTS) - _HGAD_FIT_ARGS)
        if unknown:
            raise ValueError(f"pixel_head_options: unknown keys {unknown}")
        stats = [self.case_stats] if isinstance(self.case_stats, str) else list(self.case_stats)
        if not stats or any(s not in CASE_STATS for s in stats):
            raise ValueError(f"case_stats: expected a non-empty subset of {list(CASE_STATS)}, got {stats}")
        check_float_param(self.pixel_contamination, "pixel_contamination", low=0.0, high=1.0,
                          low_open=True, high_open=True)
        check_int_param(self.num_classes, "num_classes", low=2, allow_none=True)
        check_int_param(self.score_batch_size, "score_batch_size", low=1)
        check_int_param(self.num_res_blocks, "num_res_blocks", low=1)
        check_int_param(self.cond_channels, "cond_channels", low=0)
        channels = list(self.channels) if isinstance(self.channels, (list, tuple)) else None
        if not channels:
            raise ValueError(f"channels: expected a non-empty sequence of positive ints, got {self.channels!r}")
        for i, c in enumerate(channels):
            check_int_param(c, f"channels[{i}]", low=1)
        # Sizes and axes are checked here, before any data is read; their count (the spatial rank) once the
        # cases are known.
        check_int_sequence_param(self.patch_size, "patch_size", low=1, allow_none=True)
        check_int_sequence_param(self.window, "window", low=1, allow_none=True)
        check_int_sequence_param(self.flip_axes, "flip_axes", low=0, allow_empty=True)
        check_bool_param(self.coord_channels, "coord_channels")
        check_bool_param(self.positional_prior, "positional_prior")

    @property
    def scoring_(self) -> str:
        """The scoring mode in use: ``scoring``, with ``"auto"`` resolved by the cases' rank (fitted)."""
        if self.scoring != "auto":
            return self.scoring
        if not hasattr(self, "spatial_dims_"):  # set by fit (before scoring) and by load
            self._check_fitted("scoring_")
        return "paper" if self.spatial_dims_ == 3 else "denoise"

    def _network_params(self) -> set[str]:
        return set(inspect.signature(type(self).__init__).parameters) - {"self"} - self.SCORING_PARAMS

    # ------------------------------------------------------------------ public API
    def fit(self, X: Any, y: Any = None, *, cond: Any = None, X_val: Any = None,
            cond_val: Any = None) -> "SegmentationQC":
        """Train on good segmentations ``X`` (integer label maps; see :mod:`gnsm.data.masks`).

        ``y``: optional normal-class labels of the cases (``head="hgad"``). ``cond``: conditioning
        images, one ``(cond_channels, *spatial)`` per case. ``X_val`` (with ``cond_val``): held-out
        good cases whose features choose the GMM / KDE size.
        """
        return super().fit(X, y, cond=cond, X_val=X_val, cond_val=cond_val)

    def predict_maps(self, X: Any, *, cond: Any = None, return_feature_maps: bool = False) -> SegmentationResult:
        """Per-case score and label, per-voxel anomaly map and mask (and the N-channel maps)."""
        self._check_fitted("predict_maps")
        maps = self.feature_maps(X, cond=cond)
        anomaly = [self._pixel_map(m) for m in maps]
        scores = self._case_scores(maps, anomaly)
        return SegmentationResult(
            pred_score=scores,
            pred_label=(scores > self.threshold_).astype(np.int64),
            anomaly_map=anomaly,
            pred_mask=[a > self.pixel_threshold_ for a in anomaly],
            feature_maps=maps if return_feature_maps else None,
        )

    def anomaly_maps(self, X: Any, *, cond: Any = None) -> list[np.ndarray]:
        """Per-voxel anomaly maps (one ``(*spatial)`` float32 array per case)."""
        self._check_fitted("anomaly_maps")
        return [self._pixel_map(m) for m in self.feature_maps(X, cond=cond)]

    @torch.no_grad()
    def feature_maps(self, X: Any, *, cond: Any = None) -> list[np.ndarray]:
        """The per-voxel feature maps ``(T, *spatial)`` float32: one channel per ``score_temperatures_``, plus
        the positional prior's -log p(label | position) as the last channel when ``positional_prior``."""
        self._check_fitted("feature_maps")
        cases, conds = self._cases(X, cond, "X", "cond")
        return [self._case_map(c, None if conds is None else conds[i]) for i, c in enumerate(cases)]

    @torch.no_grad()
    def refit_scoring(self, X: Any, y: Any = None, *, cond: Any = None, X_val: Any = None, cond_val: Any = None,
                      **params: Any) -> "SegmentationQC":
        """Change scoring parameters (``SCORING_PARAMS``: ``scoring``, ``case_stats``, ``head``,
        ``n_noise_copies``, ...) and refit the map statistics and the head on the training cases ``X``,
        keeping the trained network."""
        self._check_fitted("refit_scoring")
        fixed = sorted(self._network_params() & set(params))
        if fixed:
            raise ValueError(f"refit_scoring: {fixed} change the network; fit a new detector instead")
        with self._unchanged_on_error():  # a failed refit keeps the old parameters and scoring
            self.set_params(**params)
            self._check_score_model_params()
            self._check_params()
            cases, conds = self._cases(X, cond, "X", "cond")
            labels = self._check_head_labels(y, len(cases))  # before the feature maps
            val = None if X_val is None else self._cases(X_val, cond_val, "X_val", "cond_val")
            self._set_training_scores(np.asarray(self._fit_scoring(cases, conds, labels, val), dtype=np.float64))
        return self

    # ------------------------------------------------------------------ BaseDetector hooks
    def _fit(self, X: Any, y: Any = None, *, cond: Any = None, X_val: Any = None,
             cond_val: Any = None) -> np.ndarray:
        seed = self._start_fit()
        t0 = time.perf_counter()
        cases, dims = as_cases(X, None, self.num_classes, name="X", allow_probs=False)
        labels = self._check_head_labels(y, len(cases))  # before training: fail fast
        if self.num_classes is None:
            self.num_classes_ = max(int(c.labels.max()) for c in cases) + 1
            if self.num_classes_ < 2:
                raise ValueError("X: the training masks hold a single label; pass num_classes")
        else:
            self.num_classes_ = int(self.num_classes)
        self.spatial_dims_ = dims
        conds = self._with_coords(cases, as_cond(cond, cases, int(self.cond_channels)))
        val = None if X_val is None else self._cases(X_val, cond_val, "X_val", "cond_val")
        self.patch_size_ = self._resolve_patch(cases)
        from ...models import UNet
        self.model_ = UNet(self.num_classes_, spatial_dims=dims, cond_channels=self._model_cond_channels(),
                           channels=tuple(int(c) for c in self.channels), num_res_blocks=int(self.num_res_blocks),
                           tau_min=float(self.tau_min), tau_max=float(self.tau_max))
        self.model_config_ = self.model_.config()
        self.train_info_ = self._train(cases, conds, seed)
        self.train_time_ = time.perf_counter() - t0

        scores = self._fit_scoring(cases, conds, labels, val)
        self.fit_time_ = time.perf_counter() - t0
        return scores

    def _score(self, X: Any, *, cond: Any = None) -> np.ndarray:
        return self._case_scores(self.feature_maps(X, cond=cond))

    def _state_tensors(self) -> dict[str, Tensor]:
        out = {f"model.{k}": v for k, v in self.model_.state_dict().items()}
        out["map_mean"] = torch.as_tensor(self.map_mean_)
        out["map_std"] = torch.as_tensor(self.map_std_)
        if self.prior_log_p_ is not None:
            out["prior_log_p"] = torch.as_tensor(self.prior_log_p_)
        out["in_sample_scores"] = torch.as_tensor(np.asarray(self.in_sample_scores_, dtype=np.float64))
        if self.head_ is not None:
            out.update({f"head.{k}": v for k, v in self.head_.state_tensors().items()})
        if self.pixel_head_ is not None:
            out.update({f"pixel_head.{k}": v for k, v in self.pixel_head_.state_tensors().items()})
        return out

    def _state_meta(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes_, "spatial_dims": self.spatial_dims_,
                "patch_size": list(self.patch_size_), "model_config": self.model_config_,
                "pixel_threshold": float(self.pixel_threshold_),
                "head": None if self.head_ is None else self.head_.state_meta(),
                "pixel_head": None if self.pixel_head_ is None else self.pixel_head_.state_meta(),
                "train_info": self.train_info_}

    def _load_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        self.num_classes_ = int(meta["num_classes"])
        self.spatial_dims_ = int(meta["spatial_dims"])
        self.patch_size_ = tuple(meta["patch_size"])
        self.model_config_ = dict(meta["model_config"])
        self.train_info_ = meta.get("train_info", {})
        self.pixel_threshold_ = float(meta["pixel_threshold"])
        self._dev = resolve_device(self.device)
        self.model_ = load_network(self.model_config_, sub_state(tensors, "model."), self._dev)
        self.map_mean_ = tensors["map_mean"].numpy()
        self.map_std_ = tensors["map_std"].numpy()
        self.prior_log_p_ = tensors["prior_log_p"].numpy() if "prior_log_p" in tensors else None
        if "in_sample_scores" in tensors:  # absent from models saved before it was kept
            self.in_sample_scores_ = tensors["in_sample_scores"].numpy().astype(np.float64)
        self.head_ = None
        if meta["head"] is not None:
            self.head_ = DensityHead.from_state(sub_state(tensors, "head."), meta["head"], device=self._dev)
        self.pixel_head_ = None
        if meta.get("pixel_head") is not None:
            self.pixel_head_ = HGADHead.from_state(sub_state(tensors, "pixel_head."), meta["pixel_head"],
                                                   device=self._dev)

    # ------------------------------------------------------------------ cases and conditioning
    def _cases(self, X: Any, cond: Any, name: str, cond_name: str) -> tuple[list[MaskCase], list[np.ndarray] | None]:
        """Parse cases of a fitted detector and their conditioning (+ coordinate channels)."""
        cases, _ = as_cases(X, self.spatial_dims_, self.num_classes_, name=name)
        return cases, self._with_coords(cases, as_cond(cond, cases, int(self.cond_channels), name=cond_name))

    def _model_cond_channels(self) -> int:
        return int(self.cond_channels) + (self.spatial_dims_ if self.coord_channels else 0)

    def _with_coords(self, cases: Sequence[MaskCase], conds: list[np.ndarray] | None) -> list[np.ndarray] | None:
        """Append the normalized coordinate channels (when ``coord_channels``) to each case's conditioning."""
        if not self.coord_channels:
            return conds
        out = []
        for i, case in enumerate(cases):
            axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in case.shape]
            coords = np.stack(np.meshgrid(*axes, indexing="ij"))
            out.append(coords if conds is None else np.concatenate([conds[i], coords]))
        return out

    # ------------------------------------------------------------------ training
    def _resolve_patch(self, cases: Sequence[MaskCase]) -> tuple[int, ...]:
        dims = self.spatial_dims_
        largest = [max(c.shape[d] for c in cases) for d in range(dims)]
        patch = _DEFAULT_PATCH[dims] if self.patch_size is None else tuple(int(p) for p in self.patch_size)
        if len(patch) != dims or min(patch) < 1:
            raise ValueError(f"patch_size: expected {dims} positive sizes, got {self.patch_size}")
        return tuple(min(p, n) for p, n in zip(patch, largest))

    def _train(self, cases: Sequence[MaskCase], conds: list[np.ndarray] | None, seed: int) -> dict:
        from ...data import PatchDataset
        bs = int(self.batch_size)
        data = PatchDataset([c.labels for c in cases], self.patch_size_, self.num_classes_,
                            samples_per_epoch=max(len(cases), bs), cond=conds, seed=seed,
                            flip_axes=self.flip_axes)
        self.model_, result = self._train_network(self.model_, data, None, self.num_classes_, 0,
                                                  int(self.n_steps), bs)
        return {**self._train_info(result, bs), "patch_size": list(self.patch_size_),
                "voxels_per_s": float(result.throughput)}

    # ------------------------------------------------------------------ feature maps
    def _window(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.window is not None:
            w = tuple(int(v) for v in self.window)
            if len(w) != len(shape) or min(w) < 1:
                raise ValueError(f"window: expected {len(shape)} positive sizes, got {self.window}")
            return tuple(min(a, n) for a, n in zip(w, shape))
        if math.prod(shape) <= _WHOLE_CASE_VOXELS:
            return shape
        return tuple(min(p, n) for p, n in zip(self.patch_size_, shape))

    def _case_map(self, case: MaskCase, cond: np.ndarray | None) -> np.ndarray:
        """(T, *spatial) float32 feature map of one case (sliding windows when it is large; + the prior channel)."""
        shape = case.shape
        win = self._window(shape)
        dev = self._dev
        if case.labels is not None:  # np.require: torch warns on read-only arrays (e.g. memory-mapped inputs)
            source = torch.from_numpy(np.require(case.labels, requirements=["C", "W"]))
        else:  # probabilities; _window_features takes their logits at each level's clip
            source = torch.from_numpy(np.require(case.probs, np.float32, ["C", "W"]))
        cond_t = None if cond is None else torch.from_numpy(np.require(cond, requirements=["C", "W"]))
        T = len(self._score_indices())
        acc = torch.zeros((T, *shape), dtype=torch.float32)
        weight = torch.zeros(shape, dtype=torch.float32)
        w_full = blend_weight(win, shape)
        slices = window_grid(shape, win)
        gen = self._noise_generator()  # per case: a case's map does not depend on the other cases
        bsz = int(self.score_batch_size)
        lead = () if case.labels is not None else (slice(None),)
        for b0 in range(0, len(slices), bsz):
            sls = slices[b0:b0 + bsz]
            x = torch.stack([source[lead + sl] for sl in sls]).to(dev)
            c = None if cond_t is None else torch.stack([cond_t[(slice(None),) + sl] for sl in sls]).to(dev)
            feats = self._window_features(x, c, gen).cpu()  # (B, T, *win)
            for f, sl in zip(feats, sls):
                acc[(slice(None),) + sl] += f * w_full
                weight[sl] += w_full
        fmap = (acc / weight).numpy()
        if getattr(self, "prior_log_p_", None) is not None:
            fmap = np.concatenate([fmap, positional_nll(self.prior_log_p_, case)[None]])
        return fmap

    def _window_features(self, x: Tensor, cond: Tensor | None, gen: torch.Generator) -> Tensor:
        """x: labels (B, *w) int64 or class probabilities (B, K, *w) -> (B, T, *w) float32."""
        from ... import ops
        K = self.num_classes_
        layout = FieldLayout.from_sizes(K)
        model = self.model_
        taus = self._schedule().taus().to(x.device)
        labels = x if x.dtype == torch.int64 else None
        B = x.shape[0]
        out = []
        for i in self._score_indices():
            tau = taus[i].expand(B).contiguous()
            eps = self._level_eps(i)  # one clip for the whole batch: labels need no one-hot for the noise
            # soft input: x holds probabilities; the level's clip bounds their logits like a one-hot's
            a = x.clamp_min(eps).log() if labels is None else None
            if self.scoring_ == "paper":
                a = layout.one_hot_logits(labels, eps) if a is None else a
                net = model(layout.log_softmax(a / taus[i]), tau.log(), cond)
                out.append(ops.score_norms(net.float().contiguous(), K, tau)[1])
                continue
            err = torch.zeros((B, *x.shape[-self.spatial_dims_:]), device=x.device)
            for _ in range(int(self.n_noise_copies)):
                if labels is not None:
                    y, state = ops.relax_from_labels(labels, K, tau, eps=eps, generator=gen)
                else:
                    y, state = ops.relax_from_logits(a, K, tau, generator=gen)
                net = model(y, tau.log(), cond)
                err += ops.score_matching_loss(net.float().contiguous(), state, K, tau, kind="kl", reduction="none")
            out.append(err / int(self.n_noise_copies))
        return torch.stack(out, dim=1)

    # ------------------------------------------------------------------ maps -> scores
    def _fit_scoring(self, cases: Sequence[MaskCase], conds: list[np.ndarray] | None, labels: np.ndarray | None,
                     val: tuple[list[MaskCase], list[np.ndarray] | None] | None) -> np.ndarray:
        """Map statistics and density head on the training cases (everything after the network)."""
        self.prior_log_p_ = fit_positional_prior(cases, self.num_classes_) if self.positional_prior else None
        feats, map_means = self._fit_map_stats(cases, conds)
        if self.case_score == "map_mean":  # no head: the map statistics above are all it needs
            self.head_ = None
            self.in_sample_scores_ = map_means
            return map_means
        feats_val = None
        if val is not None:
            vcases, vconds = val
            feats_val = np.stack([self._case_features(self._case_map(c, None if vconds is None else vconds[i]))
                                  for i, c in enumerate(vcases)])
        self.head_ = self._make_head()
        self.in_sample_scores_ = self.head_.fit(feats, feats_val, labels=labels)
        # The training scores (hence threshold_) are out of fold: a head scores its own few training cases
        # far lower than new good cases (measured on the spine volume, docs/segmentation.md).
        return self.head_.out_of_fold_scores(feats)

    def _fit_map_stats(self, cases: Sequence[MaskCase],
                       conds: list[np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
        """One pass over the training cases: per-channel voxel mean / std, the pixel threshold (from a
        bounded random sample of voxels, so many large volumes fit in memory), the case features and each
        case's anomaly-map mean."""
        rng = np.random.default_rng(self._seed())
        per_case = max(_MAP_SAMPLE_VOXELS // len(cases), 1)
        s1 = s2 = 0.0
        n = 0
        feats, samples, positions, channel_means = [], [], [], []
        for i, case in enumerate(cases):
            fmap = self._case_map(case, None if conds is None else conds[i])
            flat = fmap.reshape(fmap.shape[0], -1).astype(np.float64)
            s1 = s1 + flat.sum(axis=1)
            s2 = s2 + (flat ** 2).sum(axis=1)
            n += flat.shape[1]
            feats.append(self._case_features(fmap))
            channel_means.append(flat.mean(axis=1))
            keep = slice(None) if flat.shape[1] <= per_case else rng.choice(flat.shape[1], per_case, replace=False)
            samples.append(flat[:, keep])
            if self.pixel_head == "hgad":
                positions.append(self._position_rows(fmap.shape[1:])[keep])
        mean = s1 / n
        std = np.sqrt(np.maximum(s2 / n - mean ** 2, 0.0))
        self.map_mean_ = mean.astype(np.float32)
        self.map_std_ = np.where(near_zero_scale(std, mean), 1.0, std).astype(np.float32)
        pool = np.concatenate(samples, axis=1)
        if self.pixel_head == "hgad":
            combined = self._fit_pixel_head(pool, np.concatenate(positions), rng)
            # the map is not linear in the channels: each case's mean from its sampled voxels
            bounds = np.cumsum([0] + [s.shape[1] for s in samples])
            map_means = np.array([combined[a:b].mean() for a, b in zip(bounds[:-1], bounds[1:])])
        else:
            self.pixel_head_ = None
            combined = self._combine(pool)
            # the "mean" map is linear in the channels: its voxel mean is the map of the channel means (exact)
            map_means = self._combine(np.stack(channel_means, axis=1)).astype(np.float64)
        self.pixel_threshold_ = float(np.quantile(combined, 1.0 - float(self.pixel_contamination)))
        return np.stack(feats), map_means

    def _pixel_options(self) -> dict[str, Any]:
        return {**_PIXEL_HGAD_DEFAULTS, **(self.pixel_head_options or {})}

    def _position_rows(self, shape: Sequence[int]) -> np.ndarray:
        """(prod(shape), P) sin-cos code of every voxel's position (in voxels from the case's corner)."""
        P = self._pixel_options()["position_channels"] or (16 if len(shape) == 2 else 24)
        return position_code(int(P), tuple(int(n) for n in shape))

    @staticmethod
    def _pixel_rows(flat: np.ndarray) -> np.ndarray:
        """(T, n) channel values -> (n, T) head input on a log scale (the KL errors / norms are heavy-tailed)."""
        return np.log(np.maximum(flat, 0.0) + 1e-3).T.astype(np.float32)

    def _fit_pixel_head(self, pool: np.ndarray, pos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Fit the per-position HGAD head on a sample of the pooled training voxels; returns their map values."""
        opts = self._pixel_options()
        n = min(int(opts["max_samples"]), pool.shape[1])
        pick = rng.choice(pool.shape[1], n, replace=False) if n < pool.shape[1] else np.arange(n)
        fit_args = {k: v for k, v in opts.items() if k in _HGAD_FIT_ARGS}
        with torch.enable_grad():  # refit_scoring runs under no_grad
            self.pixel_head_ = fit_hgad_head(self._pixel_rows(pool[:, pick]), cond=pos[pick], device=self._dev,
                                             random_state=self._seed(), **fit_args)
        return self.pixel_head_.score(self._pixel_rows(pool), cond=pos).astype(np.float32)

    def _pixel_map(self, fmap: np.ndarray) -> np.ndarray:
        """(T, *spatial) feature map -> (*spatial) anomaly map."""
        if getattr(self, "pixel_head_", None) is None:
            return self._combine(fmap)
        rows = self._pixel_rows(fmap.reshape(fmap.shape[0], -1))
        score = self.pixel_head_.score(rows, cond=self._position_rows(fmap.shape[1:]))
        return score.reshape(fmap.shape[1:]).astype(np.float32)

    def _combine(self, fmap: np.ndarray) -> np.ndarray:
        shape = (-1,) + (1,) * (fmap.ndim - 1)
        z = (fmap - self.map_mean_.reshape(shape)) / self.map_std_.reshape(shape)
        if getattr(self, "prior_log_p_", None) is not None:  # GNSM channels and the prior weigh equally
            return (0.5 * z[:-1].mean(axis=0) + 0.5 * z[-1]).astype(np.float32)
        return z.mean(axis=0).astype(np.float32)

    def _case_features(self, fmap: np.ndarray) -> np.ndarray:
        flat = fmap.reshape(fmap.shape[0], -1).astype(np.float64)
        stats = [self.case_stats] if isinstance(self.case_stats, str) else self.case_stats
        parts = []
        for stat in stats:
            if stat == "mean":
                parts.append(flat.mean(axis=1))
            elif stat == "rms":
                parts.append(np.sqrt((flat ** 2).mean(axis=1)))
            elif stat == "max":
                parts.append(flat.max(axis=1))
            else:
                parts.append(np.quantile(flat, float(stat[1:]) / 100.0, axis=1))
        return np.concatenate(parts)

    def _case_scores(self, maps: Sequence[np.ndarray], anomaly: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Case scores of feature maps (``anomaly``: their anomaly maps, when already computed)."""
        if self.case_score == "map_mean":
            anomaly = [self._pixel_map(m) for m in maps] if anomaly is None else anomaly
            return np.array([float(a.mean(dtype=np.float64)) for a in anomaly])
        return self.head_.score(np.stack([self._case_features(m) for m in maps]))
