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


class _Masks(torch.utils.data.Dataset):
    def __init__(self, masks):
        self.masks = masks

    def __len__(self):
        return len(self.masks)

    def __getitem__(self, i):
        return self.masks[i]


def test_out_of_range_volume_labels_are_named_with_per_level_clips():
    """Volume batches are not range-checked up front, so the per-level one-hot path checks them (the
    tabular path skips it: TabularData is checked when training starts)."""
    masks = torch.zeros(4, 6, 6, dtype=torch.long)
    masks[2, 3, 3] = 5  # K = 5
    with pytest.raises(ValueError, match="codes: values must lie in"):
        _trainer((0.3, 0.1, 0.03, 0.01)).fit(_Masks(masks))
    labels = torch.tensor([[[0, 5]]])
    with pytest.raises(ValueError, match="codes: values must lie in"):
        _trainer((0.3, 0.1, 0.03, 0.01))._level_logits(labels, torch.tensor([0]))


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


def test_labels_and_one_hot_logits_relax_alike():
    """Scoring relaxes labels with relax_from_labels at the level's clip; training with per-record clips goes
    through relax_from_logits. Both give the same sample and loss for the same clip and noise."""
    from gnsm.core import FieldLayout
    labels = torch.randint(0, 5, (3, 4, 4), generator=torch.Generator().manual_seed(1))
    tau = torch.full((3,), 7.0)
    y1, s1 = ops.relax_from_labels(labels, 5, tau, eps=0.2, generator=torch.Generator().manual_seed(5))
    a = FieldLayout.from_sizes(5).one_hot_logits(labels, 0.2)
    y2, s2 = ops.relax_from_logits(a, 5, tau, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(y1, y2, atol=1e-5)
    out = torch.randn(3, 5, 4, 4)
    assert torch.allclose(ops.score_matching_loss(out, s1, 5, tau), ops.score_matching_loss(out, s2, 5, tau))


def test_one_hot_logits_per_record_clip():
    from gnsm.core import FieldLayout
    layout = FieldLayout.from_sizes([2, 3])
    codes = torch.tensor([[[0], [2]], [[1], [0]]])
    eps = torch.tensor([0.5, 0.01])
    out = layout.one_hot_logits(codes, eps)
    for b in range(2):
        assert torch.allclose(out[b], layout.one_hot_logits(codes[b:b + 1], float(eps[b]))[0])
    with pytest.raises(ValueError, match="one clip per record"):
        layout.one_hot_logits(codes, torch.tensor([0.5, 0.1, 0.1]))
    with pytest.raises(ValueError, match="0 < eps <= 1 for every record"):
        layout.one_hot_logits(codes, torch.tensor([0.5, 0.0]))
