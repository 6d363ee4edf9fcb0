"""The class-posterior readout of benchmarks/eval_seg_real_posterior.py on a tiny image-conditioned QC model."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from eval_seg_real_posterior import posterior_maps  # noqa: E402

from gnsm import ops  # noqa: E402
from gnsm.core.posterior import denoiser_mean, likelihood_posterior  # noqa: E402
from gnsm.detectors import SegmentationQC  # noqa: E402


class _LikelihoodOnly(torch.nn.Module):
    """A denoiser that ignores the context: its output is the mixture for the likelihood posterior."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, y, log_tau, cond=None):
        tau = log_tau.exp()
        return denoiser_mean(likelihood_posterior(y, tau, self.eps), y, tau, self.eps).log().float()


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 4, (6, 16, 16))
    images = rng.random((6, 3, 16, 16)).astype(np.float32)
    det = SegmentationQC(num_classes=4, channels=(4, 8), cond_channels=3, coord_channels=True, n_steps=3,
                         batch_size=2, patch_size=(16, 16), device="cpu").fit(list(masks), cond=list(images))
    return det, masks, images


def test_maps_have_the_mask_shape_and_are_finite(fitted):
    det, masks, images = fitted
    m = posterior_maps(det, masks[:3], images[:3], copies=1, batch=2)
    assert m.shape == (3, 16, 16) and np.isfinite(m).all() and (m >= 0).all()


def test_a_context_blind_denoiser_gives_the_likelihood_posterior(fitted):
    # Same generator seed: the readout of a denoiser that ignores the context is -log p(label | y) under
    # the noisy sample's own likelihood, averaged the same way.
    det, masks, images = fitted
    model = det.model_
    det.model_ = _LikelihoodOnly(float(det.eps))
    try:
        got = posterior_maps(det, masks[:3], images[:3], copies=1, batch=2)
    finally:
        det.model_ = model
    gen = torch.Generator().manual_seed(0)
    taus = det._schedule().taus()
    want = np.zeros((3, 16, 16))
    for b0 in (0, 2):
        lab = torch.from_numpy(masks[b0:min(b0 + 2, 3)].astype(np.int64))
        for level in det._score_indices():
            tau = taus[level].expand(lab.shape[0]).contiguous()
            y, _ = ops.relax_from_labels(lab, 4, tau, eps=float(det.eps), generator=gen)
            lik = likelihood_posterior(y, tau, float(det.eps))
            want[b0:b0 + 2] -= lik.gather(1, lab[:, None]).log()[:, 0].numpy()
    want /= len(det._score_indices())
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert got.mean() < math.log(4)  # the noisy label's own evidence favours it
