"""Hierarchical Gaussian-mixture prior and HGAD losses against direct re-implementations."""
import math

import numpy as np
import pytest
import torch

from gnsm.flows import HierarchicalGaussianPrior, hgad_losses, init_class_centres


def _logsumexp(a):
    m = max(a)
    return m + math.log(sum(math.exp(v - m) for v in a))


def _gauss_log(z, c):
    return -0.5 * float(np.sum((z - c) ** 2)) - 0.5 * len(z) * math.log(2 * math.pi)


def _direct_losses(prior, z, log_det, labels, eps):
    """The per-sample HGAD losses (see ``hgad_losses``) written with Python loops in float64."""
    mu = prior.mu.detach().double().numpy()
    phi = prior.phi.detach().double().numpy()
    delta = prior.delta.detach().double().numpy()
    phi_in = prior.phi_intra.detach().double().numpy()
    C, K = prior.n_classes, prior.n_intra_centers
    log_pi = phi - _logsumexp(list(phi))
    rows = []
    for zn, ld, y in zip(z.double().numpy(), log_det.double().numpy(), labels.numpy()):
        D = len(zn)
        sq = [float(np.sum((zn - mu[k]) ** 2)) for k in range(C)]
        nll = -(_logsumexp([log_pi[k] + _gauss_log(zn, mu[k]) for k in range(C)]) + ld) / D
        post = np.array([math.exp(log_pi[k] - 0.5 * sq[k]) for k in range(C)])
        post /= post.sum()
        ytil = np.full(C, eps / C)
        ytil[y] += 1 - eps
        mi = float(np.sum(ytil * (np.log(post) - log_pi)))
        p = np.exp(-0.5 * np.array(sq) - _logsumexp(list(-0.5 * np.array(sq))))
        ent = float(-np.sum(p * np.log(p)))
        centres = [mu[y]] + [mu[y] + delta[y, k] for k in range(K - 1)]
        w = np.exp(phi_in[y] - _logsumexp(list(phi_in[y])))
        dens = sum(w[k] * math.exp(_gauss_log(zn, centres[k])) for k in range(K))
        u = (math.log(dens) + ld) / D
        rows.append((nll, mi, ent, -u, math.log1p(math.exp(-u))))
    return np.array(rows).mean(axis=0)


@pytest.mark.parametrize("n_classes,dim", [(3, 2), (5, 2), (4, 8)])
def test_losses_match_direct_formulas(n_classes, dim):
    torch.manual_seed(0)
    prior = HierarchicalGaussianPrior(dim, n_classes, n_intra_centers=3, radius=1.5, seed=1)
    with torch.no_grad():
        prior.phi.copy_(torch.randn(n_classes))
        prior.phi_intra.copy_(torch.randn(n_classes, 3))
        prior.delta.mul_(0.5)
    z = torch.randn(7, dim)
    log_det = torch.randn(7)
    labels = torch.randint(0, n_classes, (7,))
    w = dict(lambda1=1.0, lambda2=100.0, entropy_weight=1.0, intra_weight=1.0, label_smoothing=0.02)
    s1 = hgad_losses(prior, z, log_det, labels, stage=1, **w)
    s2 = hgad_losses(prior, z, log_det, labels, stage=2, **w)
    nll, mi, ent, in_nll, in_sat = _direct_losses(prior, z, log_det, labels, 0.02)
    for got, want in [(s2["nll"], nll), (s2["mi"], mi), (s2["entropy"], ent), (s2["intra_nll"], in_nll),
                      (s2["intra_sat"], in_sat)]:
        assert got.item() == pytest.approx(want, rel=1e-4, abs=1e-5)
    assert s1["total"].item() == pytest.approx(nll - 100 * mi + ent, rel=1e-4, abs=1e-4)
    assert s2["total"].item() == pytest.approx(nll - 100 * mi + ent + in_nll + in_sat, rel=1e-4, abs=1e-4)
    assert "intra_nll" not in s1


def test_log_prob_matches_direct_mixture():
    prior = HierarchicalGaussianPrior(3, n_classes=4, n_intra_centers=2, radius=2.0, seed=2)
    with torch.no_grad():
        prior.phi.copy_(torch.tensor([0.3, -1.0, 0.5, 0.0]))
        prior.phi_intra.copy_(torch.randn(4, 2))
    z = torch.randn(5, 3, dtype=torch.float64)
    full = prior.double().log_prob(z, "full")
    inter = prior.log_prob(z, "inter")
    mu, delta = prior.mu.detach().numpy(), prior.delta.detach().numpy()
    pi = torch.softmax(prior.phi, 0).detach().numpy()
    w = torch.softmax(prior.phi_intra, 1).detach().numpy()
    for n, zn in enumerate(z.numpy()):
        dens_full = sum(pi[y] * w[y, k] * math.exp(_gauss_log(zn, mu[y] + (delta[y, k - 1] if k else 0)))
                        for y in range(4) for k in range(2))
        dens_inter = sum(pi[y] * math.exp(_gauss_log(zn, mu[y])) for y in range(4))
        assert full[n].item() == pytest.approx(math.log(dens_full), rel=1e-10)
        assert inter[n].item() == pytest.approx(math.log(dens_inter), rel=1e-10)


def test_detached_terms():
    prior = HierarchicalGaussianPrior(4, n_classes=3, n_intra_centers=3, seed=0)
    z = torch.randn(16, 4)
    labels = torch.arange(16) % 3
    # MI alone: pi is detached, so phi gets no gradient; the centres do.
    out = hgad_losses(prior, z, torch.zeros(16), labels, lambda1=0.0, entropy_weight=0.0)
    out["total"].backward()
    assert prior.phi.grad is None or prior.phi.grad.abs().max() == 0
    assert prior.mu.grad.abs().max() > 0
    # Intra-class terms alone: mu_y is detached, so only the deltas and intra weights learn.
    prior.zero_grad(set_to_none=True)
    out = hgad_losses(prior, z, torch.zeros(16), labels, stage=2, lambda1=0.0, lambda2=0.0, entropy_weight=0.0)
    out["total"].backward()
    assert prior.mu.grad is None or prior.mu.grad.abs().max() == 0
    assert prior.delta.grad.abs().max() > 0 and prior.phi_intra.grad.abs().max() > 0


@pytest.mark.parametrize("n_classes,dim", [(3, 8), (8, 8), (9, 5), (20, 3), (50, 2), (4, 1), (1, 6)])
def test_centre_init_any_classes_and_dims(n_classes, dim):
    mu = init_class_centres(n_classes, dim, generator=torch.Generator().manual_seed(0))
    assert mu.shape == (n_classes, dim)
    assert torch.isfinite(mu).all()
    if n_classes == 1:
        assert torch.equal(mu, torch.zeros(1, dim))
        return
    assert (mu.norm(dim=1) > 1.0).all()  # non-zero
    assert torch.pdist(mu).min() > 0.05  # distinct
    if n_classes <= dim:
        gram = mu @ mu.T
        assert torch.allclose(gram - torch.diag(torch.diag(gram)), torch.zeros_like(gram), atol=1e-4)


def test_centre_init_errors():
    with pytest.raises(ValueError, match="n_classes"):
        init_class_centres(0, 3)
    with pytest.raises(ValueError, match="n_intra_centers"):
        HierarchicalGaussianPrior(3, 2, n_intra_centers=0)
    with pytest.raises(ValueError, match="stage"):
        hgad_losses(HierarchicalGaussianPrior(2), torch.zeros(1, 2), torch.zeros(1), torch.zeros(1, dtype=torch.long),
                    stage=3)
