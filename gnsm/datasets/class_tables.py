"""Registered tables whose label has several normal classes (the unified, leave-one-class-out protocol).

Only ``cars`` and ``cmc`` of the development sets have a label with three or more classes (checked on
the files of the data directory). ``solar`` and ``chess`` are one class vs all (their multi-class label
was removed), ``mushrooms`` and ``adult`` have two classes (leaving one out leaves a single normal
class), so they do not qualify.
"""
from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from .arff import read_arff
from .registry import BUNDLED_DIR, find_data_dir

__all__ = ["CLASS_TABLES", "ClassTable", "load_class_table"]


@dataclass(frozen=True)
class ClassTable:
    """A categorical table of the data directory whose ``label_col`` has several classes."""

    name: str
    relpath: str                 # relative to the data directory (``find_data_dir``)
    label_col: str
    drop_cols: tuple = ()
    description: str = ""
    bundled: str | None = None   # file name in gnsm/datasets/bundled, used when no data directory has it


CLASS_TABLES: dict[str, ClassTable] = {
    "cars": ClassTable("cars", "cars/car.arff", "class", (),
                       "UCI Car Evaluation, label class: unacc 1210 / acc 384 / good 69 / vgood 65",
                       bundled="car.arff"),
    "cmc": ClassTable("cmc", "cmc/cmc-nominal.arff", "Contraceptive_method_used", ("class_numberofchildren",),
                      "UCI Contraceptive Method Choice, label = the UCI target Contraceptive_method_used "
                      "(1 no-use 629 / 2 long-term 333 / 3 short-term 511); the anomaly-detection label "
                      "class_numberofchildren is dropped"),
}


def load_class_table(name: str, data_dir: str | PathLike | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """(X, y) of a :data:`CLASS_TABLES` entry: X a DataFrame of str categories, y the class labels (str).

    A table with a bundled copy (``cars``) falls back on it when no data directory holds the file
    and ``data_dir`` is not given.

    Raises:
        ValueError: unknown ``name``.
        FileNotFoundError: the file is in no data directory (and has no bundled copy).
    """
    if name not in CLASS_TABLES:
        raise ValueError(f"name: expected one of {sorted(CLASS_TABLES)}, got {name!r}")
    spec = CLASS_TABLES[name]
    try:
        path: Path | None = Path(data_dir if data_dir is not None else find_data_dir()) / spec.relpath
    except FileNotFoundError:
        path = None
    if (path is None or not path.is_file()) and spec.bundled and data_dir is None:
        path = BUNDLED_DIR / spec.bundled
    if path is None or not path.is_file():
        raise FileNotFoundError(f"table {name!r}: expected file {spec.relpath} in the data directory "
                                f"({path or 'none found'}; set GNSM_DATA_DIR)")
    frame, _ = read_arff(path)
    y = frame[spec.label_col].astype(str).str.strip().to_numpy()
    X = frame.drop(columns=[spec.label_col, *spec.drop_cols]).astype(str).reset_index(drop=True)
    return X, y
