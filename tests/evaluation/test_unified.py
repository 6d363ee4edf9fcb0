"""Unified (leave-one-class-out) protocol: split structure, runner, table."""
import numpy as np
import pytest

from gnsm.evaluation.unified import (evaluate_unified, leave_one_class_out_splits, stratified_train_test,
                                     unified_markdown_table)


def data():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 25)
    X = rng.normal(size=(100, 3)) + y[:, None] * 5.0
    return X, y


def test_splits_hold_out_each_class_and_never_train_on_test_rows():
    X, y = data()
    splits = leave_one_class_out_splits(X, y, test_size=0.2, random_state=0)
    tr, te = stratified_train_test(y, 0.2, 0)
    assert [s.held_out for s in splits] == [0, 1, 2, 3]
    for s in splits:
        assert s.held_out not in set(s.y_train.tolist())
        assert len(s.X_train) == len(tr) - 20  # 20 train rows per class, one class left out
        np.testing.assert_array_equal(s.X_test, X[te])
        np.testing.assert_array_equal(s.is_anomaly, (y[te] == s.held_out).astype(int))
    # no test row appears in any training set
    train_rows = {tuple(r) for s in splits for r in s.X_train}
    assert not train_rows & {tuple(r) for r in X[te]}
    assert [s.held_out for s in leave_one_class_out_splits(X, y, classes=[2])] == [2]


def centre_distance(X, y, Xt):
    return np.linalg.norm(Xt - X.mean(0), axis=1)


def nearest_class_mean(X, y, Xt):
    means = np.stack([X[y == c].mean(0) for c in np.unique(y)])
    return np.linalg.norm(Xt[:, None] - means[None], axis=2).min(1), {"n_classes": len(means)}


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_evaluate_unified_and_table(n_jobs):
    X, y = data()
    splits = leave_one_class_out_splits(X, y, test_size=0.2, random_state=0)
    res = evaluate_unified(splits, {"centre": centre_distance, "nearest": nearest_class_mean}, n_jobs=n_jobs)
    near = res["methods"]["nearest"]
    assert near["auroc"] == pytest.approx([1.0] * 4) and near["mean_auroc"] == pytest.approx(1.0)
    assert near["info"] == [{"n_classes": 3}] * 4
    assert len(res["methods"]["centre"]["seconds"]) == 4 and "info" not in res["methods"]["centre"]
    table = unified_markdown_table(res)
    assert table.splitlines()[0] == "| method | 0 | 1 | 2 | 3 | mean |"
    assert "| nearest | 100.0 | 100.0 | 100.0 | 100.0 | **100.0** |" in table
