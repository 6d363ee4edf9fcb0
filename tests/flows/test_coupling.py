"""CouplingFlow: exact log-determinant, exact inverse, conditioning, argument checks."""
import pytest
import torch
from torch.autograd.functional import jacobian

from gnsm.flows import AffineCouplingBlock, CouplingFlow, random_orthogonal


def _randomize(module: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> None:
    """Move every parameter off its (identity-like) init so the tests exercise real maps."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


@pytest.mark.parametrize("dim,cond_dim", [(1, 0), (2, 0), (5, 0), (4, 3), (1, 2)])
def test_log_det_matches_brute_force_jacobian(dim, cond_dim):
    flow = CouplingFlow(dim, n_blocks=3, cond_dim=cond_dim, hidden_dim=16, n_hidden_layers=2, clamp=1.5).double()
    _randomize(flow)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, dim, generator=gen, dtype=torch.float64)
    cond = torch.randn(6, cond_dim, generator=gen, dtype=torch.float64) if cond_dim else None
    _, log_det = flow(x, cond)
    for i in range(x.shape[0]):
        c = None if cond is None else cond[i:i + 1]
        J = jacobian(lambda v: flow(v[None], c)[0][0], x[i])
        expected = torch.linalg.slogdet(J).logabsdet
        assert torch.allclose(log_det[i], expected, atol=1e-6), (i, log_det[i].item(), expected.item())


def test_inverse_round_trip_float32():
    # Weights of scale 0.05 give latents of the size a trained flow produces (|z| ~ 10).
    torch.manual_seed(0)
    flow = CouplingFlow(16, n_blocks=6, cond_dim=4, hidden_dim=32)
    _randomize(flow, scale=0.05)
    x = 3 * torch.randn(128, 16)
    cond = torch.randn(128, 4)
    with torch.no_grad():
        z, _ = flow(x, cond)
        back = flow.inverse(z, cond)
        assert (back - x).abs().max().item() < 1e-4
        assert (flow(back, cond)[0] - z).abs().max().item() < 1e-4


def test_inverse_exact_in_float64_for_strongly_nonlinear_flow():
    flow = CouplingFlow(7, n_blocks=5, cond_dim=2, hidden_dim=16).double()
    _randomize(flow, scale=0.3)
    x = torch.randn(64, 7, dtype=torch.float64)
    cond = torch.randn(64, 2, dtype=torch.float64)
    with torch.no_grad():
        back = flow.inverse(flow(x, cond)[0], cond)
    assert (back - x).abs().max().item() < 1e-8


def test_fresh_flow_is_a_rotation():
    flow = CouplingFlow(6, n_blocks=4)
    x = torch.randn(10, 6)
    z, log_det = flow(x)
    assert torch.allclose(log_det, torch.zeros(10), atol=1e-6)
    assert torch.allclose(z.norm(dim=1), x.norm(dim=1), atol=1e-5)


def test_soft_clamp_bounds_log_scale():
    block = AffineCouplingBlock(4, hidden_dim=8, clamp=0.7)
    _randomize(block, scale=50.0)
    with torch.no_grad():
        block.log_scale.zero_()
        _, log_det = block(torch.randn(32, 4))
    assert log_det.abs().max().item() <= 2 * 0.7 + 1e-5  # two transformed features, each |s| < alpha


def test_mixing_is_orthogonal_and_seeded():
    q = random_orthogonal(7, torch.Generator().manual_seed(3))
    assert torch.allclose(q @ q.T, torch.eye(7, dtype=q.dtype), atol=1e-12)
    a = CouplingFlow(5, n_blocks=2, seed=4)
    b = CouplingFlow(5, n_blocks=2, seed=4)
    assert torch.equal(a.blocks[1].mixing, b.blocks[1].mixing)
    assert "blocks.0.mixing" in a.state_dict()  # a buffer: saved with the model


def test_condition_checks():
    flow = CouplingFlow(3, n_blocks=1, cond_dim=2)
    with pytest.raises(ValueError, match="cond"):
        flow(torch.randn(4, 3))
    with pytest.raises(ValueError, match="cond"):
        flow(torch.randn(4, 3), torch.randn(5, 2))
    with pytest.raises(ValueError, match="cond"):
        CouplingFlow(3, n_blocks=1)(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="x"):
        flow(torch.randn(4, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="n_blocks"):
        CouplingFlow(3, n_blocks=0)


def test_condition_changes_the_map():
    flow = CouplingFlow(4, n_blocks=2, cond_dim=2, hidden_dim=8)
    _randomize(flow)
    x = torch.randn(3, 4)
    z1, _ = flow(x, torch.zeros(3, 2))
    z2, _ = flow(x, torch.ones(3, 2))
    assert not torch.allclose(z1, z2)
