"""Read ARFF files into pandas with the nominal/numeric typing the file declares.

``scipy.io.arff.loadarff`` returns nominal values as bytes and keeps the ARFF missing marker ``?``
as the byte string ``b"?"``; here nominal columns become ``object`` columns of str with NaN for ``?``
(ARFF's own meaning of the marker), numeric columns stay float64 (scipy already maps ``?`` to NaN).
"""
from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.io import arff as _scipy_arff

__all__ = ["read_arff"]


def read_arff(path: str | PathLike) -> tuple[pd.DataFrame, list[str]]:
    """Load an ARFF file.

    Returns:
        ``(frame, nominal_columns)``: the table, and the names of the columns the file declares
        nominal (the others are numeric).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file cannot be parsed (the scipy message is kept).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: ARFF file not found: {path}")
    try:
        data, meta = _scipy_arff.loadarff(str(path))
    except (NotImplementedError, ValueError, _scipy_arff.ParseArffError) as err:
        raise ValueError(f"path: cannot read ARFF file {path}: {err}") from err
    frame = pd.DataFrame(data)
    nominal = [name for name, kind in zip(meta.names(), meta.types()) if kind == "nominal"]
    for col in nominal:
        values = np.array([v.decode("utf-8") if isinstance(v, bytes) else v
                           for v in frame[col].to_numpy()], dtype=object)
        values[values == "?"] = np.nan
        # object dtype, not "str": pandas 2 would turn NaN into the string "nan" under "str".
        frame[col] = pd.Series(values, index=frame.index, dtype=object)
    return frame, nominal
