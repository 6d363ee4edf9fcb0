"""GNSMDetector(eps_max=...): a one-hot clip rising with the noise level, in training and in scoring."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from gnsm import ops
from gnsm.core import FieldLayout
from gnsm.datasets import load_dataset
from gnsm.detectors.tabular import GNSMDetector
from gnsm.evaluation import split_inliers

SMALL = dict(width=32, depth=1, n_steps=20, n_temperatures=6, n_score_temperatures=3, n_noise_copies=2)


@pytest.fixture(scope="module")
def cars():
    ds = load_dataset("cars")
    split = split_inliers(ds.y, 42)
    return ds.X.iloc[split.train], ds.X.iloc[split.test]


@pytest.fixture(scope="module")
def rising(cars):
    return GNSMDetector(eps_max=0.3, random_state=0, **SMALL).fit(cars[0])


@pytest.mark.parametrize("bad", [0.001, 1.0, 1.5, -0.2])
def test_eps_max_out_of_range_is_named(cars, bad):
    with pytest.raises(ValueError, match="eps_max"):
        GNSMDetector(eps=0.01, eps_max=bad, **SMALL).fit(cars[0])


def test_levels_geometric_noisiest_first():
    det = GNSMDetector(eps=0.01, eps_max=0.3, n_temperatures=5)
    levels = det._eps_levels()
    assert levels[0] == pytest.approx(0.3) and levels[-1] == pytest.approx(0.01)
    ratios = np.diff(np.log(levels))
    assert np.allclose(ratios, ratios[0]) and ratios[0] < 0
    assert GNSMDetector(n_temperatures=5)._eps_levels() is None


def test_training_gets_the_levels(cars, monkeypatch):
    import gnsm.training as training
    seen = {}
    real = training.Trainer.__init__

    def spy(self, model, schedule, config, *args, **kwargs):
        seen["eps_levels"] = config.eps_levels
        real(self, model, schedule, config, *args, **kwargs)
    monkeypatch.setattr(training.Trainer, "__init__", spy)
    det = GNSMDetector(eps_max=0.3, random_state=0, **{**SMALL, "n_steps": 2}).fit(cars[0])
    assert seen["eps_levels"] == pytest.approx(det._eps_levels())


def test_scoring_relaxes_each_level_with_its_clip(rising, cars):
    codes, num = rising._encode(cars[1].iloc[:64])
    levels = rising._eps_levels()
    gen = rising._noise_generator()
    state = gen.get_state()
    taus = rising._schedule().taus()
    for level in (0, 4, len(levels) - 1):
        gen.set_state(state)
        y, *_ = rising._noised(codes, num, level, gen)
        gen.set_state(state)
        ref, _ = ops.relax_from_labels(codes, rising.field_sizes_, taus[level].expand(len(codes)).contiguous(),
                                       eps=levels[level], generator=gen)
        assert torch.equal(y[:, rising.n_numerical_:], ref)
    # A batch of mixed levels (training: the Trainer's path): every row is relaxed with its own level's clip.
    from gnsm.training import TrainConfig, Trainer
    trainer = Trainer(rising.model_, rising._schedule(), TrainConfig(steps=1, eps_levels=levels),
                      rising.field_sizes_, rising.n_numerical_)
    mixed = torch.arange(len(codes)) % len(levels)
    logits = trainer._level_logits(codes, mixed)
    layout = FieldLayout.from_sizes(rising.field_sizes_)
    for r in (0, 1, len(levels) - 1, len(codes) - 1):
        assert torch.equal(logits[r], layout.one_hot_logits(codes[r:r + 1], levels[int(mixed[r])])[0])
    gen.set_state(state)
    y_mixed, _ = ops.relax_from_logits(logits, rising.field_sizes_, taus[mixed], generator=gen)
    gen.set_state(state)
    ref_mixed, _ = ops.relax_from_logits(layout.one_hot_logits(codes, torch.tensor(levels)[mixed]),
                                         rising.field_sizes_, taus[mixed], generator=gen)
    assert torch.equal(y_mixed, ref_mixed)
    # The clip matters: the same network scored with one clip at every level gives other features.
    flat = copy.copy(rising)
    flat.eps_max = None
    assert not np.allclose(flat._features(codes, num), rising._features(codes, num))


def test_round_trip_keeps_the_levels(rising, cars, tmp_path):
    before = rising.decision_function(cars[1])
    rising.save(tmp_path / "m")
    again = GNSMDetector.load(tmp_path / "m")
    assert again.eps_max == pytest.approx(0.3)
    assert np.array_equal(before, again.decision_function(cars[1]))
