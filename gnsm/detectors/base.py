"""``BaseDetector``: the contract shared by every gnsm detector.

The public API follows PyOD and scikit-learn: ``__init__`` only stores its arguments (so
``get_params``/``set_params``/``clone`` work), ``fit(X, y=None, **fit_params)`` sets
``decision_scores_``, ``threshold_`` and ``labels_``, and ``decision_function``/``predict``/
``predict_proba`` score new data.

Extra inputs go through keyword arguments, never through attributes set before a call:

* fit parameters (``fit(X, y, **fit_params)``), e.g. validation data ``X_val`` or conditioning
  images ``cond``, are the keyword-only parameters of the subclass's ``_fit``;
* scoring parameters (``decision_function(X, **score_params)``, likewise ``predict`` and
  ``predict_proba``), e.g. ``cond``, are the keyword-only parameters of the subclass's ``_score``.

A name the detector does not take raises ``TypeError`` naming it and the accepted ones.

Checkpoints are a folder with ``weights.pt`` (a flat dict of tensors, read back with
``torch.load(weights_only=True)`` so loading never runs pickled code) and ``meta.json`` (class,
constructor parameters, fitted non-tensor state, gnsm version). ``meta.json`` records the SHA-256
of ``weights.pt`` and of its own content, so a changed or mismatched file is refused on load. The
folder is written as a temporary sibling and renamed into place (``gnsm.core.atomic_replace_dir``):
a failed or killed save leaves the model already in the folder intact. A load problem (missing,
truncated or edited file) raises one ``ValueError`` naming the file and what is wrong.

A subclass implements the hooks below; everything else is shared:

``_fit(X, y, *, <fit params>) -> np.ndarray | None``
    Validate ``X``/``y`` and train. May return the training scores (shape ``(n,)``, higher = more
    anomalous) when it has them anyway; if it returns ``None`` the base calls ``_score(X)``.
``_score(X, *, <scoring params>) -> np.ndarray``
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

import contextlib
import hashlib
import inspect
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch
from scipy.special import erf
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from ..core import atomic_replace_dir, interrupted_replace

__all__ = ["BaseDetector", "WEIGHTS_FILE", "META_FILE", "contamination_threshold", "load_network", "resolve_device",
           "sub_state"]

WEIGHTS_FILE = "weights.pt"
META_FILE = "meta.json"


def contamination_threshold(scores: Any, contamination: float) -> float:
    """The score above which a case is flagged: the ``1 - contamination`` quantile of training scores
    (``threshold_`` of every detector; evaluations threshold other scores the same way)."""
    return float(np.percentile(np.asarray(scores, dtype=np.float64), 100.0 * (1.0 - float(contamination))))

_BASE_PREFIX = "_base."
_FORMAT_VERSION = 2  # 2: meta.json also records the SHA-256 of its own content
_READABLE_FORMATS = (1, 2)  # 1: only the weights were covered by a checksum
_META_KEYS = ("format", "class", "params", "threshold_", "state", "weights_sha256")
_META_DIGEST = "meta_sha256"


def resolve_device(device: str | torch.device, name: str = "device") -> torch.device:
    """The torch device a ``device`` parameter names: ``"auto"`` (CUDA when available, else CPU),
    ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (or a ``torch.device`` of those).

    Raises ``ValueError`` naming ``name`` for an unknown or unsupported device, and for CUDA when
    no CUDA device (or not device N) is present.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise ValueError(f"{name}: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    else:
        raise ValueError(f"{name}: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {type(device).__name__} "
                         f"{device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}: {device!r} asks for CUDA, but no CUDA device is available here; "
                             "use 'cpu' or 'auto'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name}: {device!r} asks for CUDA device {dev.index}, but only "
                             f"{torch.cuda.device_count()} are present")
    elif dev.type != "cpu":
        raise ValueError(f"{name}: device type {dev.type!r} is not supported; expected 'auto', 'cpu', "
                         "'cuda' or 'cuda:N'")
    return dev


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


def _meta_digest(meta: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``meta`` without its own digest (key order and layout do not
    matter; any change of a value, including the order of a stored list, does)."""
    body = {k: v for k, v in meta.items() if k != _META_DIGEST}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _keyword_params(method: Callable[..., Any]) -> tuple[str, ...]:
    """Names of the keyword-only parameters of ``method`` (the extra inputs a hook takes)."""
    return tuple(p.name for p in inspect.signature(method).parameters.values() if p.kind is p.KEYWORD_ONLY)


def _is_saved_model(folder: Path) -> bool:
    return {p.name for p in folder.iterdir()} <= {META_FILE, WEIGHTS_FILE}


def _read_meta(meta_path: Path) -> dict[str, Any]:
    try:
        text = meta_path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{meta_path}: not UTF-8 text ({err.reason} at byte {err.start}); the file is "
                         "corrupt") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta_path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
                         "the file is truncated or corrupt") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: expected a JSON object, got a JSON {type(meta).__name__}")
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{meta_path}: missing key(s) {missing}; expected a file written by save()")
    if meta["format"] not in _READABLE_FORMATS:
        raise ValueError(f"{meta_path}: unsupported checkpoint format {meta['format']!r} "
                         f"(this gnsm reads {list(_READABLE_FORMATS)})")
    if meta["format"] >= 2 and meta.get(_META_DIGEST) != _meta_digest(meta):
        raise ValueError(f"{meta_path}: content differs from its recorded checksum ({_META_DIGEST}); the file "
                         "was edited or is corrupt")
    for key, kind in (("class", str), ("params", dict), ("state", dict), ("weights_sha256", str)):
        if not isinstance(meta[key], kind):
            raise ValueError(f"{meta_path}: {key!r} must be a JSON {kind.__name__}, got "
                             f"{type(meta[key]).__name__}")
    if isinstance(meta["threshold_"], bool) or not isinstance(meta["threshold_"], (int, float)):
        raise ValueError(f"{meta_path}: 'threshold_' must be a number, got {meta['threshold_']!r}")
    return meta


def _read_weights(weights_path: Path) -> dict[str, torch.Tensor]:
    try:
        tensors = torch.load(weights_path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise ValueError(f"{weights_path}: cannot be read as saved weights ({err})") from None
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise ValueError(f"{weights_path}: expected a dict of tensors")
    if _BASE_PREFIX + "decision_scores_" not in tensors:
        raise ValueError(f"{weights_path}: missing the training scores ({_BASE_PREFIX}decision_scores_)")
    return tensors


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
    @classmethod
    def fit_param_names(cls) -> tuple[str, ...]:
        """The extra keyword inputs ``fit`` takes (the keyword-only parameters of ``_fit``)."""
        return _keyword_params(cls._fit)

    @classmethod
    def score_param_names(cls) -> tuple[str, ...]:
        """The extra keyword inputs of ``decision_function`` / ``predict`` / ``predict_proba``."""
        return _keyword_params(cls._score)

    def fit(self, X: Any, y: Any = None, **fit_params: Any) -> "BaseDetector":
        """Fit on training data ``X`` (``y`` is detector-specific, e.g. normal-class labels);
        ``fit_params`` are the detector's extra inputs (:meth:`fit_param_names`)."""
        with self._unchanged_on_error():
            self._check_extra("fit", fit_params, self.fit_param_names())
            self._check_contamination()
            scores = self._fit(X, y, **fit_params)
            if scores is None:
                scores = self._score(X, **{k: v for k, v in fit_params.items() if k in self.score_param_names()})
            self._set_training_scores(np.asarray(scores, dtype=np.float64))
        return self

    def decision_function(self, X: Any, **score_params: Any) -> np.ndarray:
        """Anomaly scores of ``X``, shape (n_samples,), higher = more anomalous; ``score_params`` are
        the detector's extra scoring inputs (:meth:`score_param_names`)."""
        self._check_fitted("decision_function")
        self._check_extra("decision_function", score_params, self.score_param_names())
        return np.asarray(self._score(X, **score_params), dtype=np.float64)

    def predict(self, X: Any, **score_params: Any) -> np.ndarray:
        """0/1 labels (1 = anomaly): score above ``threshold_``."""
        return (self.decision_function(X, **score_params) > self.threshold_).astype(np.int64)

    def fit_predict(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """Fit, then return ``labels_``."""
        return self.fit(X, y, **fit_params).labels_

    def predict_proba(self, X: Any, method: str = "linear", **score_params: Any) -> np.ndarray:
        """Anomaly probability as in PyOD, shape (n_samples, 2): [P(normal), P(anomaly)].

        ``"linear"`` min-max scales the scores by the training score range; ``"unify"`` uses
        Kriegel et al.'s Gaussian scaling, erf((s - mean) / (std * sqrt(2))), both clipped to [0, 1].
        """
        if method not in ("linear", "unify"):
            raise ValueError(f"method: expected 'linear' or 'unify', got {method!r}")
        scores = self.decision_function(X, **score_params)
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
        """Save the fitted detector into folder ``path``; returns the folder.

        The folder is filled as a temporary sibling and renamed into place, so a failed save leaves
        what was there before intact. An existing folder is replaced only when it holds nothing but
        a saved model (``weights.pt`` / ``meta.json``); otherwise ``ValueError``.
        """
        self._check_fitted("save")
        folder = Path(path)
        tensors = self._state_tensors()
        clash = [k for k in tensors if k.startswith(_BASE_PREFIX)]
        if clash:
            raise ValueError(f"_state_tensors: keys {clash} use the reserved prefix {_BASE_PREFIX!r}")
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        tensors[_BASE_PREFIX + "decision_scores_"] = torch.as_tensor(self.decision_scores_, dtype=torch.float64)
        cls = type(self)
        meta = {
            "format": _FORMAT_VERSION,
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "gnsm_version": _gnsm_version(),
            "params": self.get_params(deep=False),
            "threshold_": float(self.threshold_),
            "state": self._state_meta(),
            "weights_sha256": "",
        }
        try:  # before anything is written: a state that cannot be stored must not cost the old model
            json.dumps(meta, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise TypeError(f"save: constructor parameters and _state_meta must be JSON-serializable: {err}") from err

        def fill(tmp: Path) -> None:
            torch.save(tensors, tmp / WEIGHTS_FILE)
            meta["weights_sha256"] = hashlib.sha256((tmp / WEIGHTS_FILE).read_bytes()).hexdigest()
            meta[_META_DIGEST] = _meta_digest(meta)
            text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False)
            (tmp / META_FILE).write_text(text, encoding="utf-8")

        atomic_replace_dir(folder, fill, may_replace=_is_saved_model)
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike, **overrides: Any) -> "BaseDetector":
        """Load a detector saved by ``save``; works on CPU-only machines for GPU-trained models.

        ``BaseDetector.load`` returns an instance of the saved class; ``SomeDetector.load`` also
        checks that the checkpoint holds a ``SomeDetector``. ``overrides`` replace constructor
        parameters before the state is loaded (e.g. ``device="cpu"``). A missing folder or file
        raises ``FileNotFoundError``; a corrupt, truncated or edited one ``ValueError`` naming it.
        """
        folder = Path(path)
        meta_path, weights_path = folder / META_FILE, folder / WEIGHTS_FILE
        aside = interrupted_replace(folder)
        if aside is not None:
            raise FileNotFoundError(f"path: {folder} not found; a save into it was interrupted and the model "
                                    f"that was there is in {aside}: rename that folder to {folder.name}")
        for p in (meta_path, weights_path):
            if not p.is_file():
                raise FileNotFoundError(f"path: {p} not found; expected a folder written by save()")
        meta = _read_meta(meta_path)
        digest = hashlib.sha256(weights_path.read_bytes()).hexdigest()
        if digest != meta["weights_sha256"]:
            raise ValueError(f"{weights_path}: checksum differs from the one recorded in {META_FILE}; the file "
                             "is truncated, corrupt or from another save")
        target = BaseDetector._registry.get(meta["class"])
        if target is None:
            raise ValueError(f"{meta_path}: unknown detector class {meta['class']!r} (is its module imported?)")
        if not issubclass(target, cls):
            raise TypeError(f"{meta_path}: holds a {target.__name__}, not a {cls.__name__}")
        tensors = _read_weights(weights_path)
        det = target(**{**meta["params"], **overrides})
        scores = tensors.pop(_BASE_PREFIX + "decision_scores_").numpy().astype(np.float64)
        try:
            det._load_state(tensors, meta["state"])
        except (KeyError, IndexError, TypeError) as err:
            raise ValueError(f"{folder}: the saved state is incomplete or does not match "
                             f"{target.__name__} ({type(err).__name__}: {err})") from err
        det.decision_scores_ = scores
        det.threshold_ = float(meta["threshold_"])
        det.labels_ = (scores > det.threshold_).astype(np.int64)
        return det

    # ------------------------------------------------------------------ helpers
    @contextlib.contextmanager
    def _unchanged_on_error(self) -> Iterator[None]:
        """Put every attribute back as it was when the block raises (any error, also KeyboardInterrupt).

        A refit that fails half-way would otherwise leave new parts beside old ones (a new encoder
        beside the old network and threshold) that score, or save, a model nobody trained. Fitting
        assigns new objects to the attributes rather than changing the old ones, so restoring the
        attribute dict restores the fitted model; a first fit that fails leaves the detector unfitted.
        """
        before = dict(vars(self))
        try:
            yield
        except BaseException:
            vars(self).clear()
            vars(self).update(before)
            raise

    def _check_extra(self, method: str, given: dict[str, Any], accepted: tuple[str, ...]) -> None:
        unknown = sorted(set(given) - set(accepted))
        if unknown:
            raise TypeError(f"{type(self).__name__}.{method}: unexpected keyword argument(s) {unknown}; "
                            f"accepted: {list(accepted)}")

    def _check_contamination(self) -> None:
        c = self.contamination
        if isinstance(c, bool) or not isinstance(c, (int, float, np.floating)) or not 0.0 < float(c) <= 0.5:
            raise ValueError(f"contamination: expected a float in (0, 0.5], got {c!r}")

    def _set_training_scores(self, scores: np.ndarray) -> None:
        if scores.ndim != 1 or not np.isfinite(scores).all():
            raise RuntimeError(f"{type(self).__name__}: training scores must be a finite 1-D array")
        self.decision_scores_ = scores
        self.threshold_ = contamination_threshold(scores, self.contamination)
        self.labels_ = (scores > self.threshold_).astype(np.int64)

    def _check_fitted(self, method: str) -> None:
        if not hasattr(self, "threshold_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet: call fit(X) "
                                 f"before {method}().")

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "threshold_")
