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


# ---------------------------------------------------------------------------- tables with several normal classes
from gnsm.datasets import load_class_table  # noqa: E402
from gnsm.evaluation.unified import (evaluate_unified_seeds, frequency_method, on_features, on_frames,  # noqa: E402
                                     onehot_encoder, seeds_markdown_table, summarize_seeds, table_splits)


@pytest.fixture(scope="module")
def cars_table():
    return load_class_table("cars")  # the bundled copy when shared/data is absent


def test_table_splits_leave_one_class_out(cars_table):
    X, y = cars_table
    splits = table_splits(X, y, test_size=0.3, random_state=0)
    assert [s.held_out for s in splits] == ["acc", "good", "unacc", "vgood"]
    rows = X.to_numpy(dtype=object)
    key = {tuple(r): i for i, r in enumerate(rows)}  # cars is a full factorial: every record is unique
    assert len(key) == len(rows)
    test_idx = {key[tuple(r)] for r in splits[0].X_test}
    assert len(test_idx) == len(splits[0].X_test)
    for s in splits:
        assert s.X_train.dtype == object and s.X_train.shape[1] == 6
        assert s.held_out not in set(s.y_train.tolist())  # no anomaly class in training
        assert len(set(s.y_train.tolist())) == 3  # several normal classes
        train_idx = {key[tuple(r)] for r in s.X_train}
        assert not train_idx & test_idx  # no test row in training
        assert {key[tuple(r)] for r in s.X_test} == test_idx  # one test set for every class
        np.testing.assert_array_equal(s.is_anomaly, (s.y_test == s.held_out).astype(int))
        # training = every non-test row of the other classes
        assert train_idx == {i for i in range(len(y)) if i not in test_idx and y[i] != s.held_out}
        # stratified: each class has ~30 % of its rows in test
        for c in np.unique(y):
            assert abs((s.y_test == c).sum() - 0.3 * (y == c).sum()) <= 1
    assert [s.held_out for s in table_splits(X, y, 0.3, 1)] == ["acc", "good", "unacc", "vgood"]
    assert not np.array_equal(table_splits(X, y, 0.3, 1)[0].X_test, splits[0].X_test)  # the seed moves the split


def test_onehot_encoder_keeps_categories_missing_from_training(cars_table):
    X, y = cars_table
    encode = onehot_encoder(X)
    split = table_splits(X, y, 0.3, 0, classes=["unacc"])[0]
    F, Ft = encode(split.X_train), encode(split.X_test)
    assert F.shape == (len(split.X_train), 21) and Ft.shape[1] == 21
    sizes = [X[c].nunique() for c in X.columns]
    for block in np.split(np.arange(21), np.cumsum(sizes)[:-1]):
        assert (F[:, block].sum(axis=1) == 1).all()
    # persons=2 and safety=low only occur in unacc: constant 0 in training, present in the test part
    zero_cols = np.flatnonzero(F.sum(axis=0) == 0)
    assert len(zero_cols) == 2 and (Ft[:, zero_cols].sum(axis=0) > 0).all()


def test_table_methods_and_seeds_summary(cars_table):
    X, y = cars_table
    seen = {}

    def probe(F, labels, Ft):
        seen["shape"] = (F.shape, Ft.shape, F.dtype)
        return np.zeros(len(Ft))

    def frames(Xf, labels, Xt):
        seen["columns"] = list(Xf.columns)
        return frequency_method(Xf, labels, Xt)

    methods = {"probe": on_features(onehot_encoder(X), probe), "frequency": on_frames(list(X.columns), frames)}
    res = evaluate_unified_seeds(lambda s: table_splits(X, y, 0.3, s, classes=["good", "vgood"]), methods, [0, 1])
    assert seen["shape"][0][1] == seen["shape"][1][1] == 21 and seen["shape"][2] == np.float64
    assert seen["columns"] == list(X.columns)
    summ = res["summary"]
    assert summ["held_out"] == ["good", "vgood"] and list(res["runs"]) == ["0", "1"]
    probe_rec, freq = summ["methods"]["probe"], summ["methods"]["frequency"]
    assert probe_rec["mean_auroc"] == pytest.approx(0.5) and probe_rec["mean_auroc_std"] == pytest.approx(0.0)
    per_seed = [np.mean(res["runs"][s]["methods"]["frequency"]["auroc"]) for s in ("0", "1")]
    assert freq["mean_auroc"] == pytest.approx(np.mean(per_seed)) and freq["mean_auroc_std"] == pytest.approx(np.std(per_seed))
    assert freq["mean_auroc"] > 0.8  # rare classes of a rule-based table: the frequency score finds them
    table = seeds_markdown_table(summ)
    assert table.splitlines()[0] == "| method | good | vgood | mean ± std |"
    assert "| probe | 50.0 | 50.0 | 50.0 ± 0.0 |" in table


def test_summarize_seeds_arithmetic():
    runs = {"0": {"held_out": ["a", "b"], "methods": {"m": {"auroc": [0.6, 0.8], "seconds": [1.0, 1.0]}}},
            "1": {"held_out": ["a", "b"], "methods": {"m": {"auroc": [0.8, 1.0], "seconds": [3.0, 3.0]}}}}
    rec = summarize_seeds(runs)["methods"]["m"]
    assert rec["auroc_mean"] == pytest.approx([0.7, 0.9]) and rec["auroc_std"] == pytest.approx([0.1, 0.1])
    assert rec["mean_auroc"] == pytest.approx(0.8) and rec["mean_auroc_std"] == pytest.approx(0.1)
    assert rec["seconds_per_fit"] == pytest.approx(2.0)
