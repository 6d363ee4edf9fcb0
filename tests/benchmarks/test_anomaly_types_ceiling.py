"""The Bayes-optimal denoiser behind benchmarks/anomaly_types_ceiling.py: the generator's likelihood is normalized,
the oracle's output is a distribution per field, and no perturbation of it lowers the denoising loss."""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import anomaly_types_ceiling as ceiling  # noqa: E402
from bench_anomaly_types import Generator  # noqa: E402

from gnsm import ops  # noqa: E402
from gnsm.core import FieldLayout  # noqa: E402
from gnsm.detectors import GNSMDetector  # noqa: E402


@pytest.fixture(scope="module")
def fitted():
    gen = Generator(n_fields=3, n_numerical=1, n_rare_fields=1, seed=3)
    train = gen.normal(600, np.random.default_rng(4))
    det = GNSMDetector(n_steps=2, fit_score_rows=64, random_state=0).fit(train)
    return gen, train, det


def test_field_probs_follow_the_encoder(fitted):
    gen, _, det = fitted
    probs = ceiling.field_probs(gen, det.encoder_)
    assert [P.shape[1] for P in probs] == list(det.field_sizes_)
    for P in probs:
        np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-12)


def test_exact_likelihood_sums_to_one_over_all_categorical_records(fitted):
    gen, _, det = fitted
    sizes = det.field_sizes_
    codes = torch.tensor(list(itertools.product(*[range(k) for k in sizes])))
    # Integrate the numerical column out on a fine grid (scaled units).
    grid = torch.linspace(-12, 12, 2001, dtype=torch.float64)
    step = float(grid[1] - grid[0])
    total = 0.0
    for x in grid[::10]:  # coarse loop over x, fine enough for a unit-variance-scale mixture
        nll = ceiling.exact_nll(gen, det, codes, torch.full((len(codes), 1), float(x)))
        total += np.exp(-nll).sum() * step * 10
    assert total == pytest.approx(1.0, abs=2e-3)


def test_oracle_output_is_a_distribution_per_field(fitted):
    gen, train, det = fitted
    oracle = ceiling.OracleDenoiser(gen, det)
    codes, num = det._encode(train.iloc[:256])
    y, _, tau, _, _ = det._noised(codes, num, 5, torch.Generator().manual_seed(0))
    out = oracle(y, tau.log())
    layout = FieldLayout.from_sizes(det.field_sizes_)
    for part in layout.split(out[:, det.n_numerical_:]):
        torch.testing.assert_close(part.exp().sum(dim=1), torch.ones(len(part)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("level", [0, 10, 19])
def test_no_perturbation_of_the_oracle_lowers_its_expected_loss(fitted, level):
    gen, _, det = fitted
    X = gen.normal(4096, np.random.default_rng(5))
    codes, num = det._encode(X)
    y, state, tau, _, _ = det._noised(codes, num, level, torch.Generator().manual_seed(level))
    D = det.n_numerical_
    out = ceiling.OracleDenoiser(gen, det)(y, tau.log())[:, D:].contiguous()

    def loss(l: torch.Tensor) -> float:
        return float(ops.score_matching_loss(l, state, det.field_sizes_, tau, kind="kl", reduction="mean"))

    best = loss(out)
    g = torch.Generator().manual_seed(1)
    for scale in (0.05, 0.3):
        assert loss(out + scale * torch.randn(out.shape, generator=g)) > best
    # A uniform class prior in place of the generator's (each field read from its own noisy value) does worse too.
    blind = ceiling.OracleDenoiser(gen, det)
    blind.logP = [torch.zeros_like(P) for P in blind.logP]
    assert loss(blind(y, tau.log())[:, D:].contiguous()) > best


@pytest.mark.parametrize("eps", [0.01, 0.2])
def test_class_posteriors_are_calibrated(eps):
    """For the true posterior, E[p(true class | y)] = E[sum_k p_k^2] (both are the chance of a match): a wrong
    noise likelihood or cluster posterior breaks it. A clip of 0.2 makes many draws ambiguous."""
    gen = Generator(n_fields=4, n_numerical=1, n_rare_fields=0, seed=6)
    det = GNSMDetector(n_steps=2, fit_score_rows=64, eps=eps, random_state=0).fit(gen.normal(600, np.random.default_rng(7)))
    codes, num = det._encode(gen.normal(20_000, np.random.default_rng(8)))
    y, _, tau, _, _ = det._noised(codes, num, 10, torch.Generator().manual_seed(9))
    _, posteriors = ceiling.OracleDenoiser(gen, det).solve(y, tau.log())
    for j, pk in enumerate(posteriors):
        hit = pk.gather(1, codes[:, j:j + 1]).mean()
        match = (pk ** 2).sum(dim=1).mean()
        assert float(hit) == pytest.approx(float(match), abs=0.01), j
