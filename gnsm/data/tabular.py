"""Tabular encoding: a pandas table (or an array of codes) -> integer field codes + numericals.

GNSM and the baselines need the same view of a table: J categorical fields as integer codes in
``[0, K_j)`` and D numerical columns standardized with the training statistics. This module holds
that conversion, with every policy explicit (unseen categories, missing values, constant columns,
column mismatches between fit and transform) so a detector never guesses silently.

Policies (constructor arguments):

- ``unseen="unknown"`` (default): every field reserves one extra slot, index ``K_j - 1``, for a
  category not seen at fit time. The slot is never used in training data, so a record landing in it
  is itself an anomaly signal. ``unseen="raise"``: no slot is reserved and transform raises a
  ``ValueError`` naming the column and the value.
- ``missing="category"`` (default): NaN / None / any of ``missing_values`` (``"?"`` by default)
  become one category of their own (stored as ``None`` in ``categories_``). If a column had no
  missing value at fit time, a missing value at transform time is an unseen category.
  ``missing="raise"``: a missing categorical value raises a ``ValueError``.
- ``numerical_nan="raise"`` (default): NaN/inf in a numerical column raises a ``ValueError``;
  ``"impute"`` replaces NaN by the training mean (inf still raises).
- ``constant="keep"`` (default): a single-valued column (one distinct value at fit time, missing
  counted as a value) is kept, because a different value there is the plainest anomaly a table can
  show. A categorical one becomes a field with its one value (plus the reserved unseen slot); a
  numerical one with zero variance is standardized with the scale ``CONSTANT_RELATIVE_SCALE *
  max(1, |value|)`` (1 % of the value's magnitude), so a deviation shows as a large z-score instead
  of a division by zero. Kept constant columns are listed in ``constant_columns_``.
  ``constant="drop"``: they are dropped with a ``UserWarning`` and listed in ``dropped_columns_``
  (the former behaviour).
- Column typing: ``category``/``object``/``string``/``bool`` dtypes are categorical, numeric dtypes
  numerical; ``categorical=[...]`` / ``numerical=[...]`` override per column. Integer columns are
  numerical unless named in ``categorical``.
- A 2-D integer numpy array (or tensor) is taken as already-encoded categorical codes: field ``j``
  has categories ``0..max_j`` (the maximum seen at fit), codes above it are unseen.
"""
from __future__ import annotations

import warnings
from typing import Any, NamedTuple, Sequence

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from ..core import FieldLayout, near_zero_scale, standardize

__all__ = ["EncodedTable", "TabularEncoder", "one_hot"]

_FORMAT = "gnsm.TabularEncoder"
_FORMAT_VERSION = 1
_UNSEEN = ("unknown", "raise")
_MISSING = ("category", "raise")
_NUMERICAL_NAN = ("raise", "impute")
_CONSTANT = ("keep", "drop")
#: scale of a kept zero-variance numerical column, relative to max(1, |value|): a deviation of 1 % of the
#: value's magnitude reads as one standard deviation
CONSTANT_RELATIVE_SCALE = 0.01
_COMPARABLE_KINDS = {"string", "number", "boolean", "bytes"}


class EncodedTable(NamedTuple):
    """Output of :meth:`TabularEncoder.transform`: ``codes`` (n, J) int64, ``numerical`` (n, D) float32."""

    codes: np.ndarray
    numerical: np.ndarray


def one_hot(codes: np.ndarray, field_sizes: Sequence[int]) -> np.ndarray:
    """One-hot encode field codes (n, J) into a float32 (n, sum(field_sizes)) matrix.

    Fields are laid side by side in column order, as PyOD-style detectors expect.
    """
    codes = np.asarray(codes)
    if len(field_sizes) == 0:  # an all-numerical table: no fields, no columns
        if codes.ndim != 2 or codes.shape[1] != 0:
            raise ValueError(f"codes: expected shape (n, 0), got {codes.shape}")
        return np.zeros((codes.shape[0], 0), dtype=np.float32)
    layout = FieldLayout.from_sizes(field_sizes)
    sizes = np.asarray(layout.sizes, dtype=np.int64)
    if codes.ndim != 2 or codes.shape[1] != len(sizes):
        raise ValueError(f"codes: expected shape (n, {len(sizes)}), got {codes.shape}")
    if codes.size and (codes.min() < 0 or (codes >= sizes[None, :]).any()):
        raise ValueError("codes: values must lie in [0, field_sizes[j]) for every field j")
    offsets = np.asarray(layout.offsets[:-1], dtype=np.int64)
    out = np.zeros((codes.shape[0], layout.width), dtype=np.float32)
    out[np.arange(codes.shape[0])[:, None], codes + offsets[None, :]] = 1.0
    return out


def _to_python(value: Any) -> Any:
    """numpy scalar -> Python scalar, so categories serialize to JSON."""
    return value.item() if isinstance(value, np.generic) else value


def _sorted_values(values: list) -> list:
    try:
        return sorted(values)
    except TypeError:  # mixed types (e.g. 1 and "a") in an object column
        return sorted(values, key=lambda v: (type(v).__name__, str(v)))


def _is_categorical_dtype(dtype: Any) -> bool:
    return (isinstance(dtype, pd.CategoricalDtype) or ptypes.is_object_dtype(dtype)
            or ptypes.is_string_dtype(dtype) or ptypes.is_bool_dtype(dtype))


def _is_numerical_dtype(dtype: Any) -> bool:
    return (ptypes.is_numeric_dtype(dtype) and not ptypes.is_bool_dtype(dtype)
            and not ptypes.is_complex_dtype(dtype))


def _check_text(values: pd.Series, col: Any) -> None:
    """A string no text encoding can store (a lone UTF-16 surrogate, e.g. from a bad decode) is an input
    error naming the column and row, not a UnicodeEncodeError from deep inside pandas / pyarrow."""
    if not (values.dtype == object or pd.api.types.is_string_dtype(values.dtype)):
        return
    for u in pd.unique(values.to_numpy(dtype=object)):
        if isinstance(u, str) and not u.isascii():
            try:
                u.encode("utf-8")
            except UnicodeEncodeError as exc:
                row = int(np.argmax(values.to_numpy(dtype=object) == u))
                raise ValueError(f"X: column {col!r} row {row}: the string {u!r} holds a lone surrogate "
                                 f"({exc.reason}); clean the text first, e.g. "
                                 "s.encode('utf-8', 'replace').decode()") from None


def _value_kind(values: pd.Series) -> str:
    """Coarse kind of the non-missing values: 'string', 'number', 'boolean', 'empty' or other."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = pd.Series(values.cat.categories)
    kind = ptypes.infer_dtype(values, skipna=True)
    if kind in ("integer", "floating", "mixed-integer-float", "decimal"):
        return "number"
    return kind


class TabularEncoder:
    """Encode a table into integer field codes and standardized numerical columns.

    Args:
        categorical: column names to treat as categorical whatever their dtype.
        numerical: column names to treat as numerical (must have a numeric dtype).
        unseen: ``"unknown"`` (reserve slot ``K_j - 1`` per field) or ``"raise"``.
        missing: ``"category"`` (missing values are a category) or ``"raise"``.
        missing_values: extra values read as missing in categorical columns (NaN/None always are).
        numerical_nan: ``"raise"`` or ``"impute"`` (training mean) for NaN in numerical columns.
        constant: ``"keep"`` (single-valued columns stay, see the module docstring) or ``"drop"``.

    After :meth:`fit`: ``categorical_columns``, ``numerical_columns`` (kept, in input order),
    ``field_sizes`` (K_j including the reserved slot), ``categories_`` (column -> list of
    values, ``None`` = the missing category), ``dropped_columns_``, ``feature_names_in_``,
    ``mean_`` / ``scale_`` (numerical standardization), ``constant_columns_`` (kept single-valued
    columns).
    """

    def __init__(
        self,
        categorical: Sequence[Any] | None = None,
        numerical: Sequence[Any] | None = None,
        unseen: str = "unknown",
        missing: str = "category",
        missing_values: Sequence[Any] = ("?",),
        numerical_nan: str = "raise",
        constant: str = "keep",
    ) -> None:
        # scikit-learn convention: only store the arguments; they are checked in fit.
        self.categorical = categorical
        self.numerical = numerical
        self.unseen = unseen
        self.missing = missing
        self.missing_values = missing_values
        self.numerical_nan = numerical_nan
        self.constant = constant

    # ------------------------------------------------------------------ public API
    @property
    def field_sizes(self) -> list[int]:
        """K_j per kept categorical field, including the reserved unknown slot."""
        self._check_fitted()
        extra = 1 if self.unseen == "unknown" else 0
        return [len(self.categories_[c]) + extra for c in self.categorical_columns]

    @property
    def n_fields(self) -> int:
        self._check_fitted()
        return len(self.categorical_columns)

    @property
    def n_numerical(self) -> int:
        self._check_fitted()
        return len(self.numerical_columns)

    def unknown_index(self, column: Any) -> int | None:
        """Code of the reserved unseen slot of ``column`` (None under ``unseen="raise"``)."""
        self._check_fitted()
        if column not in self.categories_:
            raise KeyError(f"column: {column!r} is not a kept categorical column")
        return len(self.categories_[column]) if self.unseen == "unknown" else None

    def fit(self, X: Any, y: Any = None) -> "TabularEncoder":
        """Learn columns, categories and numerical statistics from ``X`` (``y`` is ignored)."""
        self._check_params()
        frame, kind = self._as_frame(X, fitting=True)
        self.input_kind_ = kind
        self.feature_names_in_ = list(frame.columns)
        cat_cols, num_cols = self._split_columns(frame)

        self.categories_: dict[Any, list] = {}
        self.value_kinds_: dict[Any, str] = {}
        dropped, constant = [], []
        keep = self.constant == "keep"
        for col in cat_cols:
            _check_text(frame[col], col)
            cats = self._fit_categorical(frame[col], col)
            if self._single_valued(frame[col], cats):
                (constant if keep else dropped).append(col)
                if not keep:
                    continue
            self.categories_[col] = cats
        means, scales, kept_num = [], [], []
        for col in num_cols:
            mean, scale = self._fit_numerical(frame[col], col)
            if scale == 0.0:
                if not keep:
                    dropped.append(col)
                    continue
                constant.append(col)
                scale = CONSTANT_RELATIVE_SCALE * max(1.0, abs(mean))
            means.append(mean)
            scales.append(scale)
            kept_num.append(col)

        order = {c: i for i, c in enumerate(self.feature_names_in_)}
        self.dropped_columns_ = sorted(dropped, key=order.__getitem__)
        self.constant_columns_ = sorted(constant, key=order.__getitem__)
        self.categorical_columns = [c for c in cat_cols if c in self.categories_]
        self.numerical_columns = kept_num
        self.mean_ = np.asarray(means, dtype=np.float64)
        self.scale_ = np.asarray(scales, dtype=np.float64)
        if self.dropped_columns_:
            warnings.warn(
                f"TabularEncoder: dropping single-valued column(s) {self.dropped_columns_} "
                "(one distinct value at fit time carries no information)",
                UserWarning, stacklevel=2)
        if not self.categorical_columns and not self.numerical_columns:
            raise ValueError(
                f"X: every column is single-valued ({self.dropped_columns_}); nothing to encode")
        return self

    def transform(self, X: Any) -> EncodedTable:
        """Encode ``X`` with the fitted state; see the module docstring for the policies."""
        self._check_fitted()
        frame, kind = self._as_frame(X, fitting=False)
        frame = self._align_columns(frame, kind)
        n = len(frame)
        codes = np.empty((n, len(self.categorical_columns)), dtype=np.int64)
        for j, col in enumerate(self.categorical_columns):
            _check_text(frame[col], col)
            codes[:, j] = self._encode_categorical(frame[col], col)
        numerical = np.empty((n, len(self.numerical_columns)), dtype=np.float32)
        for d, col in enumerate(self.numerical_columns):
            numerical[:, d] = self._encode_numerical(frame[col], col, d)
        return EncodedTable(codes, numerical)

    def fit_transform(self, X: Any, y: Any = None) -> EncodedTable:
        """``fit(X)`` then ``transform(X)``."""
        return self.fit(X).transform(X)

    def to_dict(self) -> dict:
        """The fitted state as a JSON-serializable dict (see :meth:`from_dict`)."""
        self._check_fitted()
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "params": {
                "categorical": (None if self.categorical is None
                                else [_to_python(c) for c in self.categorical]),
                "numerical": (None if self.numerical is None
                              else [_to_python(c) for c in self.numerical]),
                "unseen": self.unseen,
                "missing": self.missing,
                "missing_values": [_to_python(v) for v in self.missing_values],
                "numerical_nan": self.numerical_nan,
                "constant": self.constant,
            },
            "input_kind": self.input_kind_,
            "feature_names_in": [_to_python(c) for c in self.feature_names_in_],
            "dropped_columns": [_to_python(c) for c in self.dropped_columns_],
            "constant_columns": [_to_python(c) for c in self.constant_columns_],
            "categorical_columns": [_to_python(c) for c in self.categorical_columns],
            "categories": [[_to_python(v) for v in self.categories_[c]]
                           for c in self.categorical_columns],
            "value_kinds": [self.value_kinds_[c] for c in self.categorical_columns],
            "numerical_columns": [_to_python(c) for c in self.numerical_columns],
            "mean": [float(v) for v in self.mean_],
            "scale": [float(v) for v in self.scale_],
        }

    @classmethod
    def from_dict(cls, state: dict) -> "TabularEncoder":
        """Rebuild a fitted encoder from :meth:`to_dict` output (e.g. after ``json.load``)."""
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ValueError(f"state: expected a dict with format={_FORMAT!r}")
        if state.get("version") != _FORMAT_VERSION:
            raise ValueError(
                f"state: unsupported version {state.get('version')!r} (expected {_FORMAT_VERSION})")
        params = dict(state["params"])
        params.setdefault("constant", "drop")  # states written before the policy existed dropped them
        enc = cls(**params)
        enc._check_params()
        enc.input_kind_ = state["input_kind"]
        enc.feature_names_in_ = list(state["feature_names_in"])
        enc.dropped_columns_ = list(state["dropped_columns"])
        enc.constant_columns_ = list(state.get("constant_columns", []))
        enc.categorical_columns = list(state["categorical_columns"])
        enc.categories_ = {c: list(v) for c, v in zip(enc.categorical_columns, state["categories"])}
        enc.value_kinds_ = dict(zip(enc.categorical_columns, state["value_kinds"]))
        enc.numerical_columns = list(state["numerical_columns"])
        enc.mean_ = np.asarray(state["mean"], dtype=np.float64)
        enc.scale_ = np.asarray(state["scale"], dtype=np.float64)
        return enc

    # ------------------------------------------------------------------ checks and input
    def _check_params(self) -> None:
        for name, value, allowed in (("unseen", self.unseen, _UNSEEN),
                                     ("missing", self.missing, _MISSING),
                                     ("numerical_nan", self.numerical_nan, _NUMERICAL_NAN),
                                     ("constant", self.constant, _CONSTANT)):
            if value not in allowed:
                raise ValueError(f"{name}: expected one of {list(allowed)}, got {value!r}")
        if isinstance(self.missing_values, (str, bytes)):
            raise ValueError(
                f"missing_values: expected a list of values, got the string {self.missing_values!r}"
                f" (write [{self.missing_values!r}])")
        for name in ("categorical", "numerical"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)):
                raise ValueError(f"{name}: expected a list of column names, got the string {value!r}")

    def _check_fitted(self) -> None:
        if not hasattr(self, "categories_"):
            raise RuntimeError("TabularEncoder is not fitted: call fit(X) first")

    def _as_frame(self, X: Any, fitting: bool) -> tuple[pd.DataFrame, str]:
        """Any accepted input -> (DataFrame, "frame" | "codes"), with the shape checks."""
        if isinstance(X, pd.Series):
            X = X.to_frame()
        if isinstance(X, pd.DataFrame):
            kind = "frame"
            frame = X
        else:
            if hasattr(X, "detach") and hasattr(X, "cpu"):  # torch tensor, without importing torch
                X = X.detach().cpu().numpy()
            arr = np.asarray(X)
            if arr.ndim != 2:
                raise ValueError(f"X: expected a 2-D table (n_samples, n_columns), got shape {arr.shape}")
            if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
                raise ValueError(
                    f"X: a numpy array must hold integer category codes, got dtype {arr.dtype}; "
                    "pass a pandas DataFrame for string or numerical columns")
            if fitting and (self.categorical is not None or self.numerical is not None):
                raise ValueError("categorical/numerical: column names only apply to DataFrames; "
                                 "an integer array is taken as categorical codes")
            kind = "codes"
            frame = pd.DataFrame(arr.astype(np.int64))
            if arr.size and arr.min() < 0:
                col = int(np.argwhere(arr < 0)[0][1])
                raise ValueError(f"X: category codes must be >= 0, found {int(arr.min())} in column {col}")
        if frame.shape[0] == 0:
            raise ValueError(f"X: empty table (0 rows, columns {list(frame.columns)})")
        if frame.shape[1] == 0:
            raise ValueError(f"X: table has {frame.shape[0]} rows but no columns")
        if frame.columns.has_duplicates:
            dups = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
            raise ValueError(f"X: duplicate column names {dups}")
        if fitting:
            bad = [c for c in frame.columns if not isinstance(c, (str, int, np.integer))]
            if bad:
                raise ValueError(f"X: column names must be str or int, got {bad}")
        return frame, kind

    def _split_columns(self, frame: pd.DataFrame) -> tuple[list, list]:
        """Decide which columns are categorical and which numerical (in input order)."""
        columns = list(frame.columns)
        if self.input_kind_ == "codes":
            return columns, []
        named_cat = list(self.categorical or [])
        named_num = list(self.numerical or [])
        for name, named in (("categorical", named_cat), ("numerical", named_num)):
            unknown = [c for c in named if c not in frame.columns]
            if unknown:
                raise ValueError(f"{name}: column(s) {unknown} not in X (columns: {columns})")
        both = [c for c in named_cat if c in named_num]
        if both:
            raise ValueError(f"categorical/numerical: column(s) {both} named in both")
        cat_cols, num_cols = [], []
        for col in columns:
            dtype = frame[col].dtype
            if col in named_cat:
                cat_cols.append(col)
            elif col in named_num:
                if not _is_numerical_dtype(dtype):
                    raise ValueError(f"numerical: column {col!r} has non-numerical dtype {dtype}")
                num_cols.append(col)
            elif _is_categorical_dtype(dtype):
                cat_cols.append(col)
            elif _is_numerical_dtype(dtype):
                num_cols.append(col)
            else:
                raise ValueError(
                    f"X: column {col!r} has unsupported dtype {dtype}; name it in categorical=[...] "
                    "or drop it")
        return cat_cols, num_cols

    def _align_columns(self, frame: pd.DataFrame, kind: str) -> pd.DataFrame:
        """Check the transform input has the fitted columns; reorder a DataFrame by name."""
        if kind != self.input_kind_:
            want = ("a DataFrame with columns " + str(self.feature_names_in_)
                    if self.input_kind_ == "frame" else
                    f"an integer array with {len(self.feature_names_in_)} columns")
            raise ValueError(f"X: the encoder was fitted on {want}; got "
                             + ("a DataFrame" if kind == "frame" else "an integer array"))
        if kind == "codes":
            if frame.shape[1] != len(self.feature_names_in_):
                raise ValueError(f"X: expected {len(self.feature_names_in_)} code columns "
                                 f"(as at fit time), got {frame.shape[1]}")
            return frame
        # Dropped (single-valued) columns may be present or absent: they are ignored either way.
        needed = self.categorical_columns + self.numerical_columns
        known = set(self.feature_names_in_)
        missing = [c for c in needed if c not in frame.columns]
        extra = [c for c in frame.columns if c not in known]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing column(s) {missing}")
            if extra:
                parts.append(f"unexpected column(s) {extra}")
            raise ValueError(f"X: {' and '.join(parts)}; the encoder was fitted on columns "
                             f"{self.feature_names_in_}")
        return frame

    # ------------------------------------------------------------------ per-column work
    def _missing_mask(self, values: pd.Series) -> np.ndarray:
        mask = values.isna().to_numpy(dtype=bool, copy=True)
        if len(self.missing_values) and not ptypes.is_numeric_dtype(values.dtype):
            mask |= values.isin(list(self.missing_values)).to_numpy(dtype=bool)
        return mask

    def _fit_categorical(self, values: pd.Series, col: Any) -> list:
        if self.input_kind_ == "codes":
            self.value_kinds_[col] = "number"
            present = np.unique(values.to_numpy())
            # Codes are taken as given: the domain is 0..max (one distinct code c: 0..c, of which only c occurs).
            return list(range(int(present.max()) + 1))
        missing = self._missing_mask(values)
        if missing.any() and self.missing == "raise":
            raise ValueError(f"X: column {col!r} has {int(missing.sum())} missing value(s) "
                             f"(first at row {int(np.argmax(missing))}) and missing='raise'")
        present = values[~missing]
        self.value_kinds_[col] = _value_kind(present)
        observed = pd.unique(present.to_numpy(dtype=object))
        if isinstance(values.dtype, pd.CategoricalDtype):
            seen = set(observed)  # keep the dtype's declared order, restricted to what occurs
            cats = [c for c in values.cat.categories if c in seen]
        else:
            cats = _sorted_values(list(observed))
        cats = [_to_python(c) for c in cats]
        if missing.any():
            cats.append(None)
        return cats

    def _single_valued(self, values: pd.Series, cats: list) -> bool:
        if self.input_kind_ == "codes":
            return len(np.unique(values.to_numpy())) <= 1
        return len(cats) <= 1

    def _encode_categorical(self, values: pd.Series, col: Any) -> np.ndarray:
        cats = self.categories_[col]
        unknown = len(cats)
        if self.input_kind_ == "codes":
            codes = values.to_numpy(dtype=np.int64).copy()
            unseen = codes > len(cats) - 1
        else:
            missing = self._missing_mask(values)
            if missing.any() and self.missing == "raise":
                raise ValueError(f"X: column {col!r} has {int(missing.sum())} missing value(s) "
                                 f"(first at row {int(np.argmax(missing))}) and missing='raise'")
            kind = _value_kind(values[~missing])
            fit_kind = self.value_kinds_[col]
            # Only clear-cut kinds are compared: a mixed column cannot be checked meaningfully.
            if kind != fit_kind and {kind, fit_kind} <= _COMPARABLE_KINDS:
                raise ValueError(f"X: column {col!r} was fitted on {fit_kind} values but got "
                                 f"{kind} values (dtype {values.dtype})")
            has_missing_cat = cats[-1] is None
            present = cats[:-1] if has_missing_cat else cats
            codes = pd.Index(present, dtype=object).get_indexer(values.to_numpy(dtype=object))
            codes = codes.astype(np.int64)
            if has_missing_cat:
                codes[missing] = len(cats) - 1
            else:
                codes[missing] = -1  # missing never seen at fit: an unseen category
            unseen = codes < 0
        if unseen.any():
            if self.unseen == "raise":
                row = int(np.argmax(unseen))
                value = values.iloc[row]
                raise ValueError(f"X: column {col!r} has {int(unseen.sum())} value(s) not seen at "
                                 f"fit time, first {value!r} at row {row} (unseen='raise')")
            codes[unseen] = unknown
        return codes

    def _fit_numerical(self, values: pd.Series, col: Any) -> tuple[float, float]:
        arr = values.to_numpy(dtype=np.float64, na_value=np.nan)
        nan = np.isnan(arr)
        if np.isinf(arr).any():
            raise ValueError(f"X: numerical column {col!r} has infinite values")
        if nan.any():
            if self.numerical_nan == "raise":
                raise ValueError(f"X: numerical column {col!r} has {int(nan.sum())} NaN value(s) "
                                 f"(first at row {int(np.argmax(nan))}); set numerical_nan='impute' "
                                 "to fill them with the training mean")
            if nan.all():
                raise ValueError(f"X: numerical column {col!r} is all NaN; nothing to impute from")
        mean = float(np.nanmean(arr))
        scale = float(np.nanstd(arr))
        if near_zero_scale(np.float64(scale), np.float64(mean)):
            scale = 0.0  # single-valued: the caller keeps (with a scale of its own) or drops it
        return mean, scale

    def _encode_numerical(self, values: pd.Series, col: Any, d: int) -> np.ndarray:
        if not _is_numerical_dtype(values.dtype):
            raise ValueError(f"X: column {col!r} was fitted as numerical but has dtype {values.dtype}")
        arr = values.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isinf(arr).any():
            raise ValueError(f"X: numerical column {col!r} has infinite values")
        nan = np.isnan(arr)
        if nan.any():
            if self.numerical_nan == "raise":
                raise ValueError(f"X: numerical column {col!r} has {int(nan.sum())} NaN value(s) "
                                 f"(first at row {int(np.argmax(nan))}) and numerical_nan='raise'")
            arr = np.where(nan, self.mean_[d], arr)
        return standardize(arr, self.mean_[d], self.scale_[d]).astype(np.float32)
