"""Tables whose label has several normal classes (the unified protocol's data)."""
from __future__ import annotations

import numpy as np
import pytest

from gnsm.datasets import CLASS_TABLES, load_class_table


@pytest.fixture(scope="module")
def cars_table():
    return load_class_table("cars")  # the bundled copy when shared/data is absent


def test_load_class_table_cars(cars_table):
    X, y = cars_table
    assert X.shape == (1728, 6) and "class" not in X.columns
    classes, counts = np.unique(y, return_counts=True)
    assert dict(zip(classes.tolist(), counts.tolist())) == {"acc": 384, "good": 69, "unacc": 1210, "vgood": 65}


def test_load_class_table_cmc_drops_the_anomaly_label():
    try:
        X, y = load_class_table("cmc")
    except FileNotFoundError:
        pytest.skip("shared/data not available")
    assert X.shape == (1473, 7)
    assert CLASS_TABLES["cmc"].label_col not in X.columns and "class_numberofchildren" not in X.columns
    assert sorted(set(y.tolist())) == ["1", "2", "3"]
    with pytest.raises(ValueError, match="name"):
        load_class_table("solar")  # binary label: not a multi-class table
