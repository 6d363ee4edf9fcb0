"""A one-hot clip per schedule level (``TrainConfig.eps_levels``, ``SegmentationQC(eps_max=)``)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gnsm import ops
from gnsm.core import Schedule
from gnsm.training import TrainConfig, Trainer


class _Net(torch.nn.Module):
    def __init__(self, k):
        super().__init__()
        self.conv = torch.nn.Conv2d(k, k, 1)

    def forward(self, y, log_tau, cond=None):
        return self.conv(y)


def _trainer(eps_levels=None, n=4, eps=0.01):
    cfg = TrainConfig(steps=1, batch_size=4, eps=eps, eps_levels=eps_levels, device="cpu", progress=False)
    return Trainer(_Net(5), Schedule(n=n), cfg, 5)


def test_level_logits_are_log_clipped_one_hot():
    tr = _trainer((0.3, 0.1, 0.03, 0.01))
    labels = torch.tensor([[[0, 4]], [[2, 2]]])
    a = tr._level_logits(labels, torch.tensor([0, 3]))
    assert a.shape == (2, 5, 1, 2)
    assert a[0, 0, 0, 0] == 0 and torch.allclose(a[0, 1:, 0, 0], torch.full((4,), math.log(0.3)))
    assert a[1, 2, 0, 1] == 0 and torch.allclose(a[1, 0, 0, 1], torch.tensor(math.log(0.01)))


def test_constant_levels_equal_the_single_clip():
    """With every level at eps the per-level path (relax_from_logits) gives the loss of the eps path."""
    labels = torch.randint(0, 5, (4, 6, 6), generator=torch.Generator().manual_seed(0))
    levels = torch.tensor([0, 1, 2, 3])
    torch.manual_seed(0)
    a = _trainer(None)
    torch.manual_seed(0)
    b = _trainer((0.01,) * 4)
    b.model.load_state_dict(a.model.state_dict())
    la = a._loss(a.model, labels, None, levels, shard=0, step=0)
    lb = b._loss(b.model, labels, None, levels, shard=0, step=0)
    assert torch.allclose(la, lb, rtol=1e-5, atol=1e-6)
    c = _trainer((0.5, 0.3, 0.1, 0.01))
    c.model.load_state_dict(a.model.state_dict())
    assert not torch.allclose(c._loss(c.model, labels, None, levels, shard=0, step=0), la)


def test_bad_levels_are_named():
    with pytest.raises(ValueError, match="eps_levels: expected values in"):
        TrainConfig(eps_levels=(0.0, 0.1))
    with pytest.raises(ValueError, match="one clip per schedule level \\(4\\), got 2"):
        _trainer((0.1, 0.01))
    with pytest.raises(ValueError, match="needs ops_backend='fused'"):
        Trainer(_Net(5), Schedule(n=2), TrainConfig(eps_levels=(0.1, 0.01), ops_backend="reference", device="cpu"), 5)


def test_segmentation_qc_eps_max():
    from gnsm.detectors import SegmentationQC
    rng = np.random.default_rng(0)
    X = rng.integers(0, 3, (4, 8, 8))
    with pytest.raises(ValueError, match="eps_max"):
        SegmentationQC(eps_max=0.001).fit(X)
    det = SegmentationQC(num_classes=3, eps_max=0.3, n_temperatures=5, n_steps=2, batch_size=2, channels=(4,),
                         device="cpu").fit(X)
    levels = det._eps_levels()
    assert levels[0] == pytest.approx(0.3) and levels[-1] == pytest.approx(0.01) and len(levels) == 5
    assert np.all(np.diff(levels) < 0)
    assert np.isfinite(det.decision_function(X)).all()
    assert SegmentationQC(eps_max=None)._eps_levels() is None
