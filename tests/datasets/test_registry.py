"""Dataset registry: documented splits of the dev sets, the general file loader and its errors."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gnsm.datasets import (Dataset, find_data_dir, list_datasets, load_dataset, read_arff,
                           subsample_anomalies)
from gnsm.datasets.registry import BUNDLED_DIR


def _has_shared_data() -> bool:
    try:
        return (find_data_dir() / "solar").is_dir()
    except FileNotFoundError:
        return False


needs_shared = pytest.mark.skipif(not _has_shared_data(), reason="shared/data not found")


def test_registered_names():
    assert {"cars", "mushrooms", "mushrooms_rare", "solar", "cmc", "chess", "adult"} <= set(list_datasets())


def test_cars_comes_from_the_bundled_copy_with_the_paper_split(monkeypatch, tmp_path):
    # An empty data dir stands for a fresh machine without shared/: cars must still load.
    monkeypatch.setenv("GNSM_DATA_DIR", str(tmp_path))
    ds = load_dataset("cars")
    assert isinstance(ds, Dataset)
    assert (len(ds.y), ds.n_inliers, ds.n_anomalies) == (1275, 1210, 65)
    assert ds.categorical == ["buying", "maint", "doors", "persons", "lug_boot", "safety"]
    assert ds.numerical == [] and "class" not in ds.X.columns
    assert str(BUNDLED_DIR) in ds.source
    assert [ds.X[c].nunique() for c in ds.categorical] == [4, 4, 4, 3, 3, 3]
    assert (BUNDLED_DIR / "README.md").read_text().count("CC BY 4.0") >= 1
    with pytest.raises(FileNotFoundError, match=r"dataset 'solar': expected file .*solar-flare"):
        load_dataset("solar")


@needs_shared
def test_bundled_cars_is_identical_to_shared_copy():
    shared = find_data_dir() / "cars" / "car.arff"
    assert (BUNDLED_DIR / "car.arff").read_bytes() == shared.read_bytes()


@needs_shared
@pytest.mark.parametrize("name,rows,anomalies,n_cat,n_num", [
    ("solar", 1066, 43, 11, 0),
    ("cmc", 1473, 29, 8, 0),
    ("mushrooms", 8124, 3916, 22, 0),
    ("mushrooms_rare", 4208 + 221, 221, 22, 0),
])
def test_small_dev_sets(name, rows, anomalies, n_cat, n_num):
    ds = load_dataset(name)
    assert (len(ds.y), ds.n_anomalies) == (rows, anomalies)
    assert (len(ds.categorical), len(ds.numerical)) == (n_cat, n_num)
    assert set(ds.categorical) | set(ds.numerical) == set(ds.X.columns)


@needs_shared
def test_mushrooms_missing_marker_and_rare_variant_is_reproducible():
    ds = load_dataset("mushrooms")
    assert ds.X["stalk-root"].isna().sum() == 2480  # ARFF '?' -> NaN
    a, b = load_dataset("mushrooms_rare"), load_dataset("mushrooms_rare")
    pd.testing.assert_frame_equal(a.X, b.X)
    assert a.n_anomalies / len(a.y) == pytest.approx(0.05, abs=1e-3)


@needs_shared
def test_chess_and_adult():
    chess = load_dataset("chess")
    assert (len(chess.y), chess.n_anomalies) == (28056, 27)
    adult = load_dataset("adult")
    assert adult.n_inliers == 24720 and adult.n_anomalies == 1301  # round(0.05/0.95 * 24720)
    assert "education-num" not in adult.X.columns and "income" not in adult.X.columns
    assert adult.numerical == ["age", "fnlwgt", "capital-gain", "capital-loss", "hours-per-week"]
    assert len(adult.categorical) == 8
    assert (adult.X["workclass"] == "?").sum() > 0  # CSV '?' kept; the encoder reads it as missing


def test_find_data_dir_env_and_errors(monkeypatch, tmp_path):
    monkeypatch.setenv("GNSM_DATA_DIR", str(tmp_path))
    assert find_data_dir() == tmp_path
    monkeypatch.setenv("GNSM_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="GNSM_DATA_DIR="):
        find_data_dir()


def test_find_data_dir_searches_upward(monkeypatch, tmp_path):
    monkeypatch.delenv("GNSM_DATA_DIR", raising=False)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert find_data_dir() == tmp_path / "shared" / "data"


# ------------------------------------------------------------------ general loader
@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    df = pd.DataFrame({"color": ["r", "g", "b", "r", "g", "b"], "n": [1, 2, 3, 4, 5, 6],
                       "y": ["no", "no", "yes", "no", "maybe", "no"]})
    path = tmp_path / "table.csv"
    df.to_csv(path, index=False)
    return path


def test_csv_with_label_and_anomaly_value(csv_path):
    ds = load_dataset(csv_path, label_col="y", anomaly_value="yes")
    assert ds.y.tolist() == [0, 0, 1, 0, 0, 0]
    assert ds.categorical == ["color"] and ds.numerical == ["n"]
    ds = load_dataset(str(csv_path), label_col="y", anomaly_value=["yes", "maybe"], normal_value="no")
    assert ds.y.sum() == 2 and len(ds.y) == 6
    ds = load_dataset(csv_path, label_col="y", anomaly_value="yes", normal_value="no")
    assert len(ds.y) == 5  # "maybe" is neither: dropped
    ds = load_dataset(csv_path, label_col="n", anomaly_value="3", categorical=["y"])
    assert ds.y.tolist() == [0, 0, 1, 0, 0, 0]  # "3" matches the integer label 3


def test_loader_errors(csv_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="file not found"):
        load_dataset(tmp_path / "missing.csv", label_col="y", anomaly_value="yes")
    with pytest.raises(ValueError, match=r"label_col: column 'label' not in"):
        load_dataset(csv_path, label_col="label", anomaly_value="yes")
    with pytest.raises(ValueError, match="label_col: required"):
        load_dataset(csv_path)
    with pytest.raises(ValueError, match=r"anomaly_value: \['perhaps'\] not found in column 'y'"):
        load_dataset(csv_path, label_col="y", anomaly_value="perhaps")
    with pytest.raises(ValueError, match="anomaly_value: required"):
        load_dataset(csv_path, label_col="y")
    with pytest.raises(ValueError, match="no inliers"):
        load_dataset(csv_path, label_col="y", anomaly_value=["yes", "no", "maybe"])
    with pytest.raises(ValueError, match="neither a registered dataset"):
        load_dataset("not_a_dataset")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_dataset(tmp_path / "table.xlsx", label_col="y", anomaly_value=1)
    empty = tmp_path / "empty.csv"
    empty.write_text("a,y\n")
    with pytest.raises(ValueError, match="has no rows"):
        load_dataset(empty, label_col="y", anomaly_value=1)
    blank = tmp_path / "blank.csv"
    blank.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        load_dataset(blank, label_col="y", anomaly_value=1)
    only_label = tmp_path / "only_label.csv"
    only_label.write_text("y\n0\n1\n")
    with pytest.raises(ValueError, match="no feature columns"):
        load_dataset(only_label, label_col="y", anomaly_value=1)


def test_arff_path_uses_declared_types(tmp_path):
    path = tmp_path / "t.arff"
    path.write_text("@relation t\n@attribute a {x,y}\n@attribute v numeric\n@attribute c {0,1}\n"
                    "@data\nx,1.5,0\n?,2.5,0\ny,?,1\nx,0.5,0\n")
    frame, nominal = read_arff(path)
    assert nominal == ["a", "c"] and frame["a"].isna().sum() == 1 and frame["v"].isna().sum() == 1
    assert frame["a"].tolist()[0] == "x"  # bytes decoded
    ds = load_dataset(path, label_col="c", anomaly_value="1")
    assert ds.categorical == ["a"] and ds.numerical == ["v"] and ds.y.tolist() == [0, 0, 1, 0]


def test_parquet_path(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "t.parquet"
    pd.DataFrame({"a": ["x", "y", "x"], "y": [0, 1, 0]}).to_parquet(path)
    assert load_dataset(path, label_col="y", anomaly_value=1).y.tolist() == [0, 1, 0]


def test_subsample_anomalies_is_seeded_and_keeps_inliers():
    X = pd.DataFrame({"a": np.arange(200)})
    y = np.r_[np.zeros(100, int), np.ones(100, int)]
    X1, y1 = subsample_anomalies(X, y, 0.05, seed=0)
    X2, y2 = subsample_anomalies(X, y, 0.05, seed=0)
    assert y1.sum() == 5 and (y1 == 0).sum() == 100  # round(0.05 / 0.95 * 100)
    pd.testing.assert_frame_equal(X1, X2)
    assert X1["a"].is_monotonic_increasing  # file order kept
    with pytest.raises(ValueError, match="fraction"):
        subsample_anomalies(X, y, 1.5)
