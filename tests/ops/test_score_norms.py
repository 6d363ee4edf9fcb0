"""Tests of ``score_norms`` (csrc/ops/score_norms.cpp): per-record and per-(field, position) L2 norms of
the network's score s = tau (K softmax(l) - 1), the anomaly features of DESIGN 1.6: opcheck, agreement
with the reference, layouts, edge cases and storage dtypes.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from ops_testing import MANY_FIELDS, as_list, assert_close, make_tau, ops, ref

LAYOUTS = [
    pytest.param(5, (3, 5, 6, 7), id="mask2d"),
    pytest.param(4, (2, 4, 3, 4, 5), id="volume3d"),
    pytest.param(MANY_FIELDS, (37, sum(MANY_FIELDS)), id="tabular"),
    pytest.param([3, 1, 6], (2, 10, 4, 5), id="fields2d"),
]


def _reference(out, tau, field_sizes):
    per_record, per_position = ref.score_norms(out.double(), torch.as_tensor(tau).double(), as_list(field_sizes))
    return per_record, per_position.squeeze(1) if isinstance(field_sizes, int) else per_position


class TestScoreNorms:
    def test_opcheck(self, device):
        tau = make_tau(3, device)
        for dt in (torch.float32, torch.float64, torch.bfloat16):
            out = torch.randn(3, 6, 2, 5, dtype=dt, device=device)
            torch.library.opcheck(torch.ops.gnsm.score_norms.default, (out, [1, 2, 3], tau))
        torch.library.opcheck(torch.ops.gnsm.score_norms.default, (torch.randn(4, 7, device=device), [7], tau[:1].expand(4)))

    @pytest.mark.parametrize("field_sizes,shape", LAYOUTS)
    def test_matches_reference(self, device, field_sizes, shape):
        out = torch.randn(shape, device=device) * 3
        tau = make_tau(shape[0], device, 0.05, 50.0)
        per_record, per_position = ops.score_norms(out, field_sizes, tau)
        j = [] if isinstance(field_sizes, int) else [len(field_sizes)]
        assert per_record.shape == (shape[0],) and per_position.shape == (shape[0], *j, *shape[2:])
        assert per_record.dtype == torch.float32 and per_position.dtype == torch.float32
        exp_record, exp_position = _reference(out, tau, field_sizes)
        assert_close(per_record, exp_record, msg="per record")
        assert_close(per_position, exp_position, msg="per position")

    def test_per_record_is_the_norm_over_positions(self, device):
        out = torch.randn(5, 9, 4, 3, device=device)
        per_record, per_position = ops.score_norms(out, [4, 5], 2.0)
        assert_close(per_record, per_position.double().square().flatten(1).sum(1).sqrt())

    def test_known_values(self, device):
        # A uniform softmax has score 0; a one-hot-like softmax (one class at +60) has
        # s = tau (K - 1, -1, ..., -1), whose norm is tau sqrt((K - 1)^2 + K - 1) = tau sqrt(K (K - 1)).
        k, tau = 5, 3.0
        uniform = torch.full((2, k, 3), 7.0, device=device)
        per_record, per_position = ops.score_norms(uniform, k, tau)
        assert per_record.abs().max() < 1e-5 and per_position.abs().max() < 1e-5
        peaked = torch.zeros(2, k, 3, device=device)
        peaked[:, 2] = 60.0
        per_record, per_position = ops.score_norms(peaked, k, tau)
        expected = tau * (k * (k - 1)) ** 0.5
        assert_close(per_position, torch.full((2, 3), expected))
        assert_close(per_record, torch.full((2,), expected * 3 ** 0.5))

    def test_linear_in_tau(self, device):
        out = torch.randn(3, 7, 5, device=device)
        r1, p1 = ops.score_norms(out, [3, 4], 1.0)
        r2, p2 = ops.score_norms(out, [3, 4], torch.tensor([1.0, 10.0, 0.5], device=device))
        assert torch.equal(r2[0], r1[0]) and torch.equal(p2[0], p1[0])
        assert_close(r2[1:], r1[1:] * torch.tensor([10.0, 0.5], device=device))
        assert_close(p2[1:], p1[1:] * torch.tensor([10.0, 0.5], device=device).reshape(2, 1, 1))

    def test_single_class_fields_are_exactly_zero(self, device):
        out = torch.randn(4, 1, 5, device=device) * 100
        per_record, per_position = ops.score_norms(out, 1, 1e3)
        assert torch.equal(per_record, torch.zeros(4, device=device))
        assert torch.equal(per_position, torch.zeros(4, 5, device=device))
        out = torch.randn(4, 5, device=device)
        _, per_position = ops.score_norms(out, [1, 3, 1], 2.0)
        assert torch.equal(per_position[:, 0], torch.zeros(4, device=device))
        assert torch.equal(per_position[:, 2], torch.zeros(4, device=device))
        assert torch.isfinite(per_position).all()

    def test_zero_size(self, device):
        per_record, per_position = ops.score_norms(torch.zeros(0, 4, 5, 5, device=device), 4, 1.0)
        assert per_record.shape == (0,) and per_position.shape == (0, 5, 5)
        per_record, per_position = ops.score_norms(torch.zeros(3, 4, 0, device=device), [1, 3], 1.0)
        assert per_position.shape == (3, 2, 0)
        assert torch.equal(per_record, torch.zeros(3, device=device))  # an empty record has norm 0
        per_record, per_position = ops.score_norms(torch.zeros(0, 9, device=device), [2, 3, 4], 1.0)
        assert per_record.shape == (0,) and per_position.shape == (0, 3)

    def test_non_contiguous_outputs(self, device):
        base = torch.randn(4, 8, 6, 5, device=device)
        for view in (base.transpose(2, 3), base[:, :, ::2], base.permute(0, 1, 3, 2)[..., 1:], base[::2]):
            assert not view.is_contiguous()
            got = ops.score_norms(view, [3, 5], 0.7)
            want = ops.score_norms(view.contiguous(), [3, 5], 0.7)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        tab = torch.randn(sum(MANY_FIELDS), 11, device=device).t()
        got = ops.score_norms(tab, MANY_FIELDS, 0.7)
        assert torch.equal(got[1], ops.score_norms(tab.contiguous(), MANY_FIELDS, 0.7)[1])

    @pytest.mark.parametrize("tau", [1e-2, 1.0, 1e3])
    @pytest.mark.parametrize("scale", [1.0, 1e4])
    def test_temperature_range_and_extreme_outputs(self, device, tau, scale):
        out = torch.randn(6, sum(MANY_FIELDS), 2, device=device) * scale
        per_record, per_position = ops.score_norms(out, MANY_FIELDS, tau)
        exp_record, exp_position = _reference(out, tau, MANY_FIELDS)
        assert_close(per_record, exp_record)
        assert_close(per_position, exp_position)

    @pytest.mark.parametrize("tau", [1e-2, 1.0, 1e3])
    def test_storage_dtypes(self, device, dtype, tau):
        out = (torch.randn(3, 9, 4, device=device) * 2).to(dtype)
        per_record, per_position = ops.score_norms(out, [4, 5], tau)
        want = torch.float64 if dtype == torch.float64 else torch.float32
        assert per_record.dtype == want and per_position.dtype == want
        exp_record, exp_position = _reference(out, tau, [4, 5])  # fp32 math on the stored values
        assert_close(per_record, exp_record)
        assert_close(per_position, exp_position)

    def test_max_finite_bfloat16_outputs(self, device):
        big = torch.finfo(torch.bfloat16).max
        out = torch.zeros(2, 4, 3, dtype=torch.bfloat16, device=device)
        out[:, 1] = big  # softmax one-hot on class 1: |s| = tau sqrt(K (K - 1))
        out[:, 2:, 0] = -big
        for tau in (1e-2, 1.0, 1e3):
            per_record, per_position = ops.score_norms(out, 4, tau)
            assert_close(per_position, torch.full((2, 3), tau * 12 ** 0.5), msg=f"tau={tau}")
            assert torch.isfinite(per_record).all()
        # All classes at +-max: uniform softmax, score 0.
        per_record, per_position = ops.score_norms(torch.full((2, 4, 3), big, dtype=torch.bfloat16, device=device), 4, 5.0)
        assert per_position.abs().max() < 1e-4

    @pytest.mark.parametrize("offset", [1024.0, 65536.0])
    def test_invariant_to_a_per_field_shift(self, device, offset):
        # l is a multiple of 1/8 in [-8, 8): l + offset is exact in fp32, and softmax(l + c) = softmax(l).
        out = torch.randint(-64, 64, (8, 6, 4), device=device).float() / 8
        tau = make_tau(8, device)
        r0, p0 = ops.score_norms(out, [2, 4], tau)
        r1, p1 = ops.score_norms(out + offset, [2, 4], tau)
        assert_close(r1, r0, msg="per record")
        assert_close(p1, p0, msg="per position")

    def test_large_k(self, device):
        out = torch.randn(2, 1024, 3, device=device) * 3
        per_record, per_position = ops.score_norms(out, 1024, 0.5)
        exp_record, exp_position = _reference(out, 0.5, 1024)
        assert_close(per_record, exp_record)
        assert_close(per_position, exp_position)

    def test_gradients_are_not_silently_dropped(self, device):
        # The outputs of an op that needs grad either carry a correct gradient or say they cannot:
        # an output that requires grad but whose backward leaves the input's .grad empty (the
        # autograd-not-implemented fallback) silently breaks any model trained through the norms.
        out = torch.randn(3, 6, 4, device=device, requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            per_record, per_position = ops.score_norms(out, [2, 4], 1.5)
            if not per_record.requires_grad:
                return
            (per_record.sum() + per_position.sum()).backward()
        assert out.grad is not None, "score_norms outputs require grad but backward produced no gradient"
        out_ref = out.detach().double().requires_grad_()
        exp_record, exp_position = ref.score_norms(out_ref, 1.5, [2, 4])
        (exp_record.sum() + exp_position.sum()).backward()
        assert_close(out.grad, out_ref.grad)
