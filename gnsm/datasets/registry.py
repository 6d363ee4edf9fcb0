"""Dataset registry: named development sets and a general CSV/TSV/ARFF/Parquet loader.

``load_dataset(name_or_path, ...)`` returns a :class:`Dataset` (features, binary labels with
1 = anomaly, column typing). Registered names apply these normal/anomaly splits (paths relative to
the data directory):

========== ==================================== ======================================================
name       file                                 split
========== ==================================== ======================================================
cars       cars/car.arff (bundled in package)   drop acc/good; normal unacc, anomaly vgood (paper)
mushrooms  mushrooms/mushroom.arff              normal e, anomaly p (paper: 48 % "anomalies")
mushrooms_rare  same                            normal e, anomaly p subsampled to 5 % of the rows
solar      solar/solar-flare_FvsAll-cleaned.arff class 0 normal, 1 anomaly
cmc        cmc/cmc-nominal.arff                 class_numberofchildren 0 normal, 1 anomaly
chess      chess/chess_krkopt_zerovsall.arff    class 0 normal, 1 anomaly
adult      adult/adult.csv                      normal <=50K, anomaly >50K subsampled to 5 % of the
                                                rows; education-num dropped; numericals kept
========== ==================================== ======================================================

Subsampling (mushrooms_rare, adult) keeps ``round(f / (1 - f) * n_inliers)`` anomalies with
``f = 0.05``, drawn by ``numpy.random.RandomState(0).choice(anomaly_rows, n, replace=False)`` and
kept in file order, so anomalies are 5 % of the loaded table (Campos et al.-style downsampling).

Data location: ``$GNSM_DATA_DIR`` if set, else the first ``shared/data`` directory found walking up
from the current directory, then from this package's folder. ``cars`` is read from the copy bundled
in ``gnsm/datasets/bundled`` (CC BY 4.0, see the README there) so it works without ``shared/``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from .tables import TABLE_SUFFIXES, read_table, table_kind

__all__ = [
    "BUNDLED_DIR",
    "Dataset",
    "DatasetSpec",
    "find_data_dir",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "subsample_anomalies",
]

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
SUBSAMPLE_SEED = 0


@dataclass
class Dataset:
    """A labelled table for anomaly detection.

    Attributes:
        name: registry name or file stem.
        X: features only (no label column), rows in file order after the split is applied.
        y: int64 labels, 1 = anomaly, 0 = normal.
        categorical / numerical: column typing of ``X`` (every column is in exactly one).
        source: where the data came from (path and split rule).
    """

    name: str
    X: pd.DataFrame
    y: np.ndarray
    categorical: list[str]
    numerical: list[str]
    source: str = ""
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.y = np.asarray(self.y, dtype=np.int64)
        if self.y.ndim != 1 or len(self.y) != len(self.X):
            raise ValueError(f"y: expected shape ({len(self.X)},), got {self.y.shape}")
        if not np.isin(self.y, (0, 1)).all():
            raise ValueError("y: expected labels in {0, 1} (1 = anomaly)")

    @property
    def n_anomalies(self) -> int:
        return int(self.y.sum())

    @property
    def n_inliers(self) -> int:
        return int(len(self.y) - self.y.sum())

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, rows={len(self.y)}, anomalies={self.n_anomalies}, "
                f"categorical={len(self.categorical)}, numerical={len(self.numerical)})")


@dataclass(frozen=True)
class DatasetSpec:
    """How to build a registered dataset from a file in the data directory."""

    name: str
    relpath: str                                   # relative to the data directory
    label_col: str
    anomaly_values: tuple
    normal_values: tuple | None = None             # None: every non-anomaly row is normal
    drop_cols: tuple = ()
    anomaly_fraction: float | None = None          # subsample anomalies to this share of the rows
    bundled: str | None = None                     # file name in gnsm/datasets/bundled
    description: str = ""


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec, replace: bool = False) -> None:
    """Add a named dataset (``replace=True`` to overwrite an existing name)."""
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"spec.name: dataset {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return sorted(_REGISTRY)


for _spec in (
    DatasetSpec("cars", "cars/car.arff", "class", ("vgood",), ("unacc",), bundled="car.arff",
                description="UCI Car Evaluation; acc/good dropped; normal unacc, anomaly vgood"),
    DatasetSpec("mushrooms", "mushrooms/mushroom.arff", "class", ("p",), ("e",),
                description="UCI Mushroom; normal e, anomaly p (paper split, 48 % anomalies)"),
    DatasetSpec("mushrooms_rare", "mushrooms/mushroom.arff", "class", ("p",), ("e",),
                anomaly_fraction=0.05,
                description="UCI Mushroom; normal e, anomaly p subsampled to 5 % of rows"),
    DatasetSpec("solar", "solar/solar-flare_FvsAll-cleaned.arff", "class", ("1",), ("0",),
                description="UCI Solar Flare, Zurich class F vs all"),
    DatasetSpec("cmc", "cmc/cmc-nominal.arff", "class_numberofchildren", ("1",), ("0",),
                description="UCI Contraceptive Method Choice, >= 10 children vs rest"),
    DatasetSpec("chess", "chess/chess_krkopt_zerovsall.arff", "class", ("1",), ("0",),
                description="UCI Chess krkopt, outcome 'zero' vs all"),
    DatasetSpec("adult", "adult/adult.csv", "income", (">50K",), ("<=50K",),
                drop_cols=("education-num",), anomaly_fraction=0.05,
                description="UCI Adult; normal <=50K, anomaly >50K subsampled to 5 % of rows; "
                            "education-num dropped"),
):
    register_dataset(_spec)


def find_data_dir() -> Path:
    """The data directory: ``$GNSM_DATA_DIR``, else the nearest ``shared/data`` above cwd or package.

    Raises:
        FileNotFoundError: naming ``GNSM_DATA_DIR`` or the places searched.
    """
    env = os.environ.get("GNSM_DATA_DIR")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"GNSM_DATA_DIR={env!r} is not a directory")
        return path
    starts = (Path.cwd().resolve(), Path(__file__).resolve().parent)
    for start in starts:
        for base in (start, *start.parents):
            candidate = base / "shared" / "data"
            if candidate.is_dir():
                return candidate
    raise FileNotFoundError(
        "no data directory: GNSM_DATA_DIR is not set and no 'shared/data' folder exists in "
        f"{starts[0]}, {starts[1]} or any of their parents")


def subsample_anomalies(X: pd.DataFrame, y: np.ndarray, fraction: float,
                        seed: int = SUBSAMPLE_SEED) -> tuple[pd.DataFrame, np.ndarray]:
    """Keep ``round(fraction / (1 - fraction) * n_inliers)`` anomalies (all inliers kept).

    The kept anomalies are ``RandomState(seed).choice(anomaly_rows, n, replace=False)``, in file
    order. If there are already few enough anomalies, nothing changes.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction: expected a value in (0, 1), got {fraction}")
    y = np.asarray(y)
    anomalies = np.flatnonzero(y == 1)
    n_keep = int(round(fraction / (1.0 - fraction) * int((y == 0).sum())))
    if n_keep >= len(anomalies):
        return X, y
    keep_anom = np.random.RandomState(seed).choice(anomalies, n_keep, replace=False)
    keep = np.sort(np.concatenate([np.flatnonzero(y == 0), keep_anom]))
    return X.iloc[keep].reset_index(drop=True), y[keep]


def _as_values(value: Any) -> tuple:
    if value is None:
        return ()
    if isinstance(value, (str, bytes, int, float, bool, np.generic)):
        return (value,)
    return tuple(value)


def _label_mask(labels: pd.Series, values: tuple) -> np.ndarray:
    """Rows whose label equals one of ``values``; "1" matches 1 so CLI strings work on int labels."""
    mask = labels.isin(list(values)).to_numpy(dtype=bool, copy=True)
    as_text = labels.astype(str).str.strip()
    mask |= as_text.isin([str(v).strip() for v in values]).to_numpy(dtype=bool)
    return mask


def _apply_split(frame: pd.DataFrame, label_col: str, anomaly_values: tuple,
                 normal_values: tuple | None, where: str) -> tuple[pd.DataFrame, np.ndarray]:
    if label_col not in frame.columns:
        raise ValueError(f"label_col: column {label_col!r} not in {where} "
                         f"(columns: {list(frame.columns)})")
    labels = frame[label_col]
    if labels.isna().any():
        raise ValueError(f"label_col: column {label_col!r} has {int(labels.isna().sum())} "
                         f"missing label(s) in {where}")
    if not anomaly_values:
        raise ValueError("anomaly_value: required (the label value(s) that mark an anomaly)")
    is_anom = _label_mask(labels, anomaly_values)
    if not is_anom.any():
        raise ValueError(f"anomaly_value: {list(anomaly_values)} not found in column "
                         f"{label_col!r}; its values are {sorted(map(str, labels.unique()))[:20]}")
    if normal_values:
        is_norm = _label_mask(labels, normal_values) & ~is_anom
        if not is_norm.any():
            raise ValueError(f"normal_value: {list(normal_values)} not found in column {label_col!r}")
    else:
        is_norm = ~is_anom
    if not is_norm.any():
        raise ValueError(f"anomaly_value: every row of {where} is an anomaly; no inliers left")
    keep = is_anom | is_norm
    X = frame.loc[keep].drop(columns=[label_col]).reset_index(drop=True)
    return X, is_anom[keep].astype(np.int64)


def _column_types(X: pd.DataFrame, nominal: list[str] | None, categorical: Sequence[str] | None,
                  numerical: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """Categorical/numerical split: explicit names, else ARFF declarations, else dtypes."""
    categorical = list(categorical or [])
    numerical = list(numerical or [])
    for name, cols in (("categorical", categorical), ("numerical", numerical)):
        unknown = [c for c in cols if c not in X.columns]
        if unknown:
            raise ValueError(f"{name}: column(s) {unknown} not in the table "
                             f"(columns: {list(X.columns)})")
    cat_out, num_out = [], []
    for col in X.columns:
        if col in categorical:
            cat_out.append(col)
        elif col in numerical:
            num_out.append(col)
        elif nominal is not None:
            (cat_out if col in nominal else num_out).append(col)
        elif ptypes.is_numeric_dtype(X[col].dtype) and not ptypes.is_bool_dtype(X[col].dtype):
            num_out.append(col)
        else:
            cat_out.append(col)
    return cat_out, num_out


def _load_registered(spec: DatasetSpec, data_dir: str | PathLike | None) -> Dataset:
    if spec.bundled and data_dir is None and (BUNDLED_DIR / spec.bundled).is_file():
        path = BUNDLED_DIR / spec.bundled
    else:
        base = Path(data_dir) if data_dir is not None else find_data_dir()
        path = base / spec.relpath
        if not path.is_file():
            raise FileNotFoundError(f"dataset {spec.name!r}: expected file {path} (data directory "
                                    f"{base}; set GNSM_DATA_DIR to the folder holding "
                                    f"{spec.relpath.split('/')[0]}/)")
    frame, nominal = read_table(path, "name_or_path", with_nominal=True)
    frame = frame.drop(columns=list(spec.drop_cols))
    X, y = _apply_split(frame, spec.label_col, spec.anomaly_values, spec.normal_values, str(path))
    source = f"{path} ({spec.description})"
    info: dict[str, Any] = {"path": str(path), "label_col": spec.label_col,
                            "anomaly_values": list(spec.anomaly_values),
                            "normal_values": list(spec.normal_values or [])}
    if spec.anomaly_fraction is not None:
        X, y = subsample_anomalies(X, y, spec.anomaly_fraction, SUBSAMPLE_SEED)
        source += f"; anomalies subsampled to {spec.anomaly_fraction:.0%} with seed {SUBSAMPLE_SEED}"
        info["anomaly_fraction"] = spec.anomaly_fraction
        info["subsample_seed"] = SUBSAMPLE_SEED
    cat, num = _column_types(X, nominal, None, None)
    return Dataset(spec.name, X, y, cat, num, source, info)


def load_dataset(
    name_or_path: str | PathLike,
    label_col: str | None = None,
    anomaly_value: Any = None,
    *,
    normal_value: Any = None,
    categorical: Sequence[str] | None = None,
    numerical: Sequence[str] | None = None,
    drop_cols: Sequence[str] = (),
    anomaly_fraction: float | None = None,
    data_dir: str | PathLike | None = None,
) -> Dataset:
    """Load a registered dataset by name, or any CSV/TSV/ARFF/Parquet file.

    Args:
        name_or_path: a name from :func:`list_datasets` or a file path.
        label_col: label column (required for a path; ignored for a registered name).
        anomaly_value: label value(s) marking an anomaly (required for a path). Matching also
            compares as text, so ``"1"`` selects the integer label 1.
        normal_value: label value(s) kept as normal; rows with other labels are dropped.
            Default: every non-anomaly row is normal.
        categorical / numerical: override the column typing (default: ARFF declarations, else
            ``object``/``string``/``category``/``bool`` dtypes are categorical).
        drop_cols: feature columns to drop before anything else.
        anomaly_fraction: subsample anomalies to this share of rows (seed 0), see
            :func:`subsample_anomalies`.
        data_dir: data directory for registered names (default: :func:`find_data_dir`).

    Raises:
        FileNotFoundError: missing file or data directory.
        ValueError: unknown name, unsupported file type, empty table, unknown label column, an
            anomaly value that never occurs, or no inliers.
    """
    text = os.fspath(name_or_path)
    if text in _REGISTRY and not Path(text).is_file():
        spec = _REGISTRY[text]
        dataset = _load_registered(spec, data_dir)
        if categorical or numerical or drop_cols:
            X = dataset.X.drop(columns=list(drop_cols))
            cat, num = _column_types(X, dataset.categorical, categorical, numerical)
            dataset = Dataset(dataset.name, X, dataset.y, cat, num, dataset.source, dataset.info)
        if anomaly_fraction is not None:
            X, y = subsample_anomalies(dataset.X, dataset.y, anomaly_fraction)
            dataset = Dataset(dataset.name, X, y, dataset.categorical, dataset.numerical,
                              dataset.source + f"; anomalies subsampled to {anomaly_fraction:.0%}",
                              dataset.info)
        return dataset

    path = Path(text).expanduser()
    looks_like_path = any(text.lower().endswith(s) for s in TABLE_SUFFIXES) or os.sep in text
    if not looks_like_path and not path.exists():
        raise ValueError(f"name_or_path: {text!r} is neither a registered dataset "
                         f"({list_datasets()}) nor a file path")
    table_kind(path, "name_or_path")  # unsupported type -> clear error before looking for the file
    if label_col is None:
        raise ValueError(f"label_col: required to load the file {path}")
    frame, nominal = read_table(path, "name_or_path", with_nominal=True)
    missing_drop = [c for c in drop_cols if c not in frame.columns]
    if missing_drop:
        raise ValueError(f"drop_cols: column(s) {missing_drop} not in {path}")
    frame = frame.drop(columns=list(drop_cols))
    X, y = _apply_split(frame, label_col, _as_values(anomaly_value),
                        _as_values(normal_value) or None, str(path))
    if X.shape[1] == 0:
        raise ValueError(f"name_or_path: {path} has no feature columns besides {label_col!r}")
    source = f"{path} (label {label_col!r}, anomaly {list(_as_values(anomaly_value))})"
    info: dict[str, Any] = {"path": str(path), "label_col": label_col,
                            "anomaly_values": [str(v) for v in _as_values(anomaly_value)],
                            "normal_values": [str(v) for v in _as_values(normal_value)]}
    if anomaly_fraction is not None:
        X, y = subsample_anomalies(X, y, anomaly_fraction)
        source += f"; anomalies subsampled to {anomaly_fraction:.0%} with seed {SUBSAMPLE_SEED}"
        info["anomaly_fraction"] = anomaly_fraction
    cat, num = _column_types(X, nominal, categorical, numerical)
    return Dataset(path.name.split(".")[0], X, y, cat, num, source, info)
