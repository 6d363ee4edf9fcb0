"""``BaseDetector``: the contract shared by every gnsm detector.

The public API follows PyOD and scikit-learn: ``__init__`` only stores its arguments (so
``get_params``/``set_params``/``clone`` work), ``fit(X, y=None)`` sets ``decision_scores_``,
``threshold_`` and ``labels_``, and ``decision_function``/``predict``/``predict_proba`` score new
data. Checkpoints are a folder with ``weights.pt`` (a flat dict of tensors, read back with
``torch.load(weights_only=True)`` so loading never runs pickled code) and ``meta.json`` (class,
constructor parameters, fitted non-tensor state, gnsm version).

A subclass implements the hooks below; everything else is shared:

``_fit(X, y) -> np.ndarray | None``
    Validate ``X``/``y`` and train. May return the training scores (shape ``(n,)``, higher = more
    anomalous) when it has them anyway; if it returns ``None`` the base calls ``_score(X)``.
``_score(X) -> np.ndarray``
    Validate ``X`` and return float64 anomaly scores of shape ``(n,)``, higher = more anomalous.
    Called only on a fitted detector (the base checks first).
``_state_tensors() -> dict[str, torch.Tensor]``
    Every fitted tensor (module ``state_dict`` entries, scaler statistics, ...). Keys must not
    start with ``"_base."`` (reserved). Tensors may live on any device; the base moves them to CPU.
``_state_meta() -> dict``
    Fitted non-tensor state that is JSON-serializable (class names, chosen sizes, ...).
``_load_state(tensors, meta) -> None``
    Rebuild the fitted model on a freshly constructed instance (constructor parameters already
    set from the checkpoint) from the CPU tensors and the dict ``_state_meta`` returned; move it to
    the device the instance's parameters ask for (``resolve_device``; ``load_network`` rebuilds a
    score network from its config and weights).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.special import erf
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

__all__ = ["BaseDetector", "WEIGHTS_FILE", "META_FILE"]

WEIGHTS_FILE = "weights.pt"
META_FILE = "meta.json"
_BASE_PREFIX = "_base."
_FORMAT_VERSION = 1


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def sub_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors saved under ``prefix`` (e.g. ``"head."``), with the prefix removed."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_network(config: dict[str, Any], state: dict[str, torch.Tensor],
                 device: torch.device) -> torch.nn.Module:
    """Rebuild a network from its ``config()`` and ``state_dict`` (CPU tensors), on ``device`` in eval mode."""
    from ..models import build_model  # lazy: the models are only needed to load or fit
    model = build_model(config)
    model.load_state_dict(state)
    return model.to(device).eval()


def _gnsm_version() -> str:
    try:
        from gnsm import __version__
        return str(__version__)
    except ImportError:  # pragma: no cover - only for a broken install
        return "unknown"


def _atomic_write(path: Path, write: Any) -> None:
    """Write through ``write(file)`` into a temp file next to ``path``, then ``os.replace`` it.

    A crash mid-save leaves the previous file intact instead of a truncated one.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class BaseDetector(BaseEstimator):
    """Base class of gnsm detectors (see the module docstring for the subclass hooks).

    Args:
        contamination: expected fraction of anomalies in the training data, in (0, 0.5]; sets
            ``threshold_`` to the (1 - contamination) quantile of the training scores.

    Attributes set by ``fit``:
        decision_scores_: training anomaly scores, shape (n_samples,), higher = more anomalous.
        threshold_: score above which a sample is labelled 1 (anomaly).
        labels_: 0/1 labels of the training samples.
    """

    _registry: ClassVar[dict[str, type["BaseDetector"]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Lets ``BaseDetector.load`` find the class named in meta.json without the caller naming it.
        BaseDetector._registry[f"{cls.__module__}.{cls.__qualname__}"] = cls

    def __init__(self, contamination: float = 0.1) -> None:
        self.contamination = contamination

    # ------------------------------------------------------------------ subclass hooks
    def _fit(self, X: Any, y: Any = None) -> np.ndarray | None:
        raise NotImplementedError

    def _score(self, X: Any) -> np.ndarray:
        raise NotImplementedError

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _state_meta(self) -> dict[str, Any]:
        return {}

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ public API
    def fit(self, X: Any, y: Any = None) -> "BaseDetector":
        """Fit on training data ``X`` (``y`` is detector-specific, e.g. normal-class labels)."""
        self._check_contamination()
        scores = self._fit(X, y)
        if scores is None:
            scores = self._score(X)
        self._set_training_scores(np.asarray(scores, dtype=np.float64))
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Anomaly scores of ``X``, shape (n_samples,), higher = more anomalous."""
        self._check_fitted("decision_function")
        return np.asarray(self._score(X), dtype=np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """0/1 labels (1 = anomaly): score above ``threshold_``."""
        return (self.decision_function(X) > self.threshold_).astype(np.int64)

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit, then return ``labels_``."""
        return self.fit(X, y).labels_

    def predict_proba(self, X: Any, method: str = "linear") -> np.ndarray:
        """Anomaly probability as in PyOD, shape (n_samples, 2): [P(normal), P(anomaly)].

        ``"linear"`` min-max scales the scores by the training score range; ``"unify"`` uses
        Kriegel et al.'s Gaussian scaling, erf((s - mean) / (std * sqrt(2))), both clipped to [0, 1].
        """
        if method not in ("linear", "unify"):
            raise ValueError(f"method: expected 'linear' or 'unify', got {method!r}")
        scores = self.decision_function(X)
        train = self.decision_scores_
        if method == "linear":
            lo, hi = float(train.min()), float(train.max())
            p = (scores - lo) / (hi - lo) if hi > lo else (scores > hi).astype(np.float64)
        else:
            std = float(train.std())
            z = (scores - float(train.mean())) / (std * np.sqrt(2.0)) if std > 0 else np.sign(scores - train.mean())
            p = erf(z)
        p = np.clip(p, 0.0, 1.0)
        return np.stack([1.0 - p, p], axis=1)

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | os.PathLike) -> Path:
        """Save the fitted detector into folder ``path`` (created if missing); returns the folder.

        Writes ``weights.pt`` (tensors only, moved to CPU) and ``meta.json``, each atomically; meta
        records the SHA-256 of the weights so a mismatched pair is detected on load.
        """
        self._check_fitted("save")
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = self._state_tensors()
        clash = [k for k in tensors if k.startswith(_BASE_PREFIX)]
        if clash:
            raise ValueError(f"_state_tensors: keys {clash} use the reserved prefix {_BASE_PREFIX!r}")
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        tensors[_BASE_PREFIX + "decision_scores_"] = torch.as_tensor(self.decision_scores_, dtype=torch.float64)
        _atomic_write(folder / WEIGHTS_FILE, lambda fh: torch.save(tensors, fh))
        digest = hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest()

        cls = type(self)
        meta = {
            "format": _FORMAT_VERSION,
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "gnsm_version": _gnsm_version(),
            "params": self.get_params(deep=False),
            "threshold_": float(self.threshold_),
            "state": self._state_meta(),
            "weights_sha256": digest,
        }
        try:
            text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise TypeError(f"save: constructor parameters and _state_meta must be JSON-serializable: {err}") from err
        _atomic_write(folder / META_FILE, lambda fh: fh.write(text.encode("utf-8")))
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike, **overrides: Any) -> "BaseDetector":
        """Load a detector saved by ``save``; works on CPU-only machines for GPU-trained models.

        ``BaseDetector.load`` returns an instance of the saved class; ``SomeDetector.load`` also
        checks that the checkpoint holds a ``SomeDetector``. ``overrides`` replace constructor
        parameters before the state is loaded (e.g. ``device="cpu"``).
        """
        folder = Path(path)
        meta_path, weights_path = folder / META_FILE, folder / WEIGHTS_FILE
        for p in (meta_path, weights_path):
            if not p.is_file():
                raise FileNotFoundError(f"path: {p} not found; expected a folder written by save()")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != _FORMAT_VERSION:
            raise ValueError(f"{meta_path}: unsupported checkpoint format {meta.get('format')!r}")
        digest = hashlib.sha256(weights_path.read_bytes()).hexdigest()
        if digest != meta.get("weights_sha256"):
            raise ValueError(f"{weights_path}: checksum differs from {META_FILE}; the two files are not from one save")
        target = BaseDetector._registry.get(meta["class"])
        if target is None:
            raise ValueError(f"{meta_path}: unknown detector class {meta['class']!r} (is its module imported?)")
        if not issubclass(target, cls):
            raise TypeError(f"{meta_path}: holds a {target.__name__}, not a {cls.__name__}")
        tensors = torch.load(weights_path, map_location="cpu", weights_only=True)
        det = target(**{**meta["params"], **overrides})
        scores = tensors.pop(_BASE_PREFIX + "decision_scores_").numpy().astype(np.float64)
        det._load_state(tensors, meta["state"])
        det.decision_scores_ = scores
        det.threshold_ = float(meta["threshold_"])
        det.labels_ = (scores > det.threshold_).astype(np.int64)
        return det

    # ------------------------------------------------------------------ helpers
    def _check_contamination(self) -> None:
        c = self.contamination
        if isinstance(c, bool) or not isinstance(c, (int, float, np.floating)) or not 0.0 < float(c) <= 0.5:
            raise ValueError(f"contamination: expected a float in (0, 0.5], got {c!r}")

    def _set_training_scores(self, scores: np.ndarray) -> None:
        if scores.ndim != 1 or not np.isfinite(scores).all():
            raise RuntimeError(f"{type(self).__name__}: training scores must be a finite 1-D array")
        self.decision_scores_ = scores
        self.threshold_ = float(np.percentile(scores, 100.0 * (1.0 - float(self.contamination))))
        self.labels_ = (scores > self.threshold_).astype(np.int64)

    def _check_fitted(self, method: str) -> None:
        if not hasattr(self, "threshold_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet: call fit(X) "
                                 f"before {method}().")

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "threshold_")
