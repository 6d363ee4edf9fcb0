"""A tiny real table for the trainer tests: solar flare, first rows, as integer field codes.

The table is found through the project's data-directory lookup (``GNSM_DATA_DIR`` or the nearest
``shared/data``); without it the tests that need it are skipped, with the reason.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

SOLAR = Path("solar") / "solar-flare_FvsAll-cleaned.arff"


def solar_path() -> Path | None:
    """The solar-flare ARFF file, or None when the data directory or the file is missing."""
    from gnsm.datasets import find_data_dir

    try:
        path = find_data_dir() / SOLAR
    except FileNotFoundError:
        return None
    return path if path.is_file() else None


def solar_codes(rows: int = 300) -> tuple[torch.Tensor, list[int]]:
    """Integer-coded categorical fields of the solar-flare table (class column dropped)."""
    from scipy.io import arff

    path = solar_path()
    if path is None:
        pytest.skip(f"data file {SOLAR} not found (set GNSM_DATA_DIR or provide shared/data)")
    data, meta = arff.loadarff(str(path))
    names = meta.names()[:-1]
    cols, sizes = [], []
    for n in names:
        cats = list(meta[n][1])
        cols.append([cats.index(v.decode()) for v in data[n][:rows]])
        sizes.append(len(cats))
    return torch.tensor(cols).T.contiguous(), sizes
