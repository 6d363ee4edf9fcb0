"""Evaluation protocol: split recipe, frequency baseline, runner, registry and reports."""
from __future__ import annotations

import json
import math
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from gnsm.data import EncodedTable
from gnsm.datasets import Dataset, find_data_dir, load_dataset
from gnsm.evaluation import (SEEDS, CategoryFrequency, evaluate, list_detectors, make_detector,
                             markdown_table, register_detector, run_protocol, split_inliers)
from gnsm.evaluation.baselines import _DETECTORS


@lru_cache(maxsize=None)
def cars() -> Dataset:
    return load_dataset("cars")  # bundled: no shared/ needed


def _has_solar() -> bool:
    try:
        return (find_data_dir() / "solar").is_dir()
    except FileNotFoundError:
        return False


# ------------------------------------------------------------------ splits
@pytest.mark.parametrize("seed", SEEDS)
def test_cars_split_sizes_and_no_leakage(seed):
    ds = cars()
    split = split_inliers(ds.y, seed)
    assert (len(split.train), len(split.val)) == (968, 121)
    y_test = ds.y[split.test]
    assert ((y_test == 0).sum(), (y_test == 1).sum()) == (121, 65)
    assert ds.y[split.train].sum() == 0 and ds.y[split.val].sum() == 0
    parts = [set(split.train), set(split.val), set(split.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert set().union(*parts) == set(range(len(ds.y)))  # every row used exactly once


def test_split_is_the_documented_recipe_and_reproducible():
    y = np.r_[np.zeros(50, int), np.ones(5, int)]
    split = split_inliers(y, 42)
    perm = np.random.RandomState(42).permutation(50)
    np.testing.assert_array_equal(split.train, np.sort(perm[:40]))
    np.testing.assert_array_equal(split.val, np.sort(perm[40:45]))
    np.testing.assert_array_equal(split.test, np.sort(np.r_[perm[45:], np.arange(50, 55)]))
    again = split_inliers(y, 42)
    np.testing.assert_array_equal(split.train, again.train)
    other = split_inliers(y, 43)
    assert not np.array_equal(split.train, other.train)
    with pytest.raises(ValueError, match="fractions"):
        split_inliers(y, 42, fractions=(0.5, 0.1, 0.1))


# ------------------------------------------------------------------ frequency baseline
def test_frequency_scores_on_a_hand_made_table():
    train = pd.DataFrame({"a": ["x", "x", "x", "y"], "b": ["p", "q", "p", "p"]})
    det = CategoryFrequency(alpha=1.0).fit(train)
    # n = 4, K = 2 observed + 1 unseen slot = 3 per field: p = (count + 1) / (4 + 3)
    test = pd.DataFrame({"a": ["x", "y", "z"], "b": ["p", "q", "p"]})
    expected = [
        -math.log(4 / 7) - math.log(4 / 7),
        -math.log(2 / 7) - math.log(2 / 7),
        -math.log(1 / 7) - math.log(4 / 7),  # unseen "z": finite, the largest per-field score
    ]
    np.testing.assert_allclose(det.decision_function(test), expected, rtol=1e-12)
    np.testing.assert_allclose(det.score_fields(test)[2], [math.log(7), math.log(7 / 4)], rtol=1e-12)
    np.testing.assert_allclose(det.decision_scores_[0], expected[0], rtol=1e-12)


def test_frequency_numerical_columns():
    train = pd.DataFrame({"a": ["x", "y", "x", "y"], "v": [0.0, 1.0, 2.0, 3.0]})
    test = pd.DataFrame({"a": ["x"], "v": [5.0]})
    z = (5.0 - 1.5) / np.std([0.0, 1.0, 2.0, 3.0])
    gauss = CategoryFrequency().fit(train).decision_function(test)
    ignore = CategoryFrequency(numerical="ignore").fit(train).decision_function(test)
    np.testing.assert_allclose(ignore, [-math.log(3 / 7)], rtol=1e-12)
    np.testing.assert_allclose(gauss - ignore, [0.5 * z * z], rtol=1e-5)
    with pytest.raises(ValueError, match="numerical: expected"):
        CategoryFrequency(numerical="square").fit(train)
    with pytest.raises(ValueError, match="alpha"):
        CategoryFrequency(alpha=0).fit(train)


# ------------------------------------------------------------------ runner
def test_run_protocol_on_cars_with_fast_baselines():
    res = run_protocol(cars(), {"frequency": "frequency", "ecod": "ecod"}, seeds=(42, 43))
    summary = res.summary()
    assert summary["frequency"]["auroc_mean"] > 0.9
    assert summary["ecod"]["auroc_mean"] > 0.9
    assert summary["frequency"]["input_kind"] == "frame" and summary["ecod"]["input_kind"] == "onehot"
    assert [r["seed"] for r in summary["ecod"]["per_seed"]] == [42, 43]
    assert res.splits[0]["n_train"] == 968 and res.splits[0]["n_test_anomalies"] == 65
    assert res.splits[0]["field_sizes"] == [5, 5, 5, 4, 4, 4]
    json.dumps(res.to_dict())  # JSON-able


@pytest.mark.skipif(not _has_solar(), reason="shared/data not found")
def test_run_protocol_on_solar_floor():
    res = run_protocol(load_dataset("solar"), {"frequency": CategoryFrequency}, seeds=(42, 43))
    assert res.summary()["frequency"]["auroc_mean"] > 0.75


class _Recorder:
    """A detector that records what the protocol hands it."""

    seen: list = []

    def __init__(self, input_kind: str) -> None:
        self.input_kind = input_kind

    def fit(self, X, X_val=None):
        _Recorder.seen.append((self.input_kind, type(X), type(X_val)))
        return self

    def decision_function(self, X):
        n = len(X.codes) if isinstance(X, EncodedTable) else len(X)
        return np.arange(n, dtype=float)


def test_input_kinds_and_validation_set_are_passed():
    _Recorder.seen = []
    ds = cars()
    dets = {k: (lambda k=k: _Recorder(k)) for k in ("onehot", "codes", "frame")}
    run_protocol(ds, dets, seeds=(42,))
    kinds = {k: (x, v) for k, x, v in _Recorder.seen}
    assert kinds["onehot"] == (np.ndarray, np.ndarray)
    assert kinds["codes"] == (EncodedTable, EncodedTable)
    assert kinds["frame"] == (pd.DataFrame, pd.DataFrame)


def test_fit_params_detectors_get_the_validation_set():
    # The detector base's contract, fit(X, y=None, **fit_params): the protocol hands X_val through.
    seen = {}

    class Base:
        input_kind = "frame"

        def fit(self, X, y=None, **fit_params):
            seen["y"], seen["params"] = y, sorted(fit_params)
            seen["n_val"] = len(fit_params["X_val"])
            return self

        def decision_function(self, X):
            return np.arange(len(X), dtype=float)

    split = split_inliers(cars().y, 42)
    run_protocol(cars(), {"base": Base}, seeds=(42,))
    assert seen == {"y": None, "params": ["X_val"], "n_val": len(split.val)}
    det = CategoryFrequency().fit(pd.DataFrame({"a": ["x", "y"]}), None, X_val=pd.DataFrame({"a": ["x"]}))
    assert det.decision_function(pd.DataFrame({"a": ["x"]})).shape == (1,)


def test_declared_categorical_int_columns_reach_frame_detectors_as_category():
    _Recorder.seen = []
    X = pd.DataFrame({"code": np.arange(40) % 4, "v": np.linspace(0.0, 1.0, 40)})
    ds = Dataset("ints", X, np.r_[np.zeros(36, int), np.ones(4, int)], ["code"], ["v"])
    captured = {}

    class Capture(_Recorder):
        def fit(self, X, X_val=None):
            captured["dtypes"] = X.dtypes.to_dict()
            return self

    run_protocol(ds, {"c": lambda: Capture("frame")}, seeds=(42,))
    assert isinstance(captured["dtypes"]["code"], pd.CategoricalDtype)
    assert captured["dtypes"]["v"] == np.float64


def test_runner_errors():
    ds = cars()
    with pytest.raises(ValueError, match="encoding"):
        run_protocol(ds, {"f": "frequency"}, encoding="dense")
    with pytest.raises(ValueError, match="unknown name 'nope'"):
        run_protocol(ds, {"f": "nope"})

    class Broken:
        input_kind = "frame"

        def fit(self, X):
            return self

        def decision_function(self, X):
            return np.full(len(X), np.nan)

    with pytest.raises(ValueError, match="broken scores: .* non-finite"):
        run_protocol(ds, {"broken": Broken}, seeds=(42,))


# ------------------------------------------------------------------ registry
def test_registry_has_baselines_and_is_extensible():
    names = set(list_detectors())
    assert {"iforest", "ecod", "copod", "lof", "knn", "autoencoder", "deepsvdd", "frequency",
            "gnsm"} <= names
    det = make_detector("iforest", seed=7)
    assert det.input_kind == "onehot"
    register_detector("test_const", lambda: CategoryFrequency(), "frame", "test entry")
    try:
        assert "test_const" in list_detectors()
        with pytest.raises(ValueError, match="already registered"):
            register_detector("test_const", CategoryFrequency, "frame")
        register_detector("test_const", CategoryFrequency, "frame", replace=True)
    finally:
        _DETECTORS.pop("test_const", None)
    with pytest.raises(ValueError, match="input_kind"):
        register_detector("x", CategoryFrequency, "sparse")


def test_gnsm_entries_are_registered_once_by_the_registry():
    from gnsm.core import PAPER_EPS
    from gnsm.evaluation import get_detector_spec, make_gnsm, make_gnsm_paper
    assert get_detector_spec("gnsm").factory is make_gnsm
    assert get_detector_spec("gnsm-paper").factory is make_gnsm_paper
    with pytest.raises(ValueError, match="already registered"):
        register_detector("gnsm", make_gnsm, "frame")
    det = make_detector("gnsm-paper", seed=5)
    assert (det.scoring, det.eps, det.random_state) == ("paper", PAPER_EPS, 5)


def test_gnsm_entry_resolves_lazily():
    # Either the detector exists (then it is built with the seed) or the error says what is missing.
    try:
        det = make_detector("gnsm", seed=3)
    except ImportError as err:
        assert "GNSMDetector is not available" in str(err)
    else:
        assert hasattr(det, "fit") and hasattr(det, "decision_function")
        assert getattr(det, "random_state", 3) == 3


# ------------------------------------------------------------------ evaluate and reports
def test_evaluate_writes_reports(tmp_path):
    results = evaluate(["cars"], ["frequency", "copod"], seeds=(42, 43), out_dir=tmp_path,
                       progress=False)
    det = results["datasets"]["cars"]["detectors"]["frequency"]
    assert len(det["per_seed"]) == 2 and det["auroc_mean"] > 0.9
    loaded = json.loads((tmp_path / "results.json").read_text())
    assert loaded["protocol"]["seeds"] == [42, 43]
    assert loaded["datasets"]["cars"]["detectors"]["copod"]["per_seed"][1]["seed"] == 43
    md = (tmp_path / "results.md").read_text()
    assert "| dataset | frequency | copod |" in md and "±" in md
    assert (tmp_path / "results_roc.png").stat().st_size > 1000


def test_markdown_table_marks_best_and_averages():
    def entry(a):
        return {"auroc_mean": a, "auroc_std": 0.01, "ap_mean": a, "ap_std": 0.0,
                "fit_time_mean": 1.0, "score_time_mean": 0.5}
    results = {"datasets": {"d1": {"detectors": {"A": entry(0.9), "B": entry(0.8)}},
                            "d2": {"detectors": {"A": entry(0.5), "B": entry(0.7)}}}}
    table = markdown_table(results, "auroc")
    assert "| d1 | **90.0 ± 1.0** | 80.0 ± 1.0 |" in table
    assert "| mean (2 sets) | 70.0 | **75.0** |" in table
    assert "| d1 | 1.50 | 1.50 |" in markdown_table(results, "time")

