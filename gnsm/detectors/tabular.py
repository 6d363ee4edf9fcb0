"""``GNSMDetector``: Gumbel Noise Score Matching anomaly detection on categorical / mixed tables.

A tau-conditioned score network is trained on the training inliers with the fused score-matching
loss (docs/design.md); each record is then turned into a feature vector and a density head
fitted on the features of the training inliers gives the anomaly score (higher = more anomalous).

Two scoring modes (``scoring=``):

``"denoise"`` (default, chosen by measurement; see docs/tabular.md)
    the model's own denoising error: for each temperature of the scoring schedule, each field and
    ``n_noise_copies`` noised copies of the record (``gnsm.ops.relax_from_labels``), the per-field
    KL(softmax(-g) || softmax(l)) from ``gnsm.ops.score_matching_loss(reduction="none")``, averaged
    over the copies (numerical columns: the Gaussian denoising error ``0.5 (sigma s + e)^2``).
    Features: (temperature, field) -> flattened. Default head: ``"loss"``, the summed denoising error
    itself (no density model; in diffusion terms a likelihood bound of the record).
``"paper"``
    the paper's features: the L2 norm of the score of the clean record at every temperature
    (``gnsm.ops.score_norms``): an N-dimensional feature per record. Default head: GMM with the
    number of components chosen by held-out log-likelihood.

Heads (``head=``): ``"gmm"`` (sklearn GaussianMixture, full covariance, components by held-out
log-likelihood on the validation inliers or by K-fold CV), ``"kde"`` (Gaussian KDE, bandwidth by
held-out log-likelihood), ``"knn"`` (distance to the k-th nearest training feature vector) and
``"hgad"`` (:func:`gnsm.detectors.heads.fit_hgad_head`) and ``"loss"`` (no density model: the summed
denoising error itself, a diffusion-style likelihood bound). Every sklearn fit runs under a one-thread
BLAS limit: a multithreaded BLAS made a small GMM fit ~100x slower on a 2-core machine.

Explanations: :meth:`GNSMDetector.field_contributions` gives, per record and field, the field's
feature (denoising error, or score norm in paper mode) averaged over temperatures and standardized
against the training inliers (a z-score); :meth:`GNSMDetector.explain` lists the ``top_k`` fields.

Rarity (``rarity_weight``, default 1, denoise scoring with the ``"loss"`` head): the denoising error
measures p(x_j | other fields), which says little about a value that is rare on its own when the other
fields predict it. The score adds ``rarity_weight * T * sum_j rarity_j`` with the count-based rarity of
:func:`fit_rarity` (0 unless a value was seen in at most 0.1 % of the training rows; a value never seen,
e.g. a deviation in a constant column, gets ``log(c + 1)``). ``rarity_weight=0`` is the denoising error
alone; ``scoring="paper"`` never adds it. Measured in docs/tabular.md.

Training scores: ``decision_scores_`` / ``threshold_`` / ``labels_`` (and the head, and the explanation
statistics) come from at most ``fit_score_rows`` training rows (a uniform sample, rows in
``fit_score_index_``); see ``_fit_score_index`` for why a sample sets the threshold soundly.

Input policies are those of :class:`gnsm.data.TabularEncoder` (unseen categories -> reserved slot
or raise, missing values -> own category or raise, single-valued columns kept (a different value
there lands in the reserved slot), column mismatches raise). A category unseen in training lands in a slot the network never saw
as a true class, which makes its denoising error (and score) large. Categories must survive a
save / load round trip through ``meta.json``: ``fit`` accepts str, int, float and bool values (and
missing values) and raises ``ValueError`` naming the column for any other type (bytes, Timestamps,
tuples, ...): convert such a column first, e.g. ``X[col].astype(str)``.
"""
from __future__ import annotations

import time
from typing import Any, ClassVar, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..core import DETECTOR_EPS, FieldLayout, fit_standardizer
from ..data import TabularEncoder
from .base import load_network, resolve_device, sub_state
from .heads import HEAD_KINDS, DensityHead
from .score_model import SCORINGS, ScoreModelDetector
from .validation import check_float_param, check_int_param

__all__ = ["GNSMDetector", "SCORINGS", "HEADS", "check_storable_categories", "fit_rarity"]

HEADS = HEAD_KINDS
_STORABLE = (str, int, float, bool)  # category / column types that read back from JSON as themselves


def check_storable_categories(encoder: TabularEncoder) -> None:
    """Raise ``ValueError`` naming the column when a fitted encoder holds a category (or column name)
    that would not read back from ``meta.json`` as the same value (bytes, Timestamps, tuples, ...):
    such a model would save, then score differently (or fail) after loading."""
    def bad(value: Any) -> bool:
        return value is not None and not (isinstance(value, _STORABLE) and
                                          (not isinstance(value, float) or np.isfinite(value)))

    odd_names = [c for c in encoder.feature_names_in_ if c is None or bad(c)]
    if odd_names:
        raise ValueError(f"X: column name(s) {odd_names[:3]} of type {type(odd_names[0]).__name__} cannot be "
                         "saved with the model; use str or int column names")
    for col in encoder.categorical_columns:
        odd = [v for v in encoder.categories_[col] if bad(v)]
        if odd:
            raise ValueError(f"X: column {col!r} holds {type(odd[0]).__name__} values (e.g. {odd[0]!r}), which "
                             "cannot be saved with the model and read back as the same category; convert the "
                             f"column first, e.g. X[{col!r}].astype(str)")


#: a value seen in at most this fraction of the training rows counts as rare (the rarity term, fit_rarity)
RARE_FRACTION = 1e-3


def fit_rarity(codes: np.ndarray, field_sizes: Sequence[int], rare_fraction: float = RARE_FRACTION,
               alpha: float = 1.0) -> np.ndarray:
    """Per-slot rarity in nats from training codes (n, J), concatenated in field order (sum K_j,):
    ``max(0, log((c + alpha) / (count_j(v) + alpha)))`` with ``c = max(1, rare_fraction * n)``.

    It is the log-ratio of the smoothed frequency a value would need to stop being rare (seen in
    ``rare_fraction`` of the rows: 0.1 % by default) to the value's own smoothed frequency, so values seen more
    often than that contribute exactly 0 and a table's common values add no noise; a value never seen (the
    reserved slot, or any value but a constant column's one) gets ``log(c + 1)``."""
    n = codes.shape[0]
    c = max(1.0, float(rare_fraction) * n)
    out = [np.maximum(np.log((c + alpha) / (np.bincount(codes[:, j], minlength=k).astype(np.float64) + alpha)), 0.0)
           for j, k in enumerate(field_sizes)]
    return np.concatenate(out) if out else np.zeros(0)


# Records per network batch (times n_noise_copies rows). Passes of ~4k rows keep a layer's input and
# output in the CPU caches (the matrix-product rates in docs/tabular.md, Speed).
_FEATURE_BATCH = 512
_SCORE_CHUNK = 32 * _FEATURE_BATCH  # rows encoded and scored at a time: a multiple of the batch, so the noise
# stream is consumed exactly as in one pass


def _n_rows(X: Any) -> int:
    return len(X) if isinstance(X, (pd.DataFrame, pd.Series, np.ndarray, Tensor)) else len(np.asarray(X))


def _rows(X: Any, start: int, stop: int) -> Any:
    if isinstance(X, (pd.DataFrame, pd.Series)):
        return X.iloc[start:stop]
    if isinstance(X, (np.ndarray, Tensor)):
        return X[start:stop]
    return np.asarray(X)[start:stop]


class GNSMDetector(ScoreModelDetector):
    """Gumbel Noise Score Matching anomaly detector for categorical / mixed tables.

    Args:
        contamination: expected anomaly fraction of the training data (sets ``threshold_``).
        scoring: ``"denoise"`` (default) or ``"paper"`` (see the module docstring).
        head: ``"gmm"``, ``"kde"``, ``"knn"``, ``"hgad"``, ``"loss"`` or None (``loss`` for denoise, ``gmm``
            for paper).
        n_neighbors: k of the k-NN head.
        max_components: largest GMM size tried.
        head_options: extra keyword arguments of the HGAD head.
        n_temperatures: N of the training schedule (docs/design.md).
        tau_max, tau_min: temperature range of the schedule.
        eps: clip of the one-hot. The paper uses 1e-5 (``gnsm.core.PAPER_EPS``), at which the noise practically
            never flips a category; the default 0.01 (``gnsm.core.DETECTOR_EPS``) lets it flip (measured better,
            docs/tabular.md).
        eps_max: None (``eps`` at every level) or the clip of the noisiest level, in [eps, 1): the clip then rises
            geometrically from ``eps`` (least noisy) to ``eps_max``, in training and in scoring (docs/design.md 1.7).
        n_score_temperatures: temperatures used for denoise features (evenly spaced indices of the
            schedule; None: all N).
        n_noise_copies: noised copies per record and temperature for denoise features. The defaults (all 20
            temperatures, 8 copies) average out the Monte Carlo noise of the score: against 10 x 4 they
            raised AUROC on solar / cmc / chess / cars for 4x the scoring passes (docs/tabular.md).
        width, depth, dropout: network size (``gnsm.models`` ResMLP when available).
        n_steps: optimizer steps; ``"auto"`` scales with the data: the larger of about 4 epochs and
            40 steps per column (wide tables need longer to learn how fields depend on each other),
            clipped to 600..3000.
        batch_size, lr, weight_decay, ema_decay: optimizer settings.
        categorical, numerical, unseen, missing: :class:`gnsm.data.TabularEncoder` policies.
        rarity_weight: weight of the count-based rarity term (module docstring); 0 turns it off.
        fit_score_rows: at most this many training rows (a uniform sample) are scored in ``fit`` for
            ``decision_scores_`` / ``threshold_`` and the head; None: all of them.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        random_state: seed of weights, noise and head (None: 0).
        verbose: progress bar and messages.
    """

    input_kind = "frame"  # for the evaluation registry
    DEFAULT_HEADS: ClassVar[dict[str, str]] = {"denoise": "loss", "paper": "gmm"}
    SAMPLE_WORD = "record"
    AUTO_STEPS = True

    def __init__(self, contamination: float = 0.1, scoring: str = "denoise", head: str | None = None,
                 n_neighbors: int = 5, max_components: int = 6, head_options: dict | None = None,
                 n_temperatures: int = 20, tau_max: float = 20.0, tau_min: float = 2.0, eps: float = DETECTOR_EPS,
                 eps_max: float | None = None,
                 n_score_temperatures: int | None = None, n_noise_copies: int = 8,
                 width: int = 128, depth: int = 2, dropout: float = 0.0,
                 n_steps: int | str = "auto", batch_size: int = 256, lr: float = 2e-3,
                 weight_decay: float = 1e-4, ema_decay: float = 0.995,
                 categorical: Sequence[Any] | None = None, numerical: Sequence[Any] | None = None,
                 unseen: str = "unknown", missing: str = "category", rarity_weight: float = 1.0,
                 fit_score_rows: int | None = 10_000, device: str = "auto", random_state: int | None = 0, verbose: bool = False) -> None:
        super().__init__(contamination=contamination)
        self.scoring = scoring
        self.head = head
        self.n_neighbors = n_neighbors
        self.max_components = max_components
        self.head_options = head_options
        self.n_temperatures = n_temperatures
        self.tau_max = tau_max
        self.tau_min = tau_min
        self.eps = eps
        self.eps_max = eps_max
        self.n_score_temperatures = n_score_temperatures
        self.n_noise_copies = n_noise_copies
        self.width = width
        self.depth = depth
        self.dropout = dropout
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.ema_decay = ema_decay
        self.categorical = categorical
        self.numerical = numerical
        self.unseen = unseen
        self.missing = missing
        self.rarity_weight = rarity_weight
        self.fit_score_rows = fit_score_rows
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ parameters
    def _check_params(self) -> None:
        check_int_param(self.width, "width", low=1)
        check_int_param(self.depth, "depth", low=0)
        check_float_param(self.dropout, "dropout", low=0.0, high=1.0, high_open=True)
        check_float_param(self.rarity_weight, "rarity_weight", low=0.0)
        check_int_param(self.fit_score_rows, "fit_score_rows", low=1, allow_none=True)

    # ------------------------------------------------------------------ public API
    def fit(self, X: Any, y: Any = None, *, X_val: Any = None) -> "GNSMDetector":
        """Train the score network and the head on inliers ``X``.

        ``y``: optional normal-class labels of the rows of ``X`` (any sortable type, one per row), used
        by ``head="hgad"`` as the classes of its mixture prior (several normal classes in one table);
        without them the HGAD head uses ``head_options["n_classes"]`` (default k-means pseudo-classes).
        Other heads ignore ``y``.
        ``X_val``: optional validation inliers (same columns): used for the held-out likelihood that
        picks the GMM / KDE size and reported as ``val_loss_``. Without it, K-fold CV on ``X``.
        """
        return super().fit(X, y, X_val=X_val)

    def features(self, X: Any) -> np.ndarray:
        """Raw per-record feature vectors (n, T * (D + J)) that the head sees."""
        self._check_fitted("features")
        codes, num = self._encode(X)
        return self._features(codes, num).reshape(len(codes), -1)

    @torch.no_grad()
    def score_norm_profiles(self, X: Any) -> np.ndarray:
        """Per-record score norms of the clean record at all N temperatures, (n, N), noisiest first
        (the paper's features, whatever ``scoring`` is)."""
        self._check_fitted("score_norm_profiles")
        codes, num = self._encode(X)
        out = []
        for start in range(0, len(codes), 4096):
            F = self._norm_features(codes[start:start + 4096].to(self._dev), num[start:start + 4096].to(self._dev))
            out.append(F.double().pow(2).sum(dim=2).sqrt().cpu())
        return torch.cat(out).numpy()

    def field_contributions(self, X: Any) -> pd.DataFrame:
        """Per-record, per-field contribution: the field's feature averaged over temperatures,
        standardized against the training inliers (z-score). Columns = fitted column names."""
        self._check_fitted("field_contributions")
        codes, num = self._encode(X)
        F = self._features(codes, num).mean(axis=1)  # (n, D + J)
        Z = (F - self.field_mean_) / self.field_scale_
        return pd.DataFrame(Z, columns=[str(c) for c in self.field_names_], index=self._index(X))

    def explain(self, X: Any, top_k: int = 3) -> pd.DataFrame:
        """The ``top_k`` most anomalous fields of each record.

        Returns a DataFrame (one row per record, index as in ``X`` for a DataFrame) with columns
        ``score`` and, for k = 1..top_k, ``field_k`` (column name), ``value_k`` (the record's
        value) and ``contribution_k`` (z-score of the field against the training inliers).
        """
        top_k = check_int_param(top_k, "top_k", low=1)  # before scoring: 2.5, "2" or True are caller mistakes
        contrib = self.field_contributions(X)
        scores = self.decision_function(X)
        k = min(top_k, contrib.shape[1])
        C = contrib.to_numpy()
        order = np.argsort(-C, axis=1, kind="stable")[:, :k]
        names = np.asarray(contrib.columns, dtype=object)
        values = self._raw_values(X)
        out: dict[str, Any] = {"score": scores}
        for r in range(k):
            idx = order[:, r]
            out[f"field_{r + 1}"] = names[idx]
            out[f"value_{r + 1}"] = values[np.arange(len(idx)), idx]
            out[f"contribution_{r + 1}"] = C[np.arange(len(idx)), idx]
        return pd.DataFrame(out, index=contrib.index)

    # ------------------------------------------------------------------ BaseDetector hooks
    def _fit(self, X: Any, y: Any = None, *, X_val: Any = None) -> np.ndarray:
        seed = self._start_fit()
        t0 = time.perf_counter()
        self.encoder_ = TabularEncoder(categorical=self.categorical, numerical=self.numerical,
                                       unseen=self.unseen, missing=self.missing)
        enc = self.encoder_.fit_transform(X)
        if self.encoder_.n_fields == 0:
            raise ValueError("X: no categorical column to model (an all-numeric table); GNSM needs at least one "
                             "categorical field")
        if len(enc.codes) < 2:
            raise ValueError(f"X: need at least 2 rows to fit, got {len(enc.codes)}")
        check_storable_categories(self.encoder_)
        labels = self._check_head_labels(y, len(enc.codes))  # before training: fail fast
        self.field_sizes_ = list(self.encoder_.field_sizes)
        self.n_numerical_ = int(self.encoder_.n_numerical)
        self.field_names_ = list(self.encoder_.numerical_columns) + list(self.encoder_.categorical_columns)
        codes = torch.as_tensor(enc.codes, dtype=torch.long)
        num = torch.as_tensor(enc.numerical, dtype=torch.float32)
        val = None if X_val is None else self._encode(X_val)
        # Kept constant numerical columns count as two-slot fields (the training value / any other value),
        # so a deviation there weighs like a category never seen in training.
        self.constant_numerical_ = [d for d, c in enumerate(self.encoder_.numerical_columns)
                                    if c in self.encoder_.constant_columns_]
        self.rarity_table_ = fit_rarity(self._rarity_codes(codes, num),
                                        self.field_sizes_ + [2] * len(self.constant_numerical_))

        from ..models import TabularResMLP
        self.model_ = TabularResMLP(self.field_sizes_, self.n_numerical_, width=int(self.width), depth=int(self.depth),
                                    dropout=float(self.dropout), tau_min=float(self.tau_min),
                                    tau_max=float(self.tau_max))
        self.model_config_ = self.model_.config()
        self.train_info_ = self._train(codes, num, val)
        self.train_time_ = time.perf_counter() - t0

        # Head on training features; validation features (if any) choose its size. At most fit_score_rows
        # training rows (a uniform sample) are scored: see _fit_score_index.
        idx = self._fit_score_index(len(codes), seed)
        self.fit_score_index_ = idx.numpy()
        codes, num = codes[idx], num[idx]
        if labels is not None:  # the HGAD head's normal-class labels follow their rows
            labels = labels[idx.numpy()]
        F = self._features(codes, num)
        F_val = self._features(*val) if val is not None else None
        self._fit_field_stats(F)
        train_scores = self._fit_head(F.reshape(len(F), -1),
                                      None if F_val is None else F_val.reshape(len(F_val), -1), labels)
        self.fit_time_ = time.perf_counter() - t0
        return train_scores + self._rarity_term(codes, num)

    def _fit_score_index(self, n: int, seed: int) -> Tensor:
        """Rows of the training table whose scores set ``decision_scores_`` / ``threshold_`` (and fit the head):
        all of them, or a uniform sample of ``fit_score_rows``. Why a sample is enough: ``threshold_`` is the
        (1 - contamination) quantile of the training scores, and the empirical quantile of m sampled rows sits
        at a true quantile level within sqrt(c (1 - c) / m) of the target (one standard error; 0.003 for
        c = 0.1 and m = 10,000), while scoring costs the same per row as scoring new data."""
        m = self.fit_score_rows
        if m is None or int(m) >= n:
            return torch.arange(n)
        rng = np.random.default_rng(seed + 5)
        return torch.as_tensor(np.sort(rng.choice(n, size=int(m), replace=False)))

    def _score(self, X: Any) -> np.ndarray:
        # Chunks of rows, end to end (encoding, features, head): memory stays bounded by the chunk, not the
        # table. One noise stream runs through all chunks, so the scores equal those of a single pass.
        n = _n_rows(X)
        gen = self._noise_generator()
        out = []
        from tqdm.auto import tqdm
        with tqdm(total=n, unit="record", desc="scoring", disable=not self.verbose or n <= _SCORE_CHUNK) as bar:
            for start in range(0, n, _SCORE_CHUNK):
                codes, num = self._encode(_rows(X, start, start + _SCORE_CHUNK))
                F = self._features(codes, num, gen=gen)
                out.append(self._head_score(F.reshape(len(F), -1)) + self._rarity_term(codes, num))
                bar.update(len(codes))
        return np.concatenate(out)

    def rarity(self, X: Any) -> np.ndarray:
        """Per-record, per-field rarity in nats (:func:`fit_rarity`: 0 unless the value was seen in at most 0.1 %
        of the training rows). Columns: ``encoder_.categorical_columns``, then the numerical columns that
        were constant in training (a value other than the training one counts like an unseen category)."""
        self._check_fitted("rarity")
        return self._rarity_fields(*self._encode(X))

    def _rarity_codes(self, codes: Tensor, num: Tensor) -> np.ndarray:
        """Codes of the rarity fields: the categorical codes, then 0 / 1 (training value / other) per constant
        numerical column (its z-score is exactly 0 at the training value)."""
        const = list(getattr(self, "constant_numerical_", []))
        if not const:
            return codes.numpy()
        other = (num[:, const].abs() > 1e-4).long()
        return torch.cat([codes, other], dim=1).numpy()

    def _rarity_fields(self, codes: Tensor, num: Tensor) -> np.ndarray:
        rcodes = self._rarity_codes(codes, num)
        if getattr(self, "rarity_table_", None) is None:  # a model saved before the term existed
            return np.zeros(rcodes.shape)
        sizes = list(self.field_sizes_) + [2] * (rcodes.shape[1] - codes.shape[1])
        offsets = np.cumsum([0] + sizes)[:-1]
        return self.rarity_table_[rcodes + offsets[None, :]]

    def _rarity_term(self, codes: Tensor, num: Tensor) -> np.ndarray:
        """``rarity_weight * T * sum_j rarity_j``: the denoising score sums T per-field terms (one per scoring
        temperature), so the rarity enters at the same per-level scale."""
        w = float(self.rarity_weight)
        if w == 0.0 or self.scoring == "paper" or self.head_kind_ != "loss":  # other scores are not in nats
            return np.zeros(codes.shape[0])
        return w * len(self._score_indices()) * self._rarity_fields(codes, num).sum(axis=1)

    def _state_tensors(self) -> dict[str, Tensor]:
        out = {f"model.{k}": v for k, v in self.model_.state_dict().items()}
        out["field_mean"] = torch.as_tensor(self.field_mean_)
        out["field_scale"] = torch.as_tensor(self.field_scale_)
        out["rarity_table"] = torch.as_tensor(self.rarity_table_)
        out.update({f"head.{k}": v for k, v in self.head_.state_tensors().items()})
        return out

    def _state_meta(self) -> dict[str, Any]:
        meta = {
            "encoder": self.encoder_.to_dict(),
            "model_config": self.model_config_,
            "field_sizes": self.field_sizes_,
            "n_numerical": self.n_numerical_,
            "field_names": [str(c) if not isinstance(c, int) else c for c in self.field_names_],
            "head": self.head_.state_meta(),
            "train_info": self.train_info_,
            "constant_numerical": list(self.constant_numerical_),
        }
        return meta

    def _load_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        self.encoder_ = TabularEncoder.from_dict(meta["encoder"])
        self.model_config_ = dict(meta["model_config"])
        self.field_sizes_ = list(meta["field_sizes"])
        self.n_numerical_ = int(meta["n_numerical"])
        self.field_names_ = list(self.encoder_.numerical_columns) + list(self.encoder_.categorical_columns)
        self.train_info_ = meta.get("train_info", {})
        self._dev = resolve_device(self.device)
        self.model_ = load_network(self.model_config_, sub_state(tensors, "model."), self._dev)
        self.field_mean_ = tensors["field_mean"].numpy()
        self.field_scale_ = tensors["field_scale"].numpy()
        self.constant_numerical_ = [int(d) for d in meta.get("constant_numerical", [])]
        self.rarity_table_ = tensors["rarity_table"].numpy() if "rarity_table" in tensors else None
        self.head_ = DensityHead.from_state(sub_state(tensors, "head."),
                                            meta["head"], device=self._dev)

    # ------------------------------------------------------------------ encoding
    def _encode(self, X: Any) -> tuple[Tensor, Tensor]:
        enc = self.encoder_.transform(X)
        return torch.as_tensor(enc.codes, dtype=torch.long), torch.as_tensor(enc.numerical, dtype=torch.float32)

    @staticmethod
    def _index(X: Any) -> pd.Index:
        return X.index if isinstance(X, pd.DataFrame) else pd.RangeIndex(len(X))

    def _raw_values(self, X: Any) -> np.ndarray:
        if isinstance(X, pd.DataFrame):
            return X[list(self.field_names_)].to_numpy(dtype=object)
        arr = X.detach().cpu().numpy() if isinstance(X, Tensor) else np.asarray(X)
        return arr[:, [int(c) for c in self.field_names_]].astype(object)

    # ------------------------------------------------------------------ training
    def _auto_steps(self, n: int) -> int:
        if not isinstance(self.n_steps, str):
            return int(self.n_steps)
        # Measured on a 5000-row, 50-column clustered table (benchmarks/bench_detector_scale.py): 600 steps gave
        # 53 AUROC, 1200 gave 91, 2000 gave 95; at 20 columns 600 steps already gave 85.
        columns = len(self.field_sizes_) + int(self.n_numerical_)
        return int(np.clip(max(4 * n / int(self.batch_size), 40 * columns), 600, 3000))

    def _noised(self, codes: Tensor, num: Tensor, level: int, gen: torch.Generator | None):
        """Noised inputs at schedule level ``level`` (every row; training, with a level per row, is the
        Trainer's): (y, rng_state, tau, sigma, numerical noise e)."""
        n = codes.shape[0]
        tau = self._schedule().taus()[level].expand(n).contiguous().to(codes.device)
        sigma = self._schedule().sigmas()[level].expand(n).to(codes.device)
        from .. import ops
        # One clip for the whole batch, so the labels are relaxed directly (no one-hot in the hot path).
        y_cat, state = ops.relax_from_labels(codes, self.field_sizes_, tau, eps=self._level_eps(level),
                                             generator=gen)
        if self.n_numerical_:
            e = torch.randn(num.shape, generator=gen, device=num.device)
            y = torch.cat([num + sigma[:, None] * e, y_cat], dim=1)
        else:
            e = num
            y = y_cat
        return y, state, tau, sigma, e

    def _losses(self, model: nn.Module, codes: Tensor, num: Tensor, level: int,
                gen: torch.Generator | None) -> Tensor:
        """Per-field losses (B, D + J) at schedule level ``level``: numerical DSM error then per-field KL."""
        from .. import ops
        y, state, tau, sigma, e = self._noised(codes, num, level, gen)
        out = model(y, tau.log())
        D = self.n_numerical_
        kl = ops.score_matching_loss(out[:, D:].contiguous(), state, self.field_sizes_, tau, kind="kl",
                                     reduction="none")
        if D:
            # The numerical output is the score s (target -e / sigma); 0.5 (sigma s + e)^2 is its error
            # on the scale of the noise, comparable across temperatures.
            err = 0.5 * (sigma[:, None] * out[:, :D].float() + e) ** 2
            return torch.cat([err, kl], dim=1)
        return kl

    def _train(self, codes: Tensor, num: Tensor, val: tuple[Tensor, Tensor] | None) -> dict:
        from ..data import TabularData
        D = self.n_numerical_
        bs = int(min(int(self.batch_size), codes.shape[0]))
        train = TabularData(codes, num if D else None)
        vdata = None if val is None else TabularData(val[0], val[1] if D else None)
        self.model_, result = self._train_network(self.model_, train, vdata, self.field_sizes_, D,
                                                  self._auto_steps(codes.shape[0]), bs)
        info = self._train_info(result, bs)
        if result.val_history:
            info["val_loss"] = float(result.val_history[-1][1])
            self.val_loss_ = info["val_loss"]
        return info

    # ------------------------------------------------------------------ features
    @torch.no_grad()
    def _features(self, codes: Tensor, num: Tensor, batch: int | None = None,
                  gen: torch.Generator | None = None) -> np.ndarray:
        """(n, T, D + J) float64 features (denoise errors or score norms)."""
        model = self.model_
        model.eval()
        dev = self._dev
        gen = self._noise_generator() if gen is None else gen
        batch = _FEATURE_BATCH if batch is None else batch
        out = []
        for start in range(0, codes.shape[0], batch):
            c = codes[start:start + batch].to(dev)
            x = num[start:start + batch].to(dev)
            if self.scoring == "paper":
                out.append(self._norm_features(c, x))
            else:
                out.append(self._denoise_features(c, x, gen))
        return torch.cat(out).double().cpu().numpy()

    def _denoise_features(self, codes: Tensor, num: Tensor, gen: torch.Generator) -> Tensor:
        B = codes.shape[0]
        R = int(self.n_noise_copies)
        codes_r, num_r = codes.repeat(R, 1), num.repeat(R, 1)  # the same copies serve every temperature
        feats = []
        for i in self._score_indices():
            err = self._losses(self.model_, codes_r, num_r, i, gen)
            feats.append(err.view(R, B, -1).mean(dim=0))
        return torch.stack(feats, dim=1)

    def _norm_features(self, codes: Tensor, num: Tensor) -> Tensor:
        from .. import ops
        taus = self._schedule().taus().to(codes.device)
        layout = FieldLayout.from_sizes(self.field_sizes_)
        D = self.n_numerical_
        feats = []
        one_clip = layout.one_hot_logits(codes, float(self.eps)) if self._eps_levels() is None else None
        for i in range(len(taus)):
            a = one_clip if one_clip is not None else layout.one_hot_logits(codes, self._level_eps(i))
            tau = taus[i].expand(codes.shape[0]).contiguous()
            y = layout.log_softmax(a / taus[i])
            if D:
                y = torch.cat([num, y], dim=1)
            out = self.model_(y, tau.log())
            _, per_field = ops.score_norms(out[:, D:].contiguous(), self.field_sizes_, tau)
            if D:
                per_field = torch.cat([out[:, :D].float().abs(), per_field], dim=1)
            feats.append(per_field)
        return torch.stack(feats, dim=1)  # per-field norms; the record norm is their L2 norm

    def _head_input(self, F: np.ndarray) -> np.ndarray:
        """Paper mode: the head sees the per-record norm at each temperature (N features)."""
        if self.scoring == "paper":
            T = len(self._schedule().taus())
            return np.sqrt((F.reshape(len(F), T, -1) ** 2).sum(axis=2))
        return F

    def _fit_field_stats(self, F: np.ndarray) -> None:
        self.field_mean_, self.field_scale_ = fit_standardizer(F.mean(axis=1))

    # ------------------------------------------------------------------ heads
    def _fit_head(self, F: np.ndarray, F_val: np.ndarray | None, labels: np.ndarray | None = None) -> np.ndarray:
        F = self._head_input(F)
        F_val = None if F_val is None else self._head_input(F_val)
        self.head_ = self._make_head()
        return self.head_.fit(F, F_val, labels=labels)

    def _head_score(self, F: np.ndarray) -> np.ndarray:
        return self.head_.score(self._head_input(F))

    def _more_tags(self) -> dict:  # scikit-learn: not a classifier/regressor
        return {"requires_y": False}

