"""The free label-map baselines of the spine evaluation (gnsm.evaluation.segmentation.free_baselines)."""
import numpy as np
import pytest

from gnsm.evaluation.segmentation.free_baselines import (boundary_proximity, calibrated_verdicts,
                                                         label_volume_features, label_volume_zscore, leave_one_out)


def test_boundary_proximity_is_minus_the_distance_to_a_label_change():
    labels = np.zeros((7, 7), np.int64)
    labels[:, 4:] = 1  # boundary between columns 3 and 4
    prox = boundary_proximity(labels)
    np.testing.assert_array_equal(prox[:, 3], 0.0)
    np.testing.assert_array_equal(prox[:, 4], 0.0)
    np.testing.assert_allclose(prox[2, 0], -3.0)
    np.testing.assert_allclose(prox[2, 6], -2.0)
    np.testing.assert_array_equal(boundary_proximity(np.ones((3, 3, 3), np.int64)), 0.0)


def test_label_volume_zscore_flags_a_missing_structure():
    rng = np.random.default_rng(0)
    train = []
    for _ in range(12):
        m = np.zeros((20, 20), np.int64)
        w = int(rng.integers(4, 7))
        m[2:2 + w, 2:8] = 1
        m[10:16, 10:10 + w] = 2
        train.append(m)
    feats = np.stack([label_volume_features(m, 3) for m in train])
    assert feats.shape == (12, 2)
    missing = train[0].copy()
    missing[missing == 2] = 0
    z = label_volume_zscore(feats, np.stack([label_volume_features(train[1], 3), label_volume_features(missing, 3)]))
    assert z[1] > 10 * z[0] and z[1] > 5
    with pytest.raises(ValueError, match="classes"):
        label_volume_features(np.full((2, 2), 3), 3)
    with pytest.raises(ValueError, match="at least 2"):
        label_volume_zscore(feats[:1], feats)
    # a label whose count never varies: z stays finite (spread floored at one voxel)
    const = np.repeat(feats[:1], 5, axis=0)
    assert np.isfinite(label_volume_zscore(const, feats)).all()


def test_leave_one_out_and_calibrated_verdicts():
    train = [np.array([float(v)]) for v in range(10)]
    loo = leave_one_out(train, lambda others, x: float(x[0] - np.mean([o[0] for o in others])))
    assert loo.shape == (10,) and loo[0] < 0 < loo[-1]
    np.testing.assert_allclose(loo[0], 0 - np.mean(range(1, 10)))
    out = calibrated_verdicts(np.arange(10.0), [9.5, 1.0, 9.8, 3.0], contamination=0.1)
    assert out["threshold"] == pytest.approx(8.1)
    assert out["prediction_flagged"] and out["references_flagged"] == 1 and out["prediction_rank"] == 2
    low = calibrated_verdicts(np.arange(10.0), [2.0, 1.0], contamination=0.1)
    assert not low["prediction_flagged"] and low["prediction_rank"] == 1
