"""Tests of the relax ops (``relax_from_labels``, ``relax_from_logits``; csrc/ops/relax.cpp): opcheck,
agreement with the plain-PyTorch reference given the same Gumbel noise, gradcheck of the soft-input
path, the sampler's distribution (argmax frequencies, a two-sample test against
``torch.distributions.ExpRelaxedCategorical``), edge cases and storage dtypes.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

from ops_testing import (MANY_FIELDS, as_list, assert_close, field_dim_labels, make_labels, make_tau, noise, ops,
                         per_field_logsumexp, ref, relaxed_shape)

# (field_sizes, batch, spatial): one field with 2D and 3D spatial dims, many fields (tabular and spatial).
LAYOUTS = [
    pytest.param(5, 3, (6, 7), id="mask2d"),
    pytest.param(4, 2, (3, 4, 5), id="volume3d"),
    pytest.param(MANY_FIELDS, 37, (), id="tabular"),
    pytest.param([3, 1, 6], 2, (4, 5), id="fields2d"),
]


class TestRelaxFromLabels:
    @pytest.mark.parametrize("label_dtype,out_dtype", [(torch.uint8, torch.bfloat16), (torch.int64, torch.float32)])
    def test_opcheck(self, device, label_dtype, out_dtype):
        labels = make_labels(2, [3, 5], (3, 4), device, label_dtype)
        state = ops.rng_state(labels)
        torch.library.opcheck(torch.ops.gnsm.relax_from_labels.default,
                              (labels, [3, 5], make_tau(2, device), state, 1e-5, out_dtype))

    @pytest.mark.parametrize("field_sizes,batch,spatial", LAYOUTS)
    def test_matches_reference(self, device, field_sizes, batch, spatial):
        labels = make_labels(batch, field_sizes, spatial, device)
        tau = make_tau(batch, device)
        y, state = ops.relax_from_labels(labels, field_sizes, tau)
        assert y.shape == relaxed_shape(labels, field_sizes) and y.dtype == torch.float32
        g = noise(state, y.shape)
        expected = ref.relax_from_labels(field_dim_labels(labels, field_sizes), as_list(field_sizes), tau.double(), g)
        assert_close(y, expected, rtol=1e-5)

    def test_label_dtypes_agree(self, device):
        labels = make_labels(4, MANY_FIELDS, (), device)
        state = ops.rng_state(labels)
        ys = [ops.relax_from_labels(labels.to(dt), MANY_FIELDS, 0.7, rng_state=state).y
              for dt in (torch.uint8, torch.int16, torch.int32, torch.int64)]
        for y in ys[1:]:
            assert torch.equal(y, ys[0])

    @pytest.mark.parametrize("eps", [1e-3, 0.2])
    def test_eps(self, device, eps):
        labels = make_labels(3, [4, 2], (5,), device)
        y, state = ops.relax_from_labels(labels, [4, 2], 1.5, eps=eps)
        expected = ref.relax_from_labels(labels, [4, 2], 1.5, noise(state, y.shape), eps=eps)
        assert_close(y, expected)

    def test_is_a_log_probability_vector_with_the_noisy_argmax(self, device):
        labels = make_labels(64, [7, 3], (3,), device)
        tau = make_tau(64, device, 0.05, 50.0)
        y, state = ops.relax_from_labels(labels, [7, 3], tau)
        assert per_field_logsumexp(y.double(), [7, 3]).abs().max() < 1e-5
        a_plus_g = ref.logits_from_labels(labels, [7, 3]).double() + noise(state, y.shape)
        for yp, zp in zip(y.split([7, 3], 1), a_plus_g.split([7, 3], 1)):
            assert torch.equal(yp.argmax(1), zp.argmax(1))

    @pytest.mark.parametrize("tau", [1e-2, 0.1, 1.0, 20.0, 1e3])
    def test_temperature_range(self, device, tau):
        labels = make_labels(8, MANY_FIELDS, (), device)
        y, state = ops.relax_from_labels(labels, MANY_FIELDS, tau)
        assert torch.isfinite(y).all()
        expected = ref.relax_from_labels(labels, MANY_FIELDS, tau, noise(state, y.shape))
        assert_close(y, expected)

    def test_single_class_fields_are_exactly_zero(self, device):
        labels = torch.zeros(3, 4, 5, dtype=torch.long, device=device)
        y, _ = ops.relax_from_labels(labels, 1, 0.3)
        assert y.shape == (3, 1, 4, 5) and torch.equal(y, torch.zeros_like(y))
        mixed = make_labels(6, [1, 3, 1], (), device)
        y, _ = ops.relax_from_labels(mixed, [1, 3, 1], 0.3)
        assert torch.equal(y[:, 0], torch.zeros(6, device=device)) and torch.equal(y[:, 4], torch.zeros(6, device=device))
        assert torch.isfinite(y).all()

    def test_zero_size(self, device):
        y, state = ops.relax_from_labels(torch.zeros(0, 5, 6, dtype=torch.long, device=device), 4, 1.0)
        assert y.shape == (0, 4, 5, 6) and state.shape == (2,)
        y, _ = ops.relax_from_labels(torch.zeros(0, 3, dtype=torch.long, device=device), [2, 3, 4], 1.0)
        assert y.shape == (0, 9)
        y, _ = ops.relax_from_labels(torch.zeros(3, 0, 4, dtype=torch.long, device=device), 4, 1.0)
        assert y.shape == (3, 4, 0, 4)
        y, _ = ops.relax_from_labels(torch.zeros(2, 2, 0, dtype=torch.uint8, device=device), [2, 3], torch.ones(2))
        assert y.shape == (2, 5, 0)

    def test_non_contiguous_labels(self, device):
        base = make_labels(4, 6, (7, 5), device)
        state = ops.rng_state(base)
        for labels in (base.transpose(1, 2), base[:, ::2, 1:], base[::2]):
            assert not labels.is_contiguous()
            y, _ = ops.relax_from_labels(labels, 6, 0.9, rng_state=state)
            y_c, _ = ops.relax_from_labels(labels.contiguous(), 6, 0.9, rng_state=state)
            assert torch.equal(y, y_c)
        fields = make_labels(9, MANY_FIELDS, (), device).t().contiguous().t()  # (B, J) with strides (1, B)
        assert not fields.is_contiguous()
        y, _ = ops.relax_from_labels(fields, MANY_FIELDS, 2.0, rng_state=state)
        assert torch.equal(y, ops.relax_from_labels(fields.contiguous(), MANY_FIELDS, 2.0, rng_state=state).y)

    def test_tau_forms_agree(self, device):
        labels = make_labels(5, 3, (4,), device)
        state = ops.rng_state(labels)
        y_float = ops.relax_from_labels(labels, 3, 0.5, rng_state=state).y
        y_vec = ops.relax_from_labels(labels, 3, torch.full((5,), 0.5, device=device), rng_state=state).y
        y_0d = ops.relax_from_labels(labels, 3, torch.tensor(0.5, device=device), rng_state=state).y
        assert torch.equal(y_float, y_vec) and torch.equal(y_float, y_0d)
        # Per-record temperatures really are per record.
        tau = torch.tensor([0.5, 0.5, 2.0, 0.5, 0.5], device=device)
        y_mixed = ops.relax_from_labels(labels, 3, tau, rng_state=state).y
        assert torch.equal(y_mixed[:2], y_float[:2]) and not torch.equal(y_mixed[2], y_float[2])

    @pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16, torch.float64])
    @pytest.mark.parametrize("tau", [1e-2, 1.0, 1e3])
    def test_storage_dtypes(self, device, out_dtype, tau):
        labels = make_labels(4, [3, 64], (5,), device)
        y, state = ops.relax_from_labels(labels, [3, 64], tau, dtype=out_dtype)
        assert y.dtype == out_dtype and torch.isfinite(y).all()
        y32 = ops.relax_from_labels(labels, [3, 64], tau, rng_state=state).y
        # Math is fp32 whatever the storage: the result is the fp32 result rounded once.
        assert_close(y, y32.to(out_dtype).to(torch.float32) if out_dtype != torch.float64 else y32,
                     rtol=1e-6 if out_dtype != torch.float64 else 1e-5)

    def test_large_k(self, device):
        labels = make_labels(2, 1024, (3,), device)
        y, state = ops.relax_from_labels(labels, 1024, 0.05)
        assert torch.isfinite(y).all()
        expected = ref.relax_from_labels(labels.unsqueeze(1), [1024], 0.05, noise(state, y.shape))
        assert_close(y, expected)


class TestRelaxFromLogits:
    def test_opcheck(self, device):
        state = ops.rng_state(torch.empty(1, device=device))
        tau = make_tau(3, device)
        for dt, out in ((torch.float64, torch.float64), (torch.float32, torch.float32), (torch.bfloat16, torch.float32)):
            logits = torch.randn(3, 7, 4, dtype=dt, device=device, requires_grad=dt.is_floating_point)
            torch.library.opcheck(torch.ops.gnsm.relax_from_logits.default, (logits, [2, 5], tau, state, out))

    @pytest.mark.parametrize("field_sizes,batch,spatial", LAYOUTS)
    def test_matches_reference(self, device, field_sizes, batch, spatial):
        c = sum(as_list(field_sizes))
        logits = (torch.randn(batch, c, *spatial) * 3).to(device)
        tau = make_tau(batch, device, 0.05, 50.0)
        y, state = ops.relax_from_logits(logits, field_sizes, tau)
        g = noise(state, y.shape)
        assert_close(y, ref.relax(logits.double(), g, tau.double(), as_list(field_sizes)))
        # Same state, same noise: a hard-label call sees the same g.
        labels = make_labels(batch, field_sizes, spatial, device)
        a = ref.logits_from_labels(field_dim_labels(labels, field_sizes), as_list(field_sizes))
        y_soft = ops.relax_from_logits(a, field_sizes, tau, rng_state=state).y
        y_hard = ops.relax_from_labels(labels, field_sizes, tau, rng_state=state).y
        assert_close(y_soft, y_hard)

    @pytest.mark.parametrize("field_sizes,batch,spatial", LAYOUTS)
    def test_backward_matches_reference(self, device, field_sizes, batch, spatial):
        sizes = as_list(field_sizes)
        logits = torch.randn(batch, sum(sizes), *spatial, device=device)
        w = torch.randn(batch, sum(sizes), *spatial, device=device)
        tau = make_tau(batch, device)
        a = logits.clone().requires_grad_()
        y, state = ops.relax_from_logits(a, field_sizes, tau)
        (y * w).sum().backward()
        a_ref = logits.double().requires_grad_()
        (ref.relax(a_ref, noise(state, y.shape), tau.double(), sizes) * w.double()).sum().backward()
        assert_close(a.grad, a_ref.grad)

    @pytest.mark.parametrize("field_sizes,shape", [(4, (2, 4, 3, 2)), ([2, 1, 3], (3, 6)), ([2, 3], (2, 5, 2, 1, 2))])
    def test_gradcheck(self, device, field_sizes, shape):
        a = torch.randn(*shape, dtype=torch.float64, device=device, requires_grad=True)
        tau = make_tau(shape[0], device).double()
        state = ops.rng_state(a)
        assert torch.autograd.gradcheck(lambda x: ops.relax_from_logits(x, field_sizes, tau, rng_state=state).y, (a,))

    def test_output_dtype(self, device):
        logits = torch.randn(2, 3, 4, device=device)
        assert ops.relax_from_logits(logits, 3, 1.0).y.dtype == torch.float32
        assert ops.relax_from_logits(logits.double(), 3, 1.0).y.dtype == torch.float64
        assert ops.relax_from_logits(logits.bfloat16(), 3, 1.0).y.dtype == torch.bfloat16
        assert ops.relax_from_logits(logits, 3, 1.0, dtype=torch.float16).y.dtype == torch.float16

    def test_non_contiguous_logits(self, device):
        base = torch.randn(5, 8, 6, 3, device=device)
        state = ops.rng_state(base)
        for logits in (base.transpose(2, 3), base[:, :, ::2], base[::2], base.permute(0, 1, 3, 2)[..., 1:]):
            assert not logits.is_contiguous()
            y = ops.relax_from_logits(logits, [3, 5], 0.7, rng_state=state).y
            assert torch.equal(y, ops.relax_from_logits(logits.contiguous(), [3, 5], 0.7, rng_state=state).y)
        tab = torch.randn(sum(MANY_FIELDS), 11, device=device).t()
        y = ops.relax_from_logits(tab, MANY_FIELDS, 0.7, rng_state=state).y
        assert torch.equal(y, ops.relax_from_logits(tab.contiguous(), MANY_FIELDS, 0.7, rng_state=state).y)
        # Gradients flow back into the strided view.
        a = base.clone().requires_grad_()
        ops.relax_from_logits(a.transpose(2, 3), [3, 5], 0.7, rng_state=state).y.square().sum().backward()
        assert a.grad.shape == base.shape and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0

    def test_zero_size(self, device):
        for shape in ((0, 4), (0, 4, 5, 6), (2, 4, 0), (3, 4, 5, 0)):
            a = torch.zeros(shape, device=device, requires_grad=True)
            y, _ = ops.relax_from_logits(a, [1, 3], 1.0)
            assert y.shape == shape
            y.sum().backward()
            assert a.grad.shape == shape

    def test_single_class_fields_are_exactly_zero(self, device):
        a = torch.randn(4, 3, 5, device=device) * 100
        y, _ = ops.relax_from_logits(a, [1, 1, 1], 0.01)
        assert torch.equal(y, torch.zeros_like(y))

    @pytest.mark.parametrize("scale", [1e4, -1e4])
    @pytest.mark.parametrize("tau", [1e-2, 1.0, 1e3])
    def test_extreme_logits(self, device, scale, tau):
        a = torch.randn(16, 6, 3, device=device) * scale
        y, state = ops.relax_from_logits(a, [2, 4], tau)
        assert torch.isfinite(y).all()
        assert_close(y, ref.relax(a.double(), noise(state, y.shape), tau, [2, 4]))

    @pytest.mark.parametrize("tau", [1e-2, 1.0, 1e3])
    def test_max_finite_bfloat16_logits(self, device, tau):
        # A field whose classes all hold the largest finite bf16 (or its negative): shift invariance of
        # the softmax makes y = -log K exactly (the noise is far below the logits' ulp), a finite,
        # representable result that the op must produce without overflowing (a + g) / tau.
        big = torch.finfo(torch.bfloat16).max
        for sign in (1.0, -1.0):
            a = torch.full((2, 4, 3), sign * big, dtype=torch.bfloat16, device=device)
            y = ops.relax_from_logits(a, 4, tau, dtype=torch.float32).y
            assert bool(torch.isfinite(y).all()), f"non-finite y for logits {sign * big:g}, tau={tau}: {y[0, :, 0]}"
            assert_close(y, torch.full_like(y, -math.log(4)), rtol=1e-5)

    @pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
    @pytest.mark.parametrize("tau", [1e-2, 1.0, 1e3])
    def test_reduced_precision_storage(self, device, out_dtype, tau):
        a = torch.log(torch.rand(3, 9, 4, 4, device=device).clamp_min(1e-5))
        y, state = ops.relax_from_logits(a.to(out_dtype), [4, 5], tau)
        assert y.dtype == out_dtype and torch.isfinite(y).all()
        expected = ref.relax(a.to(out_dtype).double(), noise(state, y.shape), tau, [4, 5])
        assert_close(y, expected, rtol=1e-2 if out_dtype == torch.bfloat16 else 2e-3)

    def test_large_k(self, device):
        a = torch.randn(2, 1024, 3, device=device) * 5
        y, state = ops.relax_from_logits(a, 1024, 0.05)
        assert_close(y, ref.relax(a.double(), noise(state, y.shape), 0.05, [1024]))


class TestRelaxedDistribution:
    """The sampler's law: ExpConcrete(a, tau) of Maddison et al., as torch.distributions implements it."""

    def test_argmax_frequencies_match_softmax(self, device):
        # argmax_k y_k = argmax_k (a_k + g_k) ~ Categorical(softmax(a)) at any temperature (Gumbel-max).
        p = torch.tensor([0.05, 0.1, 0.15, 0.3, 0.4], dtype=torch.float64)
        n = 20000
        a = p.log().float().reshape(1, 5, 1).expand(4, 5, n // 4).to(device)
        y, _ = ops.relax_from_logits(a, 5, 3.0)
        counts = torch.bincount(y.argmax(1).flatten().cpu(), minlength=5).numpy()
        assert stats.chisquare(counts, n * p.numpy()).pvalue > 1e-3
        # The test has power: the same counts are rejected against a slightly different law.
        q = np.array([0.06, 0.1, 0.15, 0.3, 0.39])
        assert stats.chisquare(counts, n * q).pvalue < 1e-3

    def test_two_sample_against_exp_relaxed_categorical(self, device):
        probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
        logits, tau, n = probs.log(), 0.5, 4000
        ours = ops.relax_from_logits(logits.expand(n, 4).contiguous().to(device), 4, tau).y.cpu().double().numpy()
        theirs = ExpRelaxedCategorical(torch.tensor(tau), logits=logits).rsample((n,))
        theirs_far = ExpRelaxedCategorical(torch.tensor(2 * tau), logits=logits).rsample((n,))

        def p_values(x, y):
            ps = [stats.ks_2samp(x[:, k], y[:, k]).pvalue for k in range(4)]
            ps.append(stats.ks_2samp(x.max(1), y.max(1)).pvalue)
            table = np.stack([np.bincount(x.argmax(1), minlength=4), np.bincount(y.argmax(1), minlength=4)])
            ps.append(stats.chi2_contingency(table).pvalue)
            return ps

        ps = p_values(ours, theirs.double().numpy())
        assert min(ps) > 1e-3, ps
        # Power check: a sample at twice the temperature is told apart.
        assert min(p_values(ours, theirs_far.double().numpy())[:5]) < 1e-6
