"""SegmentationQC: API, localization on a learnable toy family, inputs, errors, persistence."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from gnsm.detectors import BaseDetector, SegmentationQC

K = 3
SIDE = 16


def _normal_masks(n: int, seed: int, side: int = SIDE) -> np.ndarray:
    """Top half class 0, bottom half class 1, one small class-2 square inside the bottom half."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, side, side), dtype=np.uint8)
    masks[:, side // 2:, :] = 1
    for m in masks:
        r, c = rng.integers(side // 2 + 1, side - 4), rng.integers(1, side - 4)
        m[r:r + 3, c:c + 3] = 2
    return masks


def _corrupt(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A class-2 block in the sky and a class-0 block in the ground: both never seen in training."""
    bad = mask.copy()
    bad[1:5, 2:6] = 2
    bad[10:14, 10:14] = 0
    return bad, bad != mask


@pytest.fixture(scope="module")
def fitted() -> SegmentationQC:
    det = SegmentationQC(num_classes=K, channels=(8, 16), n_steps=150, batch_size=8, lr=3e-3,
                         n_score_temperatures=3, case_stats=("mean", "max"), max_components=2, device="cpu",
                         random_state=0)
    return det.fit(_normal_masks(48, seed=1))


def test_fit_sets_pyod_attributes(fitted):
    assert fitted.decision_scores_.shape == (48,)
    assert np.isfinite(fitted.decision_scores_).all()
    assert fitted.labels_.shape == (48,) and set(np.unique(fitted.labels_)) <= {0, 1}
    assert fitted.num_classes_ == K and fitted.spatial_dims_ == 2
    assert fitted.train_info_["steps"] == 150


def test_predict_maps_outputs(fitted):
    X = _normal_masks(4, seed=9)
    res = fitted.predict_maps(X, return_feature_maps=True)
    assert res.pred_score.shape == (4,) and res.pred_label.shape == (4,)
    assert len(res.anomaly_map) == 4 and res.anomaly_map[0].shape == (SIDE, SIDE)
    assert res.pred_mask[0].dtype == bool and res.pred_mask[0].shape == (SIDE, SIDE)
    assert res.feature_maps[0].shape == (3, SIDE, SIDE)
    np.testing.assert_allclose(res.pred_score, fitted.decision_function(X))
    np.testing.assert_array_equal(res.pred_label, fitted.predict(X))


def test_corrupted_masks_score_higher_and_errors_are_localized(fitted):
    normal = _normal_masks(12, seed=5)
    pairs = [_corrupt(m) for m in normal]
    bad = np.stack([p[0] for p in pairs])
    s_normal = fitted.decision_function(normal)
    s_bad = fitted.decision_function(bad)
    assert s_bad.min() > np.median(s_normal), (s_bad, s_normal)
    from sklearn.metrics import roc_auc_score
    maps = fitted.anomaly_maps(bad)
    auc = roc_auc_score(np.concatenate([p[1].ravel() for p in pairs]), np.concatenate([m.ravel() for m in maps]))
    assert auc > 0.8, auc


def test_soft_probabilities_match_labels(fitted):
    X = _normal_masks(2, seed=3)
    probs = np.moveaxis(np.eye(K, dtype=np.float32)[X], -1, 1)  # (n, K, H, W) one-hot probabilities
    m_labels = fitted.feature_maps(X)
    m_probs = fitted.feature_maps(probs)
    for a, b in zip(m_labels, m_probs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_scoring_is_reproducible_and_case_independent(fitted):
    X = _normal_masks(3, seed=4)
    full = fitted.decision_function(X)
    np.testing.assert_array_equal(full, fitted.decision_function(X))
    np.testing.assert_allclose(fitted.decision_function(X[1:2]), full[1:2])


def test_sliding_window_covers_large_cases(fitted):
    big = np.tile(_normal_masks(1, seed=2)[0], (2, 2))  # 32 x 32
    fitted_state = {k: v for k, v in fitted.__dict__.items() if k.endswith("_") or k == "_dev"}
    maps = {}
    for window in (None, (16, 16)):
        # paper scoring is noise-free, so the two maps differ only by the window seams
        det = SegmentationQC(**{**fitted.get_params(), "window": window, "scoring": "paper"})
        det.__dict__.update(fitted_state)
        maps[window] = det.feature_maps([big])[0]
    whole, windowed = maps[None], maps[(16, 16)]
    assert windowed.shape == whole.shape == (20, 32, 32)
    assert np.isfinite(windowed).all()
    # Seams change the context near window borders only: the maps stay strongly correlated.
    assert np.corrcoef(windowed.ravel(), whole.ravel())[0, 1] > 0.9


def test_save_load_round_trip(fitted, tmp_path):
    X = _normal_masks(3, seed=6)
    fitted.save(tmp_path / "qc")
    det = BaseDetector.load(tmp_path / "qc")
    assert isinstance(det, SegmentationQC)
    np.testing.assert_allclose(det.decision_function(X), fitted.decision_function(X), rtol=1e-6)
    np.testing.assert_allclose(det.anomaly_maps(X)[0], fitted.anomaly_maps(X)[0], rtol=1e-6, atol=1e-6)
    assert det.pixel_threshold_ == fitted.pixel_threshold_


@pytest.mark.parametrize("bad, match", [
    (np.full((1, SIDE, SIDE), 3, np.uint8), r"label 3 .* outside \[0, 3\)"),
    (-np.ones((1, SIDE, SIDE), np.int64), "negative label"),
    (np.zeros((1, 4, SIDE, SIDE), np.int64), "spatial dims"),
    (np.zeros((1, 0, SIDE), np.int64), "empty"),
    (np.full((1, 4, SIDE, SIDE), 0.25, np.float32), "num_classes=3"),
    (np.full((1, K, SIDE, SIDE), 0.5, np.float32), "sum to 1"),
    (np.full((1, K, SIDE, SIDE), np.nan, np.float32), "NaN"),
    (np.full((1, SIDE, SIDE), 0.5), "non-integral"),
])
def test_bad_inputs_raise_clear_errors(fitted, bad, match):
    with pytest.raises(ValueError, match=match):
        fitted.decision_function(bad)


def test_fit_errors():
    with pytest.raises(NotFittedError):
        SegmentationQC().decision_function(np.zeros((1, 4, 4), np.int64))
    with pytest.raises(ValueError, match="integer label maps"):
        SegmentationQC(n_steps=1).fit(np.full((2, K, 4, 4), 1 / K, np.float32), )
    with pytest.raises(ValueError, match="single label"):
        SegmentationQC(n_steps=1).fit(np.zeros((2, 4, 4), np.int64))
    with pytest.raises(ValueError, match="scoring"):
        SegmentationQC(scoring="nope").fit(np.ones((2, 4, 4), np.int64))
    with pytest.raises(ValueError, match="case_stats"):
        SegmentationQC(case_stats=("median",)).fit(np.ones((2, 4, 4), np.int64))


def _quick(**kw) -> SegmentationQC:
    params = dict(channels=(4, 8), n_steps=3, batch_size=2, n_score_temperatures=2, n_noise_copies=1,
                  max_components=1, device="cpu")
    return SegmentationQC(**{**params, **kw})


@pytest.mark.parametrize("head", ["gmm", "hgad"])
def test_label_length_is_checked_before_training(fitted, monkeypatch, head):
    """``y`` needs one label per case, whatever the head; a wrong length fails before the network trains."""
    def no_training(*args, **kwargs):
        raise AssertionError("training started before y was checked")

    monkeypatch.setattr(SegmentationQC, "_train", no_training)
    X = _normal_masks(6, seed=1)
    det = _quick(head=head)
    with pytest.raises(ValueError, match="y: expected 6 labels"):
        det.fit(X, np.zeros(5))
    assert not hasattr(det, "model_")
    if head == "hgad":
        with pytest.raises(ValueError, match="1-D"):
            det.fit(X, np.zeros((6, 2)))
    with pytest.raises(ValueError, match="y: expected 4 labels"):
        fitted.refit_scoring(X[:4], y=np.zeros(3))


def test_conditioning_channels_are_checked():
    X = _normal_masks(6, seed=1)
    img = np.random.default_rng(0).normal(size=(6, 1, SIDE, SIDE)).astype(np.float32)
    det = _quick(cond_channels=1).fit(X, cond=img)
    assert det.decision_function(X[:2], cond=img[:2]).shape == (2,)
    with pytest.raises(ValueError, match="pass cond"):
        det.decision_function(X[:2])
    with pytest.raises(ValueError, match="to match the case"):
        det.decision_function(X[:2], cond=img[:2, :, :8])
    with pytest.raises(ValueError, match="one per case"):
        det.decision_function(X[:2], cond=img[:1])


def test_conditioning_reaches_every_scoring_method():
    """``cond`` is a scoring input of the base API: predict / predict_proba pass it on like decision_function."""
    X = _normal_masks(6, seed=1)
    img = np.random.default_rng(0).normal(size=(6, 1, SIDE, SIDE)).astype(np.float32)
    det = _quick(cond_channels=1).fit(X, cond=img, X_val=X[:2], cond_val=img[:2])
    scores = det.decision_function(X[:3], cond=img[:3])
    np.testing.assert_array_equal(det.predict(X[:3], cond=img[:3]), (scores > det.threshold_).astype(np.int64))
    proba = det.predict_proba(X[:3], cond=img[:3])
    assert proba.shape == (3, 2) and np.isfinite(proba).all()
    np.testing.assert_allclose(det.predict_maps(X[:3], cond=img[:3]).pred_score, scores)
    assert SegmentationQC.score_param_names() == ("cond",)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['image'\]"):
        det.decision_function(X[:3], image=img[:3])
    with pytest.raises(TypeError, match="image"):
        _quick(cond_channels=1).fit(X, image=img)


def test_random_state_drives_the_voxel_sample(monkeypatch):
    """The pixel threshold comes from a random sample of training voxels, drawn from random_state."""
    import gnsm.detectors.segmentation.detector as seg
    X = _normal_masks(6, seed=1)
    det = _quick(scoring="paper").fit(X)  # noise-free features: only the voxel sample can differ
    monkeypatch.setattr(seg, "_MAP_SAMPLE_VOXELS", 60)  # 10 of each case's 256 voxels
    thresholds = [det.refit_scoring(X, random_state=r).pixel_threshold_ for r in (0, 1, 0)]
    assert thresholds[0] == thresholds[2] and thresholds[0] != thresholds[1]


@pytest.mark.parametrize("scoring", ["denoise", "paper"])
def test_volumes_and_file_inputs(tmp_path, scoring):
    nibabel = pytest.importorskip("nibabel")
    rng = np.random.default_rng(0)
    vols = np.zeros((4, 8, 8, 6), np.uint8)
    vols[:, 4:] = 1
    vols[:, 2:4, 2:5, 1:4] = 2
    vols[1:] = np.stack([np.roll(v, int(rng.integers(-1, 2)), axis=0) for v in vols[1:]])
    det = _quick(scoring=scoring, patch_size=(8, 8, 6)).fit(list(vols))
    assert det.spatial_dims_ == 3
    np.save(tmp_path / "a.npy", vols[0])
    nibabel.save(nibabel.Nifti1Image(vols[1].astype(np.float32), np.eye(4)), str(tmp_path / "b.nii.gz"))
    res = det.predict_maps([str(tmp_path / "a.npy"), tmp_path / "b.nii.gz", vols[2]])
    assert [m.shape for m in res.anomaly_map] == [(8, 8, 6)] * 3
    assert np.isfinite(res.pred_score).all()
    expected = 20 if scoring == "paper" else 2
    assert det.feature_maps([vols[0]])[0].shape == (expected, 8, 8, 6)
    with pytest.raises(ValueError, match="spatial dims"):
        det.decision_function(vols[:, :, :, 0])  # 2-D masks to a 3-D detector


def test_png_inputs_and_mixed_sizes(tmp_path):
    from PIL import Image
    masks = _normal_masks(4, seed=2)
    det = _quick().fit(list(masks))
    Image.fromarray(masks[0]).save(tmp_path / "m.png")
    wide = np.concatenate([masks[1], masks[1][:, :8]], axis=1)  # 16 x 24
    res = det.predict_maps([tmp_path / "m.png", wide])
    assert res.anomaly_map[0].shape == (SIDE, SIDE) and res.anomaly_map[1].shape == (SIDE, 24)


def test_same_seed_same_detector():
    X = _normal_masks(6, seed=1)
    a = _quick(random_state=3).fit(X).decision_function(X)
    b = _quick(random_state=3).fit(X).decision_function(X)
    np.testing.assert_array_equal(a, b)
    torch.manual_seed(123)  # the global seed must not matter
    c = _quick(random_state=3).fit(X).decision_function(X)
    np.testing.assert_array_equal(a, c)


def test_coord_channels_and_refit_scoring(tmp_path):
    X = _normal_masks(6, seed=1)
    det = _quick(coord_channels=True).fit(X)
    assert det.model_.cond_channels == 2  # (row, column) coordinates, input only
    assert det.feature_maps(X[:1])[0].shape == (2, SIDE, SIDE)
    before = det.decision_function(X[:2])
    det.refit_scoring(X, scoring="paper", case_stats=("rms",))
    assert det.scoring == "paper" and det.feature_maps(X[:1])[0].shape == (20, SIDE, SIDE)
    assert det.decision_scores_.shape == (6,) and det.head_.mean.shape == (20,)
    assert not np.allclose(det.decision_function(X[:2]), before)
    det.save(tmp_path / "m")
    np.testing.assert_allclose(SegmentationQC.load(tmp_path / "m").decision_function(X[:2]),
                               det.decision_function(X[:2]), rtol=1e-6)
    with pytest.raises(ValueError, match="change the network"):
        det.refit_scoring(X, channels=(2, 4))


def test_per_position_hgad_pixel_head(fitted, tmp_path):
    """``pixel_head="hgad"``: an HGAD flow on each voxel's channel vector + position code gives the map."""
    import copy

    from sklearn.metrics import roc_auc_score
    det = copy.deepcopy(fitted)  # the module fixture stays untouched
    det.refit_scoring(_normal_masks(48, seed=1), pixel_head="hgad",
                      pixel_head_options={"stage1_epochs": 4, "stage2_epochs": 2, "max_samples": 6000})
    assert det.pixel_head_ is not None and det.pixel_head_.model.config["cond_dim"] == 16
    pairs = [_corrupt(m) for m in _normal_masks(12, seed=5)]
    res = det.predict_maps(np.stack([p[0] for p in pairs]))
    assert res.anomaly_map[0].shape == (SIDE, SIDE) and res.pred_mask[0].dtype == bool
    auc = roc_auc_score(np.concatenate([p[1].ravel() for p in pairs]),
                        np.concatenate([m.ravel() for m in res.anomaly_map]))
    assert auc > 0.8, auc
    det.save(tmp_path / "px")
    loaded = SegmentationQC.load(tmp_path / "px", device="cpu")
    np.testing.assert_allclose(loaded.anomaly_maps(np.stack([pairs[0][0]]))[0], res.anomaly_map[0], rtol=1e-5,
                               atol=1e-5)
    assert loaded.pixel_threshold_ == det.pixel_threshold_
    det.refit_scoring(_normal_masks(8, seed=1), pixel_head="mean")
    assert det.pixel_head_ is None


def test_pixel_head_errors():
    with pytest.raises(ValueError, match="pixel_head: expected"):
        SegmentationQC(pixel_head="flow").fit(np.ones((2, 4, 4), np.int64))
    with pytest.raises(ValueError, match=r"pixel_head_options: unknown keys \['blocks'\]"):
        SegmentationQC(pixel_head="hgad", pixel_head_options={"blocks": 2}).fit(np.ones((2, 4, 4), np.int64))


def test_positional_prior_helpers_match_counting():
    from gnsm.detectors.segmentation import fit_positional_prior, positional_nll
    from gnsm.data.masks import as_cases
    X = _normal_masks(10, seed=2)
    cases, _ = as_cases(X, None, K)
    log_p = fit_positional_prior(cases, K, alpha=1.0)
    assert log_p.shape == (K, SIDE, SIDE)
    np.testing.assert_allclose(np.exp(log_p).sum(0), 1.0, rtol=1e-5)
    # top-left pixel: always class 0 in 10 maps -> p = (10 + 1) / (10 + 3)
    np.testing.assert_allclose(np.exp(log_p[0, 0, 0]), 11 / 13, rtol=1e-6)
    nll = positional_nll(log_p, cases[0])
    np.testing.assert_allclose(nll, -np.take_along_axis(log_p, X[0][None].astype(np.int64), 0)[0], rtol=1e-6)
    # a twice-as-large case is matched by relative position; soft one-hot probabilities give the same map
    big, _ = as_cases(np.kron(X[:1], np.ones((2, 2), dtype=X.dtype)), None, K)
    np.testing.assert_allclose(positional_nll(log_p, big[0])[::2, ::2], nll, rtol=1e-6)
    probs, _ = as_cases(np.moveaxis(np.eye(K, dtype=np.float32)[X[:1]], -1, 1), 2, K)
    np.testing.assert_allclose(positional_nll(log_p, probs[0]), nll, rtol=1e-5)


def test_positional_prior_channel_map_and_round_trip(fitted, tmp_path):
    import copy
    X = _normal_masks(24, seed=1)
    det = copy.deepcopy(fitted)
    plain = det.anomaly_maps(X[:2])
    det.refit_scoring(X, positional_prior=True)
    fmap = det.feature_maps(X[:2])[0]
    assert fmap.shape == (4, SIDE, SIDE)  # 3 temperatures + the prior channel
    assert det.prior_log_p_.shape == (K, SIDE, SIDE)
    # the map is half the GNSM channels' mean and half the standardized prior channel
    z = (fmap - det.map_mean_[:, None, None]) / det.map_std_[:, None, None]
    np.testing.assert_allclose(det.anomaly_maps(X[:1])[0], 0.5 * z[:3].mean(0) + 0.5 * z[3], rtol=1e-5, atol=1e-6)
    assert not np.allclose(det.anomaly_maps(X[:2])[0], plain[0])
    # a class never seen at a position (class 2 in the sky) is flagged by the prior channel
    bad, err = _corrupt(X[0])
    prior_map = det.feature_maps(bad[None])[0][3]
    assert prior_map[err].mean() > prior_map[~err].mean() + 1.0
    det.save(tmp_path / "p")
    loaded = SegmentationQC.load(tmp_path / "p")
    assert loaded.positional_prior and loaded.prior_log_p_.shape == (K, SIDE, SIDE)
    np.testing.assert_allclose(loaded.decision_function(X[:3]), det.decision_function(X[:3]), rtol=1e-6)
    det.refit_scoring(X, positional_prior=False)
    assert det.prior_log_p_ is None and det.feature_maps(X[:1])[0].shape == (3, SIDE, SIDE)


def _toy_volumes(n: int = 4) -> np.ndarray:
    rng = np.random.default_rng(0)
    vols = np.zeros((n, 8, 8, 6), np.uint8)
    vols[:, 4:] = 1
    vols[:, 2:4, 2:5, 1:4] = 2
    vols[1:] = np.stack([np.roll(v, int(rng.integers(-1, 2)), axis=0) for v in vols[1:]])
    return vols


def test_auto_scoring_is_denoise_in_2d_and_paper_in_3d():
    assert SegmentationQC().scoring == "auto"
    with pytest.raises(NotFittedError):
        SegmentationQC().scoring_
    masks = _normal_masks(6, seed=1)
    det2 = _quick().fit(masks)
    assert det2.scoring_ == "denoise" and det2.feature_maps(masks[:1])[0].shape[0] == 2
    np.testing.assert_array_equal(det2.decision_function(masks), _quick(scoring="denoise").fit(masks)
                                  .decision_function(masks))
    vols = _toy_volumes()
    det3 = _quick(patch_size=(8, 8, 6)).fit(list(vols))
    assert det3.scoring_ == "paper" and det3.feature_maps([vols[0]])[0].shape[0] == 20
    paper = _quick(patch_size=(8, 8, 6), scoring="paper").fit(list(vols))
    np.testing.assert_array_equal(det3.decision_function(list(vols)), paper.decision_function(list(vols)))


def test_auto_scoring_survives_save_load_and_tabular_rejects_it(tmp_path):
    from gnsm.detectors import GNSMDetector
    vols = _toy_volumes()
    det = _quick(patch_size=(8, 8, 6)).fit(list(vols))
    det.save(tmp_path / "m")
    loaded = SegmentationQC.load(tmp_path / "m")
    assert loaded.scoring == "auto" and loaded.scoring_ == "paper"
    np.testing.assert_allclose(loaded.decision_function(list(vols)), det.decision_function(list(vols)), rtol=1e-6)
    with pytest.raises(ValueError, match="scoring"):
        _quick(scoring="best").fit(_normal_masks(4, seed=1))
    with pytest.raises(ValueError, match="scoring"):
        GNSMDetector(scoring="auto", n_steps=2).fit(np.zeros((20, 2), dtype=np.int64))


def test_training_scores_are_out_of_fold_for_the_gmm_head(tmp_path):
    """From 10 cases on, decision_scores_ come from heads fitted without each case's fold, so the threshold
    is not set by the head's own (optimistic) in-sample scores."""
    masks = _normal_masks(12, seed=1)
    det = _quick(n_steps=10).fit(masks)
    in_sample = det.decision_function(masks)  # the head scoring its own training cases
    np.testing.assert_allclose(det.in_sample_scores_, in_sample)
    det.save(tmp_path / "m")
    np.testing.assert_array_equal(SegmentationQC.load(tmp_path / "m").in_sample_scores_, det.in_sample_scores_)
    assert not np.allclose(det.decision_scores_, in_sample)
    assert det.decision_scores_.mean() > in_sample.mean()
    small = _quick(n_steps=10).fit(masks[:6])  # below 10 cases: in-sample
    np.testing.assert_allclose(small.decision_scores_, small.decision_function(masks[:6]))


def test_map_mean_case_score(fitted, tmp_path):
    """``case_score="map_mean"``: the case score is the anomaly map's mean; the training scores that set
    ``threshold_`` equal those the fitted detector gives its training cases; no head; save / load keeps it."""
    import copy
    det = copy.deepcopy(fitted)
    train = _normal_masks(48, seed=1)
    det.refit_scoring(train, case_score="map_mean")
    assert det.head_ is None and det.case_score == "map_mean"
    np.testing.assert_allclose(det.decision_scores_, [m.mean() for m in det.anomaly_maps(train)], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(det.threshold_, np.percentile(det.decision_scores_, 90.0))
    bad = np.stack([_corrupt(m)[0] for m in _normal_masks(6, seed=5)])
    res = det.predict_maps(np.concatenate([_normal_masks(6, seed=9), bad]))
    np.testing.assert_allclose(res.pred_score, [a.mean() for a in res.anomaly_map], rtol=1e-5, atol=1e-6)
    assert res.pred_score[6:].min() > res.pred_score[:6].max()
    det.save(tmp_path / "mm")
    loaded = SegmentationQC.load(tmp_path / "mm", device="cpu")
    assert loaded.head_ is None and loaded.case_score == "map_mean"
    np.testing.assert_allclose(loaded.decision_function(bad), res.pred_score[6:], rtol=1e-5)
    det.refit_scoring(train, case_score="head")
    assert det.head_ is not None
    np.testing.assert_allclose(det.decision_function(bad), fitted.decision_function(bad), rtol=1e-6)
    with pytest.raises(ValueError, match="case_score: expected"):
        _quick(case_score="max").fit(_normal_masks(4, seed=1))


def test_map_mean_case_score_with_the_hgad_pixel_head():
    """With the per-position HGAD map (not linear in the channels) the training map means come from each
    case's sampled voxels: exact here, where every voxel of every case is in the sample."""
    masks = _normal_masks(8, seed=1)
    det = _quick(n_steps=5, case_score="map_mean", pixel_head="hgad",
                 pixel_head_options={"stage1_epochs": 1, "stage2_epochs": 1, "max_samples": 500})
    det.fit(masks)
    np.testing.assert_allclose(det.decision_scores_, [m.mean() for m in det.anomaly_maps(masks)], rtol=1e-4,
                               atol=1e-4)
