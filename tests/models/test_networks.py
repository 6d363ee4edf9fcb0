"""Shape, conditioning, gradient and round-trip tests of the score networks (gnsm/models)."""
import math

import pytest
import torch

from gnsm.models import FTTransformer, LogTauEmbedding, TabularResMLP, UNet, build_model

FIELDS = [3, 5, 2]


def _randomize_outputs(model):
    # Output layers start at zero (uniform logits); give them weights so outputs depend on the input.
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.1)
    return model


def _tabular(cls, D):
    torch.manual_seed(0)
    kwargs = dict(width=32, depth=2) if cls is TabularResMLP else dict(d_token=16, n_layers=1, n_heads=2)
    return _randomize_outputs(cls(FIELDS, num_numerical=D, **kwargs))


@pytest.mark.parametrize("cls", [TabularResMLP, FTTransformer])
@pytest.mark.parametrize("D", [0, 4])
def test_tabular_shapes_conditioning_and_grad(cls, D):
    model = _tabular(cls, D)
    assert model.num_numerical == D and list(model.field_sizes) == FIELDS
    y = torch.randn(6, D + sum(FIELDS), requires_grad=True)
    lt = torch.full((6,), math.log(3.0))
    out = model(y, lt)
    assert out.shape == y.shape and torch.isfinite(out).all()
    out2 = model(y, torch.full((6,), math.log(15.0)))
    assert not torch.allclose(out, out2), "log tau must change the output"
    out.square().sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad and p.numel())


def test_ft_transformer_uses_numerical_features():
    model = _tabular(FTTransformer, 3)
    y = torch.randn(4, 3 + sum(FIELDS))
    lt = torch.zeros(4)
    y2 = y.clone()
    y2[:, 0] += 1.0
    assert not torch.allclose(model(y, lt), model(y2, lt))


def test_untrained_outputs_are_uniform_logits():
    model = TabularResMLP(FIELDS, 2, width=16, depth=1)
    out = model(torch.randn(3, 2 + sum(FIELDS)), torch.zeros(3))
    assert torch.count_nonzero(out) == 0


@pytest.mark.parametrize("dims,size", [(2, (9, 13)), (3, (5, 7, 6))])
def test_unet_odd_sizes_cond_and_grad(dims, size):
    torch.manual_seed(0)
    model = _randomize_outputs(UNet(4, spatial_dims=dims, cond_channels=1, channels=(8, 16, 16), groups=4,
                                    emb_dim=16))
    y = torch.randn(2, 4, *size, requires_grad=True)
    cond = torch.randn(2, 1, *size)
    out = model(y, torch.zeros(2), cond)
    assert out.shape == y.shape
    assert not torch.allclose(out, model(y, torch.ones(2), cond))
    assert not torch.allclose(out, model(y, torch.zeros(2), cond + 1))
    out.sum().backward()
    assert y.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="cond"):
        model(y, torch.zeros(2))


def test_unet_bad_input():
    model = UNet(3, spatial_dims=2, channels=(8,), groups=4)
    with pytest.raises(ValueError, match="y: expected"):
        model(torch.randn(1, 4, 8, 8), torch.zeros(1))
    with pytest.raises(ValueError, match="spatial_dims"):
        UNet(3, spatial_dims=1)


@pytest.mark.parametrize("model", [
    TabularResMLP([2, 3], 1, width=16, depth=1),
    FTTransformer([2, 3], 2, d_token=8, n_layers=1, n_heads=2),
    UNet(5, spatial_dims=3, cond_channels=2, channels=(8, 16), groups=4),
])
def test_build_model_round_trip(model):
    import json

    cfg = json.loads(json.dumps(model.config()))
    clone = build_model(cfg)
    assert clone.config() == model.config()
    clone.load_state_dict(model.state_dict())  # same parameter names and shapes


def test_build_model_errors():
    with pytest.raises(ValueError, match="unknown model"):
        build_model({"name": "nope"})
    with pytest.raises(ValueError, match="name"):
        build_model({})


def test_log_tau_embedding_separates_schedule_levels():
    emb = LogTauEmbedding(32)
    taus = torch.exp(torch.linspace(math.log(20), math.log(2), 20))
    e = emb(taus.log())
    d = torch.cdist(e, e) + torch.eye(20)
    assert d.min() > 0


@pytest.mark.parametrize("dims, size", [(2, (1, 1)), (3, (1, 1, 1)), (2, (1, 2))])
def test_unet_trains_on_a_single_voxel_batch_of_one(dims, size):
    # one channel per group at a 1-voxel level with batch 1: F.group_norm refuses it in training
    torch.manual_seed(0)
    net = UNet(3, spatial_dims=dims, channels=(8, 8), groups=8, emb_dim=8).train()
    y = torch.randn(1, 3, *size)
    out = net(y, torch.zeros(1))
    assert out.shape == y.shape and torch.isfinite(out).all()
    out.square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_unet_group_norm_matches_torch_and_keeps_the_state_dict():
    torch.manual_seed(0)
    net = UNet(3, spatial_dims=2, channels=(8, 16), groups=4, emb_dim=8)
    norm = net.out_norm
    ref = torch.nn.GroupNorm(norm.num_groups, norm.num_channels)
    ref.load_state_dict(norm.state_dict())
    x = torch.randn(2, norm.num_channels, 5, 3)
    torch.testing.assert_close(norm(x), ref(x))
    assert set(net.state_dict()) == set(build_model(net.config()).state_dict())


@pytest.mark.parametrize("cls", [TabularResMLP, FTTransformer])
@pytest.mark.parametrize("sizes, error", [([2.5, 3], TypeError), ("12", TypeError), ([True, 2], TypeError),
                                          ([], ValueError), ([0, 3], ValueError), ([70000], ValueError)])
def test_tabular_networks_reject_bad_field_sizes(cls, sizes, error):
    with pytest.raises(error, match="field_sizes"):
        cls(sizes, 0)


def test_networks_accept_numpy_and_tensor_field_sizes():
    import numpy as np

    assert TabularResMLP(np.array([2, 3]), 0, width=8, depth=1, emb_dim=8).field_sizes == [2, 3]
    assert FTTransformer(torch.tensor([2, 3]), 0, d_token=8, n_layers=1, n_heads=2).field_sizes == [2, 3]
    assert UNet(np.int64(4), spatial_dims=2, channels=(8,), groups=4, emb_dim=8).field_sizes == 4
    assert UNet(torch.tensor(4), spatial_dims=2, channels=(8,), groups=4, emb_dim=8).out_channels == 4


def test_tabular_mlp_shared_temperature_matches_per_record():
    """A batch at one temperature embeds it once (FiLM broadcasts); the output equals the per-record path."""
    import torch
    from gnsm.models import TabularResMLP
    torch.manual_seed(0)
    net = TabularResMLP([3, 4], 2, width=16, depth=2).eval()
    for p in net.parameters():  # non-zero FiLM and output layers, so the conditioning matters
        torch.nn.init.normal_(p, std=0.2)
    y = torch.randn(5, 9)
    lt = torch.full((5,), 1.3)
    shared = net(y, lt)
    per_record = torch.cat([net(y[i:i + 1], lt[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(shared, per_record, rtol=1e-5, atol=1e-6)
    mixed = lt.clone()
    mixed[0] = 0.9  # different temperatures: the per-record path
    torch.testing.assert_close(net(y, mixed)[1:], shared[1:], rtol=1e-5, atol=1e-6)
