"""Baseline detectors and the detector registry used by the evaluation protocol.

Every detector here follows the contract of :class:`gnsm.detectors.BaseDetector`:
``fit(X, y=None, **fit_params)`` (the protocol passes its validation inliers as ``X_val=`` to a
``fit`` that declares it), ``decision_function(X)`` (higher = more anomalous), and an
``input_kind`` saying what ``X`` is:

- ``"onehot"``: float32 matrix, one-hot of the field codes (the reserved unseen slot included)
  followed by the standardized numerical columns; what PyOD detectors expect.
- ``"codes"``: a :class:`gnsm.data.EncodedTable` (integer codes, standardized numericals).
- ``"frame"``: the raw pandas DataFrame; the detector does its own encoding (GNSM, frequency).

The PyOD baselines are PyOD's own classes (never re-implemented), wrapped only to fix
``random_state`` per seed, ``n_jobs=1`` and the fit signature. :class:`CategoryFrequency` is the
trivial per-field frequency score that any learned detector has to beat.

The registry maps a name to a factory ``factory(seed) -> detector`` and an input kind;
``register_detector`` adds entries. ``"gnsm"`` and ``"gnsm-paper"`` (:func:`make_gnsm`,
:func:`make_gnsm_paper`) are registered here, once, and import :class:`gnsm.detectors.GNSMDetector`
only when first built.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..core import DETECTOR_EPS, PAPER_EPS
from ..data import TabularEncoder

__all__ = [
    "CategoryFrequency",
    "DetectorSpec",
    "INPUT_KINDS",
    "PYOD_BASELINES",
    "PyODDetector",
    "call_factory",
    "get_detector_spec",
    "list_detectors",
    "make_detector",
    "make_gnsm",
    "make_gnsm_paper",
    "register_detector",
    "warm_up_pyod",
]

INPUT_KINDS = ("onehot", "codes", "frame")


class CategoryFrequency:
    """Anomaly score = negative log-likelihood under independent per-column marginals.

    For each categorical field j with K_j slots (observed categories + the reserved unseen slot of
    :class:`~gnsm.data.TabularEncoder`) and n training rows, the Laplace-smoothed frequency is
    ``p_j(c) = (count_j(c) + alpha) / (n + alpha * K_j)``, so an unseen category gets the finite,
    large score ``-log(alpha / (n + alpha * K_j))``. The record's score is
    ``sum_j -log p_j(x_j)``. Numerical columns (standardized on the training data) add
    ``0.5 * z**2`` each (``numerical="gaussian"``, the Gaussian NLL up to a constant) or nothing
    (``numerical="ignore"``).

    Args:
        alpha: Laplace pseudo-count (> 0).
        numerical: ``"gaussian"`` or ``"ignore"``.
        encoder_params: keyword arguments for the internal :class:`TabularEncoder`
            (e.g. ``categorical=[...]``); ``unseen`` is always ``"unknown"``.
    """

    input_kind = "frame"

    def __init__(self, alpha: float = 1.0, numerical: str = "gaussian",
                 encoder_params: dict | None = None) -> None:
        self.alpha = alpha
        self.numerical = numerical
        self.encoder_params = encoder_params

    def fit(self, X: Any, y: Any = None, *, X_val: Any = None) -> "CategoryFrequency":
        """Count categories in ``X`` (``y`` and ``X_val`` are ignored: frequencies need no labels or tuning)."""
        if not self.alpha > 0:
            raise ValueError(f"alpha: expected a positive pseudo-count, got {self.alpha}")
        if self.numerical not in ("gaussian", "ignore"):
            raise ValueError(f"numerical: expected 'gaussian' or 'ignore', got {self.numerical!r}")
        params = dict(self.encoder_params or {})
        params["unseen"] = "unknown"  # unseen categories must score, not raise
        self.encoder_ = TabularEncoder(**params)
        encoded = self.encoder_.fit_transform(X)
        n = encoded.codes.shape[0]
        self.log_prob_ = []
        for j, size in enumerate(self.encoder_.field_sizes):
            counts = np.bincount(encoded.codes[:, j], minlength=size).astype(np.float64)
            self.log_prob_.append(np.log((counts + self.alpha) / (n + self.alpha * size)))
        self.decision_scores_ = self.decision_function(X)
        return self

    def score_fields(self, X: Any) -> np.ndarray:
        """Per-column contributions (n, J + D): ``-log p_j`` per field, then ``0.5 z^2``."""
        if not hasattr(self, "encoder_"):
            raise RuntimeError("CategoryFrequency is not fitted: call fit(X) first")
        encoded = self.encoder_.transform(X)
        parts = [-lp[encoded.codes[:, j]] for j, lp in enumerate(self.log_prob_)]
        if self.numerical == "gaussian":
            parts += [0.5 * encoded.numerical[:, d].astype(np.float64) ** 2
                      for d in range(encoded.numerical.shape[1])]
        if not parts:
            return np.zeros((encoded.codes.shape[0], 0))
        return np.stack(parts, axis=1)

    def decision_function(self, X: Any) -> np.ndarray:
        """Anomaly scores (higher = rarer categories)."""
        return self.score_fields(X).sum(axis=1)


class PyODDetector:
    """A PyOD model built at fit time by ``make_model(n_features)``, on ``"onehot"`` input.

    Building at fit time lets detectors that need the input width in their constructor (PyOD's
    DeepSVDD) share one wrapper with the others.
    """

    input_kind = "onehot"

    def __init__(self, make_model: Callable[[int], Any], name: str = "") -> None:
        self.make_model = make_model
        self.name = name

    def fit(self, X: np.ndarray, y: Any = None, *, X_val: Any = None) -> "PyODDetector":
        """Fit on the training inliers (unsupervised: ``y`` and ``X_val`` are ignored)."""
        X = np.asarray(X, dtype=np.float32)
        self.model_ = self.make_model(X.shape[1])
        self.model_.fit(X)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.model_.decision_function(np.asarray(X, dtype=np.float32)),
                          dtype=np.float64)


# ---------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class DetectorSpec:
    """A named detector: ``factory(seed)`` builds a fresh unfitted instance."""

    name: str
    factory: Callable[..., Any]
    input_kind: str
    description: str = ""


_DETECTORS: dict[str, DetectorSpec] = {}


def register_detector(name: str, factory: Callable[..., Any], input_kind: str,
                      description: str = "", replace: bool = False) -> None:
    """Register ``factory`` under ``name``.

    Args:
        factory: called as ``factory(seed=seed)`` if it takes a ``seed`` argument, else
            ``factory()``; returns an object with ``fit(X)`` (optionally taking ``X_val=``) and
            ``decision_function``.
        input_kind: one of :data:`INPUT_KINDS`.
        replace: overwrite an existing entry instead of raising.
    """
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind: expected one of {list(INPUT_KINDS)}, got {input_kind!r}")
    if not callable(factory):
        raise ValueError(f"factory: expected a callable, got {type(factory).__name__}")
    if name in _DETECTORS and not replace:
        raise ValueError(f"name: detector {name!r} is already registered (pass replace=True)")
    _DETECTORS[name] = DetectorSpec(name, factory, input_kind, description)


def list_detectors() -> list[str]:
    """Registered detector names."""
    return sorted(_DETECTORS)


def get_detector_spec(name: str) -> DetectorSpec:
    if name not in _DETECTORS:
        raise ValueError(f"detector: unknown name {name!r}; registered: {list_detectors()}")
    return _DETECTORS[name]


def call_factory(factory: Callable[..., Any], seed: int) -> Any:
    """``factory(seed=seed)`` when the factory accepts a seed, else ``factory()``."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return factory()
    return factory(seed=seed) if "seed" in params else factory()


def make_detector(name: str, seed: int = 42) -> Any:
    """A fresh detector from the registry; it carries the registered ``input_kind``."""
    spec = get_detector_spec(name)
    detector = call_factory(spec.factory, seed)
    if getattr(detector, "input_kind", None) is None:
        try:
            detector.input_kind = spec.input_kind
        except AttributeError:  # objects with __slots__: the protocol falls back on the spec
            pass
    return detector


# PyOD factories. Imports happen inside so gnsm works without the optional PyOD dependency.
# Settings: n_jobs=1 (benchmarks run on small CPUs), PyOD defaults otherwise; the deep models get
# preprocessing=False because their input is already one-hot / standardized (PyOD's own scaling
# divides by std + 1e-8, which blows the never-seen unseen-slot columns up to 1e8).
def _iforest(seed: int) -> PyODDetector:
    from pyod.models.iforest import IForest
    return PyODDetector(lambda d: IForest(n_estimators=100, random_state=seed, n_jobs=1), "iforest")


def _ecod(seed: int) -> PyODDetector:
    from pyod.models.ecod import ECOD
    return PyODDetector(lambda d: ECOD(n_jobs=1), "ecod")


def _copod(seed: int) -> PyODDetector:
    from pyod.models.copod import COPOD
    return PyODDetector(lambda d: COPOD(n_jobs=1), "copod")


def _lof(seed: int) -> PyODDetector:
    from pyod.models.lof import LOF
    return PyODDetector(lambda d: LOF(n_neighbors=20, n_jobs=1), "lof")


def _knn(seed: int) -> PyODDetector:
    from pyod.models.knn import KNN
    return PyODDetector(lambda d: KNN(n_neighbors=5, method="largest", n_jobs=1), "knn")


def _autoencoder(seed: int) -> PyODDetector:
    from pyod.models.auto_encoder import AutoEncoder
    return PyODDetector(lambda d: AutoEncoder(
        hidden_neuron_list=[64, 32], epoch_num=10, batch_size=32, preprocessing=False,
        device="cpu", random_state=seed, verbose=0), "autoencoder")


def _deepsvdd(seed: int) -> PyODDetector:
    from pyod.models.deep_svdd import DeepSVDD
    return PyODDetector(lambda d: DeepSVDD(
        n_features=d, hidden_neurons=[64, 32], epochs=20, batch_size=32, preprocessing=False,
        random_state=seed, verbose=0), "deepsvdd")


def _frequency(seed: int) -> CategoryFrequency:
    return CategoryFrequency(alpha=1.0, numerical="gaussian")


def make_gnsm(seed: int = 42, **params: Any) -> Any:
    """:class:`gnsm.detectors.GNSMDetector` with the package defaults, seeded by the protocol seed."""
    try:  # resolved lazily: the detector (and its network code) load only when "gnsm" is built
        from ..detectors import GNSMDetector
    except ImportError as err:
        raise ImportError(f"detector 'gnsm': gnsm.detectors.GNSMDetector is not available ({err})") from err
    return GNSMDetector(random_state=seed, **params)


def make_gnsm_paper(seed: int = 42) -> Any:
    """GNSMDetector in the paper's configuration: clip eps = PAPER_EPS, score norms + GMM."""
    return make_gnsm(seed, scoring="paper", eps=PAPER_EPS)


for _name, _factory, _kind, _desc in (
    ("iforest", _iforest, "onehot", "PyOD IForest, 100 trees"),
    ("ecod", _ecod, "onehot", "PyOD ECOD"),
    ("copod", _copod, "onehot", "PyOD COPOD"),
    ("lof", _lof, "onehot", "PyOD LOF, n_neighbors=20"),
    ("knn", _knn, "onehot", "PyOD KNN, n_neighbors=5, largest distance"),
    ("autoencoder", _autoencoder, "onehot", "PyOD AutoEncoder [64, 32], 10 epochs, batch 32"),
    ("deepsvdd", _deepsvdd, "onehot", "PyOD DeepSVDD [64, 32], 20 epochs, batch 32"),
    ("frequency", _frequency, "frame", "per-field -log category frequency (Laplace, alpha=1)"),
    ("gnsm", make_gnsm, "frame", f"GNSMDetector defaults: summed denoising error (eps={DETECTOR_EPS})"),
    ("gnsm-paper", make_gnsm_paper, "frame",
     f"GNSMDetector scoring='paper', eps={PAPER_EPS}: score norms at all temperatures + GMM"),
):
    register_detector(_name, _factory, _kind, _desc)

PYOD_BASELINES = ("iforest", "ecod", "copod", "lof", "knn", "autoencoder", "deepsvdd")


def warm_up_pyod() -> None:
    """Compile PyOD's numba kernels now, so the first timed fit does not pay for the JIT.

    PyOD's AutoEncoder scores with ``pairwise_distances_no_broadcast`` (numba): its first call
    compiles for 10-20 s, which would otherwise land in the first seed's fit time.
    """
    try:
        from pyod.utils.stat_models import pairwise_distances_no_broadcast
    except ImportError:
        return
    x = np.zeros((2, 3), dtype=np.float32)
    pairwise_distances_no_broadcast(x, x)
