"""The closed-form clean-label posterior behind a denoiser's output (gnsm.core.posterior), against direct
formulas: the ExpConcrete density, the mixture of equation (1), and Monte-Carlo calibration."""
from __future__ import annotations

import math

import pytest
import torch

from gnsm import ops
from gnsm.core.posterior import class_posterior, denoiser_mean, likelihood_posterior
from gnsm.ops import reference as ref


def _sample(K: int, B: int, tau: float, eps: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels (B, 6) and their noisy log-space samples y (B, K, 6)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, K, (B, 6), generator=gen)
    g = -torch.log(-torch.log(torch.rand(B, K, 6, generator=gen, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)))
    return labels, ref.relax_from_labels(labels[:, None], [K], tau, g, eps=eps)


def _hypothesis_logits(K: int, eps: float) -> torch.Tensor:
    """a^(c) for every class c: (K, K), row c = 0 at c and log eps elsewhere."""
    return torch.full((K, K), math.log(eps), dtype=torch.float64).fill_diagonal_(0.0)


@pytest.mark.parametrize("K, tau, eps", [(3, 2.0, 0.01), (12, 20.0, 0.01), (12, 7.0, 0.3), (15, 2.0, 1e-5)])
def test_likelihood_posterior_is_the_exp_concrete_density(K, tau, eps):
    _, y = _sample(K, 4, tau, eps, seed=1)
    A = _hypothesis_logits(K, eps)
    # log density of y under a^(c) (terms equal for every c dropped): sum_j a_j - K logsumexp(a - tau y)
    yk = y.permute(0, 2, 1)[..., None, :]  # (B, 6, 1, K)
    log_p = A.sum(1) - K * torch.logsumexp(A - tau * yk, dim=-1)  # (B, 6, K)
    want = torch.softmax(log_p, dim=-1).permute(0, 2, 1)
    torch.testing.assert_close(likelihood_posterior(y, tau, eps), want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("K, tau, eps", [(3, 2.0, 0.01), (12, 20.0, 0.01), (12, 7.0, 0.3)])
def test_denoiser_mean_is_the_mixture_of_equation_1(K, tau, eps):
    _, y = _sample(K, 3, tau, eps, seed=2)
    p = torch.distributions.Dirichlet(torch.ones(K, dtype=torch.float64)).sample((3, 6)).permute(0, 2, 1)
    A = _hypothesis_logits(K, eps)
    yk = y.permute(0, 2, 1)[..., None, :]
    v = torch.softmax(A - tau * yk, dim=-1)  # (B, 6, c, j)
    want = (p.permute(0, 2, 1)[..., None] * v).sum(2).permute(0, 2, 1)
    got = denoiser_mean(p, y, tau, eps)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got.sum(1), torch.ones(3, 6, dtype=torch.float64))


@pytest.mark.parametrize("K, eps", [(2, 0.01), (12, 0.01), (12, 0.3), (15, 1e-3)])
def test_class_posterior_inverts_the_denoiser_mean(K, eps):
    torch.manual_seed(3)
    B = 4
    tau = torch.tensor([2.0, 5.0, 12.0, 20.0], dtype=torch.float64)
    _, y = _sample(K, B, 1.0, eps, seed=3)
    y = torch.log_softmax(y * torch.tensor([1.0, 3.0, 0.5, 2.0]).view(-1, 1, 1), dim=1)  # various peakedness
    p = torch.distributions.Dirichlet(torch.full((K,), 0.3, dtype=torch.float64)).sample((B, 6)).permute(0, 2, 1)
    logits = denoiser_mean(p, y, tau, eps).log().float()  # as a network would give it: float32 logits + a shift
    got = class_posterior(logits + 3.0, y.float(), tau, eps)
    torch.testing.assert_close(got, p, rtol=0, atol=2e-4)


def test_class_posterior_of_a_likelihood_only_denoiser_is_the_likelihood_posterior():
    K, tau, eps = 12, 20.0, 0.01
    _, y = _sample(K, 8, tau, eps, seed=4)
    lik = likelihood_posterior(y, tau, eps)
    out = denoiser_mean(lik, y, tau, eps).log()
    torch.testing.assert_close(class_posterior(out, y, tau, eps), lik, rtol=0, atol=1e-9)


@pytest.mark.parametrize("eps", [0.01, 0.3])
def test_likelihood_posterior_is_calibrated_on_the_fused_sampler(eps):
    # Labels uniform, y from the package's sampler: a correct posterior has E[p(true)] = E[sum_c p_c^2];
    # a wrong likelihood exponent (K - 1 instead of K) breaks it.
    K, tau = 8, 5.0
    labels = torch.randint(0, K, (100_000, 1), generator=torch.Generator().manual_seed(5))
    y, _ = ops.relax_from_labels(labels, K, tau, eps=eps, generator=torch.Generator().manual_seed(6))
    p = likelihood_posterior(y, tau, eps)
    p_true = p.gather(1, labels[:, None]).mean()
    assert abs(float(p_true - (p ** 2).sum(1).mean())) < 0.0025  # standard error about 0.001
    Z = eps + (1 - eps) * torch.softmax(-tau * y.double(), dim=1)
    wrong = torch.softmax(-(K - 1) * Z.log(), dim=1)
    assert abs(float(wrong.gather(1, labels[:, None]).mean() - (wrong ** 2).sum(1).mean())) > 0.004


@pytest.mark.parametrize("kwargs, match", [
    ({"eps": 0.0}, "eps"), ({"eps": 1.0}, "eps"), ({"tau": -1.0}, "tau"), ({"tau": torch.ones(3)}, "temperatures"),
    ({"tau": torch.ones(2, 2)}, "tau"),
])
def test_bad_arguments_are_named(kwargs, match):
    y = torch.log_softmax(torch.randn(2, 4, 3), dim=1)
    args = {"tau": 2.0, "eps": 0.01, **kwargs}
    with pytest.raises(ValueError, match=match):
        likelihood_posterior(y, args["tau"], args["eps"])
    with pytest.raises(ValueError, match="shape"):
        class_posterior(torch.zeros(2, 5, 3), y, 2.0, 0.01)
