"""Tests of ``gumbel_noise`` and ``target_score`` (csrc/ops/target_score.cpp): the closed-form target
t = tau (K softmax(-g) - 1) against the reference, against the same target written from the sample
and the class logits (DESIGN 1.3), and against an oracle written by others: the autograd gradient of
``torch.distributions.ExpRelaxedCategorical.log_prob`` with respect to the sample.
"""
from __future__ import annotations

import pytest
import torch
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

from ops_testing import (MANY_FIELDS, as_list, assert_close, field_dim_labels, make_labels, make_tau, noise, ops,
                         ref)

LAYOUTS = [
    pytest.param(5, (3, 5, 6, 7), id="mask2d"),
    pytest.param(4, (2, 4, 3, 4, 5), id="volume3d"),
    pytest.param(MANY_FIELDS, (37, sum(MANY_FIELDS)), id="tabular"),
    pytest.param([3, 1, 6], (2, 10, 4, 5), id="fields2d"),
]


def _state(device):
    return ops.rng_state(torch.empty(0, device=device))


class TestGumbelNoise:
    def test_opcheck(self, device):
        torch.library.opcheck(torch.ops.gnsm.gumbel_noise.default, (_state(device), [3, 6, 2, 5]))

    def test_deterministic_function_of_the_state(self, device):
        state = _state(device)
        g = ops.gumbel_noise(state, (4, 7, 5))
        assert g.dtype == torch.float32 and g.shape == (4, 7, 5) and g.device.type == device.type
        assert torch.equal(g, ops.gumbel_noise(state.clone(), (4, 7, 5)))
        assert not torch.equal(g, ops.gumbel_noise(_state(device), (4, 7, 5)))
        # A different offset is a different stream.
        shifted = state.clone()
        shifted[1] += 1
        assert not torch.equal(g, ops.gumbel_noise(shifted, (4, 7, 5)))

    def test_range_of_the_23_bit_uniforms(self, device):
        g = ops.gumbel_noise(_state(device), (64, 9, 100)).double()
        # u in [2^-24, 1 - 2^-24]: g = -log(-log(u)) is bounded; no inf from log(0).
        lo = -torch.log(-torch.log(torch.tensor(2.0 ** -24, dtype=torch.float64)))
        hi = -torch.log(-torch.log1p(torch.tensor(-(2.0 ** -24), dtype=torch.float64)))
        assert torch.isfinite(g).all()
        assert g.min() >= lo - 1e-4 and g.max() <= hi + 1e-3

    def test_non_contiguous_state(self, device):
        states = torch.stack([_state(device), _state(device)], dim=1)  # (2, 2): column j is state j
        col = states[:, 1]
        assert not col.is_contiguous()
        assert torch.equal(ops.gumbel_noise(col, (3, 5, 2)), ops.gumbel_noise(col.contiguous(), (3, 5, 2)))

    def test_zero_size(self, device):
        for shape in ((0, 4), (0, 3, 5), (2, 3, 0), (2, 0, 4)):
            assert ops.gumbel_noise(_state(device), shape).shape == shape

    def test_is_what_relax_used(self, device):
        # y from logits 0 at tau 1 is g - logsumexp(g): the relax op drew exactly gumbel_noise(state).
        y, state = ops.relax_from_logits(torch.zeros(3, 6, 4, device=device), 6, 1.0)
        g = noise(state, y.shape)
        assert_close(y, g - g.logsumexp(1, keepdim=True))


class TestTargetScore:
    def test_opcheck(self, device):
        tau = make_tau(3, device)
        torch.library.opcheck(torch.ops.gnsm.target_score.default, (_state(device), [3, 6, 2, 5], [1, 2, 3], tau))
        torch.library.opcheck(torch.ops.gnsm.target_score.default, (_state(device), [3, 6], [6], tau.double()))

    @pytest.mark.parametrize("field_sizes,shape", LAYOUTS)
    def test_matches_reference(self, device, field_sizes, shape):
        state, tau = _state(device), make_tau(shape[0], device, 0.05, 50.0)
        t = ops.target_score(state, shape, field_sizes, tau)
        assert t.shape == shape and t.dtype == torch.float32
        assert_close(t, ref.target_score(noise(state, shape), tau.double(), as_list(field_sizes)))

    @pytest.mark.parametrize("field_sizes,shape", LAYOUTS)
    def test_identity_with_the_closed_form_from_y_and_a(self, device, field_sizes, shape):
        # DESIGN 1.3: -tau + tau K softmax(a - tau y) (which needs y and a) equals tau (K softmax(-g) - 1)
        # (which needs only g), for hard labels and for soft logits.
        sizes, batch, spatial = as_list(field_sizes), shape[0], shape[2:]
        tau = make_tau(batch, device, 0.05, 50.0)
        labels = make_labels(batch, field_sizes, spatial, device)
        y, state = ops.relax_from_labels(labels, field_sizes, tau, dtype=torch.float64)
        a = ref.logits_from_labels(field_dim_labels(labels, field_sizes), sizes, dtype=torch.float64)
        t = ops.target_score(state, shape, field_sizes, tau)
        assert_close(t, ref.target_score_from_sample(y, a, tau.double(), sizes))
        soft = torch.randn(shape, dtype=torch.float64, device=device) * 2
        y, state = ops.relax_from_logits(soft, field_sizes, tau)
        assert_close(ops.target_score(state, shape, field_sizes, tau), ref.target_score_from_sample(y, soft, tau.double(), sizes))

    @pytest.mark.parametrize("tau", [0.05, 0.5, 2.0, 20.0])
    @pytest.mark.parametrize("source", ["labels", "logits"])
    def test_matches_exp_relaxed_categorical_log_prob_gradient(self, device, tau, source):
        # The oracle: torch.distributions' ExpRelaxedCategorical (Maddison et al.'s ExpConcrete) log-density
        #   f(y) = log (K-1)! + (K-1) log tau + sum_k (a_k - tau y_k) - K logsumexp_k (a_k - tau y_k),
        # differentiated by autograd w.r.t. all K coordinates of y. Its gradient
        #   df/dy_k = -tau + tau K softmax(a - tau y)_k
        # is the target of DESIGN 1.3 with no projection needed: f is invariant to y -> y + c 1
        # (sum_k changes by -K tau c, K logsumexp by -K tau c), so the gradient is the same whichever
        # representative of the sample along the 1 direction is used, and it is the ambient gradient
        # that both DESIGN 1.3 and the score network's s = tau (K softmax(l) - 1) are defined as (both
        # sum to 0 over the field). Normalizing the logits (torch.distributions does, gnsm does not) only
        # shifts a by a constant, which changes neither. Single field, float64 sample.
        k, batch = 6, 50
        if source == "labels":
            labels = torch.randint(0, k, (batch,), device=device)
            y, state = ops.relax_from_labels(labels, k, tau, dtype=torch.float64)
            a = ref.logits_from_labels(labels.unsqueeze(1), [k], dtype=torch.float64)
        else:
            a = torch.randn(batch, k, dtype=torch.float64, device=device) * 2
            y, state = ops.relax_from_logits(a, k, tau)
        assert y.dtype == torch.float64
        sample = y.detach().clone().requires_grad_()
        dist = ExpRelaxedCategorical(torch.tensor(tau, dtype=torch.float64, device=device), logits=a)
        (oracle,) = torch.autograd.grad(dist.log_prob(sample).sum(), sample)
        t = ops.target_score(state, (batch, k), k, tau)
        assert_close(t, oracle, rtol=1e-5)
        assert oracle.sum(1).abs().max() < 1e-9 * tau * k  # the ambient gradient is tangent to y + c 1

    def test_sums_to_zero_per_field(self, device):
        shape = (8, sum(MANY_FIELDS), 3)
        t = ops.target_score(_state(device), shape, MANY_FIELDS, 3.0).double()
        sums = torch.stack([p.sum(1) for p in t.split(MANY_FIELDS, 1)], 1)
        assert sums.abs().max() < 1e-5 * 3.0 * max(MANY_FIELDS)

    def test_single_class_fields_are_exactly_zero(self, device):
        t = ops.target_score(_state(device), (5, 3, 4), [1, 1, 1], 7.0)
        assert torch.equal(t, torch.zeros_like(t))
        t = ops.target_score(_state(device), (5, 1, 4, 2), 1, 1e3)
        assert torch.equal(t, torch.zeros_like(t))

    @pytest.mark.parametrize("tau", [1e-2, 1.0, 1e3])
    def test_temperature_range(self, device, tau):
        shape = (4, sum(MANY_FIELDS), 2)
        state = _state(device)
        t = ops.target_score(state, shape, MANY_FIELDS, tau)
        assert_close(t, ref.target_score(noise(state, shape), tau, MANY_FIELDS))

    def test_tau_forms_and_per_record(self, device):
        state, shape = _state(device), (3, 4, 5)
        t = ops.target_score(state, shape, 4, 2.0)
        assert torch.equal(t, ops.target_score(state, shape, 4, torch.full((3,), 2.0, device=device)))
        assert torch.equal(t, ops.target_score(state, shape, 4, torch.tensor(2.0, device=device)))
        t_mixed = ops.target_score(state, shape, 4, torch.tensor([2.0, 4.0, 2.0], device=device))
        assert torch.equal(t_mixed[0], t[0]) and torch.equal(t_mixed[2], t[2])
        assert_close(t_mixed[1], 2 * t[1])  # t is linear in tau given g

    def test_zero_size(self, device):
        for shape in ((0, 5), (0, 5, 3, 3), (2, 5, 0)):
            assert ops.target_score(_state(device), shape, [2, 3], 1.0).shape == shape

    def test_large_k(self, device):
        state, shape = _state(device), (2, 1024, 3)
        t = ops.target_score(state, shape, 1024, 0.5)
        assert_close(t, ref.target_score(noise(state, shape), 0.5, [1024]))
