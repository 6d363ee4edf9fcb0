"""Shared fixtures of the trainer tests: a tiny real table (solar flare, first 300 rows)."""
import os

import numpy as np
import pytest
import torch

SOLAR = "/work/shared/data/solar/solar-flare_FvsAll-cleaned.arff"


def solar_codes(rows: int = 300):
    """Integer-coded categorical fields of the solar-flare table (class column dropped)."""
    if os.path.exists(SOLAR):
        from scipy.io import arff

        data, meta = arff.loadarff(SOLAR)
        names = meta.names()[:-1]
        cols, sizes = [], []
        for n in names:
            cats = list(meta[n][1])
            cols.append([cats.index(v.decode()) for v in data[n][:rows]])
            sizes.append(len(cats))
        return torch.tensor(cols).T.contiguous(), sizes
    # Fallback: synthetic structured data (field 1 copies field 0, field 2 = field 0 mod 2).
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (rows,), generator=g)
    return torch.stack([a, a, a % 2, torch.randint(0, 3, (rows,), generator=g)], 1), [4, 4, 2, 3]


@pytest.fixture(scope="session")
def solar():
    return solar_codes()
