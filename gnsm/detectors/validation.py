"""Input and parameter checks shared by the detectors.

Detectors accept pandas DataFrames, numpy arrays, tensors and nested lists. These helpers turn
them into float tensors and raise a ``ValueError`` that names the argument and the problem
(NaN/inf, wrong number of dimensions, empty input, label length), so every detector reports bad
input the same way. The ``check_*_param`` helpers do the same for constructor parameters, which
detectors check at the start of ``fit`` (scikit-learn convention: ``__init__`` only stores them):
every bad parameter value raises ``ValueError`` naming the parameter, whatever is wrong with it.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["as_float_tensor", "check_bool_param", "check_choice", "check_float_param", "check_int_param",
           "check_int_sequence_param", "check_labels", "check_n_features", "check_same_length"]


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _to_numpy(X: Any, name: str) -> np.ndarray:
    """Any supported container -> numpy array (no copy when possible)."""
    if isinstance(X, torch.Tensor):
        return X.detach().cpu().numpy()
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(X, (pd.DataFrame, pd.Series)):
        frame = X.to_frame() if isinstance(X, pd.Series) else X
        bad = [str(c) for c, dt in frame.dtypes.items()
               if not (pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt))]
        if bad:
            raise ValueError(f"{name}: expected numerical columns, found non-numerical columns {bad}")
        values = frame.to_numpy(dtype=np.float64, na_value=np.nan)
        return values.ravel() if isinstance(X, pd.Series) else values
    return np.asarray(X)


def as_float_tensor(
    X: Any,
    name: str = "X",
    *,
    ndim: int | Sequence[int] | None = 2,
    dtype: torch.dtype = torch.float32,
    allow_empty: bool = False,
) -> torch.Tensor:
    """Convert ``X`` to a CPU float tensor and check it.

    Args:
        X: DataFrame (numerical columns), numpy array, tensor or nested list.
        name: argument name used in error messages.
        ndim: accepted number(s) of dimensions; ``None`` accepts any.
        dtype: floating dtype of the result.
        allow_empty: accept zero samples (first axis of length 0).

    Raises:
        ValueError: non-numerical data, wrong ``ndim``, empty input, or NaN/inf values (the
            message gives the count and the index of the first one).
    """
    arr = _to_numpy(X, name)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name}: expected numerical values, got dtype {arr.dtype}") from err
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(str(d) for d in allowed)
            hint = " (n_samples, n_features)" if allowed == (2,) else ""
            raise ValueError(f"{name}: expected a {want}-D array{hint}, got shape {arr.shape}")
    if arr.ndim == 0 or (arr.shape[0] == 0 and not allow_empty):
        raise ValueError(f"{name}: empty input (shape {arr.shape}); expected at least one sample")
    if arr.ndim >= 2 and any(s == 0 for s in arr.shape[1:]):
        raise ValueError(f"{name}: no features (shape {arr.shape})")
    if np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.complexfloating):
        bad = ~np.isfinite(arr)
        if bad.any():
            kind = "NaN" if np.isnan(arr).any() else "inf"
            raise ValueError(f"{name}: found {int(bad.sum())} non-finite value(s) ({kind}), first at "
                             f"index {_first_index(bad)}; impute or drop them before fitting")
    if np.iscomplexobj(arr):
        raise ValueError(f"{name}: complex values are not supported")
    if not arr.flags.writeable:  # torch cannot share read-only memory (e.g. a cached array): copy it
        arr = np.array(arr)
    return torch.as_tensor(np.ascontiguousarray(arr), dtype=dtype)


def check_labels(y: Any, n_samples: int, name: str = "y") -> np.ndarray:
    """Check a 1-D label vector of length ``n_samples`` and return it as a numpy array.

    Labels may be of any hashable, sortable type (ints, strings). Raises ``ValueError`` for a wrong
    length, more than one dimension, or missing (NaN/None) labels.
    """
    arr = _to_numpy(y, name)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D label vector, got shape {arr.shape}")
    if arr.shape[0] != n_samples:
        raise ValueError(f"{name}: expected {n_samples} labels (one per sample of X), got {arr.shape[0]}")
    if arr.dtype == object:
        missing = np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in arr], dtype=bool)
    elif np.issubdtype(arr.dtype, np.floating):
        missing = np.isnan(arr)
    else:
        missing = np.zeros(arr.shape, dtype=bool)
    if missing.any():
        raise ValueError(f"{name}: found {int(missing.sum())} missing label(s), first at index "
                         f"{_first_index(missing)}")
    return arr


def check_n_features(X: torch.Tensor, expected: int, name: str = "X") -> None:
    """Raise ``ValueError`` when ``X`` (n, d, ...) does not have ``expected`` features on axis 1."""
    if X.shape[1] != expected:
        raise ValueError(f"{name}: expected {expected} features (as in fit), got {X.shape[1]}")


def check_same_length(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same number of rows."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{name_b}: expected {a.shape[0]} rows (one per row of {name_a}), got {b.shape[0]}")


# ---------------------------------------------------------------------------- constructor parameters

def check_int_param(value: Any, name: str, *, low: int | None = None, high: int | None = None,
                    allow_none: bool = False, expected: str | None = None) -> int | None:
    """``value`` as an int in ``[low, high]``; a bool, a float (even 2.0) or a string raises ``ValueError``.

    ``expected`` replaces the generated description of the accepted values in the message.
    """
    if value is None and allow_none:
        return None
    ok = isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))
    if ok and (low is None or value >= low) and (high is None or value <= high):
        return int(value)
    if expected is None:
        bounds = (f">= {low}" if high is None else f"in [{low}, {high}]") if low is not None else (
            "" if high is None else f"<= {high}")
        expected = f"an integer {bounds}".rstrip() + (" or None" if allow_none else "")
    raise ValueError(f"{name}: expected {expected}, got {value!r}")


def check_float_param(value: Any, name: str, *, low: float | None = None, high: float | None = None,
                      low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float within the bounds (open or closed); anything else raises ``ValueError``."""
    ok = isinstance(value, Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = ((low is None or (v > low if low_open else v >= low))
              and (high is None or (v < high if high_open else v <= high)))
    if ok:
        return float(value)
    lo = "" if low is None else f"{'(' if low_open else '['}{low}"
    hi = "" if high is None else f"{high}{')' if high_open else ']'}"
    where = f" in {lo or '(-inf'}, {hi or 'inf)'}" if (lo or hi) else ""
    raise ValueError(f"{name}: expected a finite number{where}, got {value!r}")


def check_choice(value: Any, name: str, choices: Sequence[Any], *, allow_none: bool = False) -> Any:
    """``value`` if it is one of ``choices`` (or None when allowed), else ``ValueError``."""
    if (value is None and allow_none) or (isinstance(value, str) and value in choices):
        return value
    extra = " or None" if allow_none else ""
    raise ValueError(f"{name}: expected one of {list(choices)}{extra}, got {value!r}")


def check_int_sequence_param(value: Any, name: str, *, low: int | None = None, allow_none: bool = False,
                             allow_empty: bool = False) -> tuple[int, ...] | None:
    """``value`` as a tuple of ints, each ``>= low`` (a list, tuple or 1-D array; a bare number, a string,
    a bool or a float element raises ``ValueError`` naming ``name`` or ``name[i]``)."""
    if value is None and allow_none:
        return None
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or (not value and not allow_empty):
        kind = "a sequence of integers" if allow_empty else "a non-empty sequence of integers"
        raise ValueError(f"{name}: expected {kind}{' or None' if allow_none else ''}, got {value!r}")
    return tuple(check_int_param(v, f"{name}[{i}]", low=low) for i, v in enumerate(value))


def check_bool_param(value: Any, name: str) -> bool:
    """``value`` if it is a bool (or numpy bool), else ``ValueError``: a string such as ``"no"`` is truthy."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"{name}: expected True or False, got {value!r}")
