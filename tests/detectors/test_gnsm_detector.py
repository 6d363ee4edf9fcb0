"""GNSMDetector: the PyOD-style contract on real data (bundled UCI cars), policies, checkpoints, explanations."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone

from gnsm.datasets import load_dataset
from gnsm.detectors.base import BaseDetector
from gnsm.detectors.tabular import GNSMDetector
from gnsm.evaluation import auroc, split_inliers

STEPS = 150  # a small training budget and network: enough for the floor below, fast on 2 CPU cores
SMALL = dict(width=64, depth=1)


@pytest.fixture(scope="module")
def cars():
    ds = load_dataset("cars")
    split = split_inliers(ds.y, 42)
    X = ds.X
    return dict(train=X.iloc[split.train].reset_index(drop=True), val=X.iloc[split.val].reset_index(drop=True),
                test=X.iloc[split.test].reset_index(drop=True), y_test=ds.y[split.test])


@pytest.fixture(scope="module")
def fitted(cars):
    det = GNSMDetector(n_steps=STEPS, random_state=0, contamination=0.1, **SMALL)
    return det.fit(cars["train"], X_val=cars["val"])


@pytest.fixture(scope="module")
def fitted_paper(cars):
    det = GNSMDetector(scoring="paper", n_steps=STEPS, random_state=0, max_components=3, **SMALL)
    return det.fit(cars["train"], X_val=cars["val"])


def test_constructor_only_stores_arguments():
    det = GNSMDetector(scoring="paper", head="kde", n_steps=5)
    assert det.get_params()["scoring"] == "paper" and det.get_params()["head"] == "kde"
    assert not hasattr(det, "threshold_") and not hasattr(det, "model_")
    det.set_params(head="knn", n_neighbors=3)
    assert det.head == "knn" and det.n_neighbors == 3
    twin = clone(det)
    assert twin.get_params() == det.get_params() and twin is not det


def test_fitted_attributes(fitted, cars):
    n = len(cars["train"])
    assert fitted.decision_scores_.shape == (n,)
    assert np.isfinite(fitted.decision_scores_).all()
    assert set(np.unique(fitted.labels_)) <= {0, 1}
    assert 0.05 <= fitted.labels_.mean() <= 0.15  # contamination 0.1
    assert np.isclose(fitted.threshold_, np.percentile(fitted.decision_scores_, 90))
    assert fitted.field_sizes_ == [5, 5, 5, 4, 4, 4]  # observed categories + the unknown slot


def test_predict_and_proba(fitted, cars):
    scores = fitted.decision_function(cars["test"])
    assert scores.shape == (len(cars["test"]),) and scores.dtype == np.float64
    pred = fitted.predict(cars["test"])
    assert np.array_equal(pred, (scores > fitted.threshold_).astype(int))
    proba = fitted.predict_proba(cars["test"])
    assert proba.shape == (len(scores), 2)
    assert np.allclose(proba.sum(axis=1), 1.0) and (proba >= 0).all() and (proba <= 1).all()


@pytest.mark.parametrize("mode", ["denoise", "paper"])
def test_auroc_floor(mode, fitted, fitted_paper, cars):
    det = fitted if mode == "denoise" else fitted_paper
    assert auroc(cars["y_test"], det.decision_function(cars["test"])) > 0.7


def test_codes_and_tensor_input(cars):
    codes = np.stack([pd.factorize(cars["train"][c], sort=True)[0] for c in cars["train"].columns], axis=1)
    det = GNSMDetector(**SMALL, n_steps=20, random_state=0).fit(codes)
    s_np = det.decision_function(codes[:50])
    s_t = det.decision_function(torch.as_tensor(codes[:50]))
    assert np.allclose(s_np, s_t)


def test_unseen_category_scores_high(fitted, cars):
    rec = cars["test"].iloc[[0]].copy()
    rec["safety"] = "never-seen"
    score = fitted.decision_function(rec)[0]
    assert score > fitted.decision_scores_.max()
    assert fitted.predict(rec)[0] == 1


def test_unseen_category_raise_policy(cars):
    det = GNSMDetector(**SMALL, n_steps=10, unseen="raise", random_state=0).fit(cars["train"])
    rec = cars["test"].iloc[[0]].copy()
    rec["safety"] = "never-seen"
    with pytest.raises(ValueError, match="safety"):
        det.decision_function(rec)


def test_missing_policy_and_column_checks(cars):
    X = cars["train"].copy()
    X.loc[0, "doors"] = None
    with pytest.raises(ValueError, match="missing"):
        GNSMDetector(**SMALL, n_steps=5, missing="raise").fit(X)
    det = GNSMDetector(**SMALL, n_steps=5, random_state=0).fit(X)  # missing="category" by default
    assert np.isfinite(det.decision_function(X.head(5))).all()
    with pytest.raises(ValueError, match="column"):
        det.decision_function(cars["test"].drop(columns=["doors"]))


def test_all_numeric_table_raises():
    X = pd.DataFrame({"a": np.arange(20.0), "b": np.arange(20.0) ** 2})
    with pytest.raises(ValueError, match="categorical"):
        GNSMDetector(**SMALL, n_steps=5).fit(X)


@pytest.mark.parametrize("column, normal, odd", [("status", "ok", "failed"), ("level", 3.0, 3.5)])
def test_constant_column_kept_and_a_deviation_there_is_seen(cars, column, normal, odd):
    """A column with one value in training is kept: records that differ from normal ones only there score
    above every normal record (AUROC 100)."""
    train = cars["train"].assign(**{column: normal})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # nothing is dropped
        det = GNSMDetector(**SMALL, n_steps=30, random_state=0).fit(train)
    assert column in det.field_names_ and det.encoder_.constant_columns_ == [column]
    inliers = cars["test"][cars["y_test"] == 0]
    X = pd.concat([inliers.assign(**{column: normal}), inliers.assign(**{column: odd})], ignore_index=True)
    y = np.r_[np.zeros(len(inliers)), np.ones(len(inliers))]
    assert auroc(y, det.decision_function(X)) == 1.0


def test_single_valued_column_dropped_on_request(cars):
    X = cars["train"].assign(const="x")
    det = GNSMDetector(**SMALL, n_steps=5, random_state=0)
    det.encoder_params_ = None
    from gnsm.data import TabularEncoder
    with pytest.warns(UserWarning, match="const"):
        enc = TabularEncoder(constant="drop").fit(X)
    assert "const" not in enc.categorical_columns


def test_mixed_table_with_numericals():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"c": rng.choice(list("abc"), 300), "x": rng.normal(size=300)})
    X["y"] = X["x"] * 2 + rng.normal(scale=0.1, size=300)
    det = GNSMDetector(**SMALL, n_steps=30, random_state=0).fit(X)
    assert det.n_numerical_ == 2
    assert det.decision_function(X.head(10)).shape == (10,)
    assert list(det.field_contributions(X.head(3)).columns) == ["x", "y", "c"]


@pytest.mark.parametrize("head", ["gmm", "kde", "knn", "loss"])
def test_heads_save_load_round_trip(head, fitted, cars, tmp_path):
    det = clone(fitted).set_params(head=head, n_steps=20, n_score_temperatures=3, n_noise_copies=1)
    det.fit(cars["train"], X_val=cars["val"])
    before = det.decision_function(cars["test"])
    det.save(tmp_path / "m")
    again = GNSMDetector.load(tmp_path / "m")
    assert np.array_equal(before, again.decision_function(cars["test"]))
    assert again.threshold_ == det.threshold_
    assert np.array_equal(again.decision_scores_, det.decision_scores_)
    assert isinstance(BaseDetector.load(tmp_path / "m"), GNSMDetector)


def test_paper_mode_round_trip(fitted_paper, cars, tmp_path):
    before = fitted_paper.decision_function(cars["test"])
    fitted_paper.save(tmp_path / "p")
    again = GNSMDetector.load(tmp_path / "p", device="cpu")
    assert np.array_equal(before, again.decision_function(cars["test"]))
    assert again.head_.kind == "gmm" and again.head_.meta["n_components"] >= 1


def test_score_norm_profiles(fitted, cars):
    prof = fitted.score_norm_profiles(cars["test"].head(7))
    assert prof.shape == (7, fitted.n_temperatures) and np.isfinite(prof).all() and (prof >= 0).all()


def test_explain_shape_and_planted_field(fitted, cars):
    X = cars["test"].head(6).copy()
    X.loc[X.index[2], "persons"] = "planted-unseen"
    ex = fitted.explain(X, top_k=3)
    assert list(ex.columns) == ["score", "field_1", "value_1", "contribution_1", "field_2", "value_2",
                                "contribution_2", "field_3", "value_3", "contribution_3"]
    assert len(ex) == 6 and (ex.index == X.index).all()
    assert ex.loc[X.index[2], "field_1"] == "persons"
    assert ex.loc[X.index[2], "value_1"] == "planted-unseen"
    assert (ex["contribution_1"] >= ex["contribution_2"]).all()
    contrib = fitted.field_contributions(X)
    assert contrib.shape == (6, 6)


def test_bad_parameters(cars):
    with pytest.raises(ValueError, match="scoring"):
        GNSMDetector(scoring="nope").fit(cars["train"])
    with pytest.raises(ValueError, match="head"):
        GNSMDetector(head="nope").fit(cars["train"])
    with pytest.raises(ValueError, match="eps"):
        GNSMDetector(eps=0.0).fit(cars["train"])


def test_not_fitted_raises(cars):
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        GNSMDetector().decision_function(cars["test"])


def test_registered_with_evaluation():
    from gnsm.evaluation import list_detectors, make_detector
    assert {"gnsm", "gnsm-paper"} <= set(list_detectors())
    det = make_detector("gnsm-paper", seed=43)
    assert isinstance(det, GNSMDetector) and det.scoring == "paper" and det.random_state == 43


# ---------------------------------------------------------------------------- head="hgad" (several normal classes)
# A small network, few temperatures and a tiny flow: the HGAD-head path end to end in seconds on 2 CPU cores.
# (With 60 steps and width 32 the network had not yet learned the unseen slot: keep 150 steps.)
HGAD_FAST = dict(**SMALL, n_steps=STEPS, n_score_temperatures=5, n_noise_copies=1, random_state=0,
                 head="hgad", head_options=dict(n_blocks=2, hidden_dim=32, stage1_epochs=4, stage2_epochs=2,
                                                batch_size=128))


@pytest.fixture(scope="module")
def cars_classes():
    """The bundled car table with its 4-class label; normal = unacc/acc/good (3 classes), 75/25 split."""
    from gnsm.datasets import read_arff
    from gnsm.datasets.registry import BUNDLED_DIR
    frame, _ = read_arff(BUNDLED_DIR / "car.arff")
    frame = frame[frame["class"] != "vgood"].reset_index(drop=True)
    rng = np.random.default_rng(0)
    test = rng.random(len(frame)) < 0.25
    X, y = frame.drop(columns=["class"]), frame["class"].to_numpy()
    return dict(train=X[~test].reset_index(drop=True), y_train=y[~test],
                test=X[test].reset_index(drop=True), y_test=y[test])


@pytest.fixture(scope="module")
def hgad_labelled(cars_classes):
    return GNSMDetector(**HGAD_FAST).fit(cars_classes["train"], cars_classes["y_train"])


def _with_unseen(X):
    bad = X.copy()
    bad["safety"] = "never-seen"
    return bad


def test_hgad_head_uses_class_labels(hgad_labelled, cars_classes):
    det = hgad_labelled
    n = len(cars_classes["train"])
    assert det.head_.kind == "hgad"
    assert det.head_.model.classes == ["acc", "good", "unacc"]
    assert det.head_.model.class_info["rule"] == "labels"
    assert det.head_.model.model.prior.n_classes == 3
    assert det.decision_scores_.shape == (n,) and np.isfinite(det.decision_scores_).all()
    scores = det.decision_function(cars_classes["test"])
    assert scores.shape == (len(cars_classes["test"]),) and scores.dtype == np.float64
    assert np.isfinite(scores).all()
    # the test sample's class is never needed: scoring takes X only
    assert np.array_equal(det.predict(cars_classes["test"]), (scores > det.threshold_).astype(int))


def test_hgad_head_corrupted_records_score_higher(hgad_labelled, cars_classes):
    # An unseen category (the reserved slot). Shuffling columns would not corrupt cars: the table is a
    # full factorial design, so every shuffled record is a valid car.
    clean = hgad_labelled.decision_function(cars_classes["test"])
    unseen = hgad_labelled.decision_function(_with_unseen(cars_classes["test"]))
    assert unseen.mean() > clean.mean() + 0.5
    assert (unseen > np.median(clean)).mean() > 0.85  # 0.97 measured


def test_hgad_head_without_labels_uses_pseudo_classes(cars_classes):
    det = GNSMDetector(**HGAD_FAST).fit(cars_classes["train"])  # head_options: n_classes="auto" (k-means)
    info = det.head_.model.class_info
    assert info["rule"] == "auto" and det.head_.model.classes is None
    assert det.head_.model.model.prior.n_classes == info["k"] >= 1
    clean = det.decision_function(cars_classes["test"])
    assert np.isfinite(clean).all() and clean.shape == (len(cars_classes["test"]),)
    assert det.decision_function(_with_unseen(cars_classes["test"])).mean() > clean.mean()


def test_hgad_head_save_load_round_trip(hgad_labelled, cars_classes, tmp_path):
    before = hgad_labelled.decision_function(cars_classes["test"])
    hgad_labelled.save(tmp_path / "h")
    again = GNSMDetector.load(tmp_path / "h", device="cpu")
    assert again.head_.kind == "hgad" and again.head_.model.classes == ["acc", "good", "unacc"]
    assert np.array_equal(before, again.decision_function(cars_classes["test"]))
    assert np.array_equal(again.decision_scores_, hgad_labelled.decision_scores_)
    assert again.threshold_ == hgad_labelled.threshold_


def test_hgad_head_bad_labels(cars_classes):
    X, y = cars_classes["train"], cars_classes["y_train"]
    det = GNSMDetector(**{**HGAD_FAST, "n_steps": 10 ** 6})  # the checks must come before any training
    with pytest.raises(ValueError, match=f"y: expected {len(X)} labels"):
        det.fit(X, y[:-1])
    with pytest.raises(ValueError, match="1-D"):
        det.fit(X, np.stack([y, y], axis=1))
    with pytest.raises(ValueError, match="missing label"):
        det.fit(X, np.where(np.arange(len(y)) == 3, None, y).astype(object))
    assert not hasattr(det, "model_")
    few = X.head(20)
    with pytest.raises(ValueError, match="need at least 50 samples"):
        GNSMDetector(**{**HGAD_FAST, "n_steps": 10 ** 6,
                        "head_options": {**HGAD_FAST["head_options"], "n_classes": 50}}).fit(few)


def test_labels_ignored_by_other_heads(cars_classes):
    X = cars_classes["train"].head(100)
    det = GNSMDetector(**{**HGAD_FAST, "head": "loss", "n_steps": 5}).fit(X, np.arange(len(X)) % 2)
    assert det.head_.kind == "loss" and np.isfinite(det.decision_scores_).all()
    with pytest.raises(ValueError, match=f"y: expected {len(X)} labels"):  # values ignored, length still checked
        GNSMDetector(**{**HGAD_FAST, "head": "loss", "n_steps": 10 ** 6}).fit(X, np.zeros(3))


def test_auto_steps_scale_with_rows_and_columns():
    det = GNSMDetector()
    det.field_sizes_, det.n_numerical_ = [4] * 6, 0
    assert det._auto_steps(1_000) == 600                    # small table: the floor
    assert det._auto_steps(100_000) == 1562                 # ~4 epochs of 256 records
    det.field_sizes_, det.n_numerical_ = [4] * 40, 10
    assert det._auto_steps(5_000) == 2000                   # wide table: 40 steps per column
    assert det._auto_steps(1_000_000) == 3000               # the cap
    assert GNSMDetector(n_steps=77)._auto_steps(10 ** 6) == 77


# ------------------------------------------------------------------ rarity term, fit sample, chunked scoring
def test_fit_rarity_counts_only_rare_values():
    from gnsm.detectors.tabular import fit_rarity
    codes = np.zeros((4000, 1), dtype=np.int64)
    codes[:2000, 0] = 1
    codes[0, 0] = 2  # seen once: rare (c = 0.1 % of 4000 = 4)
    r = fit_rarity(codes, [4])  # slot 3 never seen
    np.testing.assert_allclose(r, [0.0, 0.0, np.log(5 / 2), np.log(5)])
    assert fit_rarity(codes[:10], [4])[3] == pytest.approx(np.log(2))  # c is at least 1


def test_rarity_weight_adds_the_rarity_term(cars):
    det = GNSMDetector(**SMALL, n_steps=30, random_state=0).fit(cars["train"])
    rec = cars["test"].iloc[[0, 1]].copy()
    rec.loc[rec.index[0], "safety"] = "never-seen"
    with_term = det.decision_function(rec)
    rarity = det.rarity(rec)
    j = det.encoder_.categorical_columns.index("safety")
    assert rarity[0, j] == pytest.approx(np.log(2)) and rarity[1].sum() == 0  # c = max(1, 0.1 % of ~960 rows)
    det.set_params(rarity_weight=0.0)
    without = det.decision_function(rec)
    np.testing.assert_allclose(with_term - without, rarity.sum(axis=1) * len(det._score_indices()))


def test_fit_score_rows_samples_the_threshold_rows(cars):
    det = GNSMDetector(**SMALL, n_steps=5, random_state=0, fit_score_rows=300, contamination=0.1).fit(cars["train"])
    idx = det.fit_score_index_
    assert len(det.decision_scores_) == 300 and len(np.unique(idx)) == 300 and (np.diff(idx) > 0).all()
    assert det.threshold_ == pytest.approx(np.quantile(det.decision_scores_, 0.9), rel=1e-3)
    # the sampled rows' training scores are their scores as new data (same model, same noise positions aside)
    full = GNSMDetector(**SMALL, n_steps=5, random_state=0, fit_score_rows=None).fit(cars["train"])
    assert len(full.decision_scores_) == len(cars["train"])


def test_chunked_scoring_equals_one_pass(fitted, cars, monkeypatch):
    import gnsm.detectors.tabular as tab
    monkeypatch.setattr(tab, "_FEATURE_BATCH", 16)
    one = fitted.decision_function(cars["test"])  # one chunk (the table is smaller than _SCORE_CHUNK)
    monkeypatch.setattr(tab, "_SCORE_CHUNK", 48)
    np.testing.assert_array_equal(fitted.decision_function(cars["test"]), one)


def test_hgad_head_labels_follow_the_fit_sample(cars_classes):
    det = GNSMDetector(**{**HGAD_FAST, "fit_score_rows": 200}).fit(cars_classes["train"], cars_classes["y_train"])
    assert len(det.decision_scores_) == 200
    assert np.isfinite(det.decision_function(cars_classes["test"].head(20))).all()
