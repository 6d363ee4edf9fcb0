"""DensityHead.out_of_fold_scores: out-of-fold training scores that calibrate a threshold on new rows."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import KFold

from gnsm.detectors.heads import DensityHead


def _flag_rate(head: DensityHead, train_scores: np.ndarray, new: np.ndarray, q: float = 0.9) -> float:
    return float((head.score(new) > np.quantile(train_scores, q)).mean())


@pytest.mark.parametrize("kind", ["gmm", "kde"])
def test_out_of_fold_threshold_flags_new_normal_rows_near_the_contamination(kind):
    """Few rows, many features: an in-sample threshold flags almost every new normal row; the out-of-fold
    one flags about the 10% it was set for (averaged over seeds)."""
    rng = np.random.default_rng(0)
    in_rates, oof_rates = [], []
    for seed in range(4):
        F, new = rng.normal(size=(30, 20)), rng.normal(size=(400, 20))
        head = DensityHead(kind, max_components=4, seed=seed)
        in_sample = head.fit(F)
        in_rates.append(_flag_rate(head, in_sample, new))
        oof_rates.append(_flag_rate(head, head.out_of_fold_scores(F), new))
    assert np.mean(in_rates) > 0.8
    assert 0.02 < np.mean(oof_rates) < 0.25


def test_out_of_fold_scores_are_refits_on_the_other_folds():
    rng = np.random.default_rng(1)
    F = rng.normal(size=(24, 3))
    head = DensityHead("gmm", max_components=2, seed=5)
    head.fit(F)
    oof = head.out_of_fold_scores(F)
    expected = np.empty(24)
    for tr, te in KFold(n_splits=10, shuffle=True, random_state=5).split(F):
        part = DensityHead("gmm", max_components=2, seed=5)
        part.fit(F[tr])
        expected[te] = part.score(F[te])
    np.testing.assert_allclose(oof, expected)


def test_heads_without_a_refit_keep_their_own_scores():
    rng = np.random.default_rng(2)
    F = rng.normal(size=(20, 4))
    for head, rows in ((DensityHead("knn", n_neighbors=3), F),  # k-NN already leaves each row out
                       (DensityHead("loss"), F),  # nothing fitted
                       (DensityHead("gmm", max_components=1), F[:8])):  # too few rows to refit
        own = head.fit(rows)
        np.testing.assert_allclose(head.out_of_fold_scores(rows), own)
