"""Tests of the fused score-matching loss and its backward (csrc/ops/score_matching_loss.cpp): opcheck,
float64 gradcheck, agreement of loss and gradient with the reference given the same noise, the
reductions, the optimum l = -g, edge cases and storage dtypes.
"""
from __future__ import annotations

import pytest
import torch

from ops_testing import MANY_FIELDS, as_list, assert_close, make_labels, make_tau, noise, ops, ref

KINDS = ["kl", "mse"]
REDUCTIONS = ["mean", "sum", "none"]
LAYOUTS = [
    pytest.param(5, (3, 5, 6, 7), id="mask2d"),
    pytest.param(4, (2, 4, 3, 4, 5), id="volume3d"),
    pytest.param(MANY_FIELDS, (37, sum(MANY_FIELDS)), id="tabular"),
    pytest.param([3, 1, 6], (2, 10, 4, 5), id="fields2d"),
]


def _state(device):
    return ops.rng_state(torch.empty(0, device=device))


def _loss_and_grad(output, state, field_sizes, tau, kind, reduction, weight=None):
    l = output.detach().clone().requires_grad_()
    loss = ops.score_matching_loss(l, state, field_sizes, tau, kind=kind, reduction=reduction)
    w = torch.ones_like(loss) if weight is None else weight
    (grad,) = torch.autograd.grad(loss, l, w)
    return loss.detach(), grad


def _reference_loss_and_grad(output, g, field_sizes, tau, kind, reduction, weight=None):
    l = output.detach().double().requires_grad_()
    sizes = as_list(field_sizes)
    loss = ref.score_matching_loss(l, g, torch.as_tensor(tau).double(), sizes, kind, reduction)
    if reduction == "none" and isinstance(field_sizes, int):
        loss = loss.squeeze(1)
    w = torch.ones_like(loss) if weight is None else weight.double()
    (grad,) = torch.autograd.grad(loss, l, w)
    return loss.detach(), grad


def _grad_scale(kind, tau, field_sizes, reduction, batch, weight=None):
    """Natural size of the gradient: |p - q| <= 1 for kl, tau^2 K^2 for mse; times the incoming weight."""
    base = 1.0 if kind == "kl" else float(torch.as_tensor(tau).max()) ** 2 * max(as_list(field_sizes)) ** 2
    w = 1.0 if weight is None else float(weight.abs().max())
    return base * w / (batch if reduction == "mean" and batch > 0 else 1)


def _check_against_reference(output, state, field_sizes, tau, kind, reduction, weight=None, rtol=1e-5, grad_rtol=None):
    """Loss and gradient of the op vs the float64 reference fed the same noise (fp32 math on the stored values)."""
    loss, grad = _loss_and_grad(output, state, field_sizes, tau, kind, reduction, weight)
    ref_loss, ref_grad = _reference_loss_and_grad(output.float(), noise(state, output.shape), field_sizes, tau, kind,
                                                  reduction, weight)
    assert_close(loss, ref_loss, rtol=rtol, msg=f"loss ({kind}, {reduction})")
    assert_close(grad, ref_grad, rtol=grad_rtol or rtol, msg=f"grad ({kind}, {reduction})",
                 scale=_grad_scale(kind, tau, field_sizes, reduction, output.shape[0], weight))
    return loss, grad


class TestScoreMatchingLoss:
    @pytest.mark.parametrize("kind", KINDS)
    def test_opcheck(self, device, kind):
        tau, state = make_tau(2, device), _state(device)
        out = torch.randn(2, 6, 3, 2, dtype=torch.float64, device=device, requires_grad=True)
        for reduction in REDUCTIONS:
            torch.library.opcheck(torch.ops.gnsm.score_matching_loss.default, (out, state, [2, 4], tau, kind, reduction))
        out32 = torch.randn(5, 6, device=device, requires_grad=True)
        torch.library.opcheck(torch.ops.gnsm.score_matching_loss.default, (out32, state, [6], tau[:1].expand(5).contiguous(),
                                                                           kind, "mean"))

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_opcheck_backward(self, device, reduction):
        tau, state = make_tau(2, device), _state(device)
        out = torch.randn(2, 6, 3, device=device)
        grad = torch.randn(2, 2, 3, device=device) if reduction == "none" else torch.tensor(1.5, device=device)
        for kind in KINDS:
            torch.library.opcheck(torch.ops.gnsm.score_matching_loss_backward.default,
                                  (grad, out, state, [2, 4], tau, kind, reduction))

    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("field_sizes,shape", [(5, (2, 5, 3, 2)), ([3, 1, 4, 2], (3, 10)), ([2, 3], (2, 5, 2, 1, 2))])
    def test_gradcheck(self, device, kind, reduction, field_sizes, shape):
        out = torch.randn(*shape, dtype=torch.float64, device=device, requires_grad=True)
        tau, state = make_tau(shape[0], device, 0.3, 3.0).double(), _state(device)
        assert torch.autograd.gradcheck(
            lambda l: ops.score_matching_loss(l, state, field_sizes, tau, kind=kind, reduction=reduction), (out,))

    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("field_sizes,shape", LAYOUTS)
    def test_matches_reference(self, device, kind, reduction, field_sizes, shape):
        out = torch.randn(shape, device=device) * 2
        tau, state = make_tau(shape[0], device), _state(device)
        loss, grad = _loss_and_grad(out, state, field_sizes, tau, kind, reduction)
        expected_shape = () if reduction != "none" else (
            (shape[0], *shape[2:]) if isinstance(field_sizes, int) else (shape[0], len(field_sizes), *shape[2:]))
        assert loss.shape == expected_shape and loss.dtype == torch.float32 and grad.dtype == torch.float32
        weight = torch.randn(expected_shape, device=device) if reduction == "none" else None
        _check_against_reference(out, state, field_sizes, tau, kind, reduction, weight)

    @pytest.mark.parametrize("kind", KINDS)
    def test_reductions_are_consistent(self, device, kind):
        out = torch.randn(6, 7, 3, 3, device=device)
        tau, state = make_tau(6, device), _state(device)
        none = ops.score_matching_loss(out, state, [3, 4], tau, kind=kind, reduction="none")
        total = ops.score_matching_loss(out, state, [3, 4], tau, kind=kind, reduction="sum")
        mean = ops.score_matching_loss(out, state, [3, 4], tau, kind=kind, reduction="mean")
        assert none.shape == (6, 2, 3, 3)
        assert_close(total, none.double().sum())
        assert_close(mean, none.double().sum() / 6)
        one = ops.score_matching_loss(out, state, 7, tau, kind=kind, reduction="none")
        assert one.shape == (6, 3, 3)
        assert torch.equal(one, ops.score_matching_loss(out, state, [7], tau, kind=kind, reduction="none").squeeze(1))

    @pytest.mark.parametrize("kind", KINDS)
    def test_zero_at_the_optimum(self, device, kind):
        # l = -g (+ any per-field constant) makes softmax(l) = softmax(-g): loss 0 and gradient 0, and
        # any other output gives a positive loss. Independent of the reference.
        shape, tau = (4, sum(MANY_FIELDS), 3), make_tau(4, device)
        state = _state(device)
        g = ops.gumbel_noise(state, shape)
        loss, grad = _loss_and_grad(-g + 3.0, state, MANY_FIELDS, tau, kind, "none")
        scale = _grad_scale(kind, tau, MANY_FIELDS, "none", 4)
        assert loss.abs().max() < 1e-5 * scale and grad.abs().max() < 1e-5 * scale
        loss, _ = _loss_and_grad(-g + 0.3 * torch.randn_like(g), state, MANY_FIELDS, tau, kind, "none")
        assert (loss > 0).all()

    def test_deterministic_given_the_state(self, device):
        out = torch.randn(3, 5, 4, device=device)
        state = _state(device)
        a = _loss_and_grad(out, state, 5, 2.0, "kl", "none")
        b = _loss_and_grad(out, state.clone(), 5, 2.0, "kl", "none")
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        c = _loss_and_grad(out, _state(device), 5, 2.0, "kl", "none")
        assert not torch.equal(a[0], c[0])

    @pytest.mark.parametrize("kind", KINDS)
    def test_backward_op_matches_autograd(self, device, kind):
        out = torch.randn(3, 6, 4, device=device)
        tau, state = make_tau(3, device), _state(device)
        w = torch.randn(3, 2, 4, device=device)
        _, grad = _loss_and_grad(out, state, [2, 4], tau, kind, "none", w)
        raw = torch.ops.gnsm.score_matching_loss_backward(w, out, state, [2, 4], tau, kind, "none")
        # On the CPU autograd takes the fused loss-with-gradient path and applies w afterwards, so the two
        # agree to rounding, not bit for bit.
        assert_close(raw, grad)
        _, grad = _loss_and_grad(out, state, [2, 4], tau, kind, "mean", torch.tensor(2.5, device=device))
        raw = torch.ops.gnsm.score_matching_loss_backward(torch.tensor(2.5, device=device), out, state, [2, 4], tau,
                                                          kind, "mean")
        assert_close(raw, grad)

    @pytest.mark.parametrize("kind", KINDS)
    def test_single_class_fields_are_exactly_zero(self, device, kind):
        out = torch.randn(4, 1, 5, 3, device=device) * 10
        for reduction in REDUCTIONS:
            loss, grad = _loss_and_grad(out, _state(device), 1, 1e3, kind, reduction)
            assert torch.equal(loss, torch.zeros_like(loss)) and torch.equal(grad, torch.zeros_like(grad))
        # K = 1 fields next to others contribute nothing and get zero gradient.
        out = torch.randn(4, 5, device=device)
        loss, grad = _loss_and_grad(out, _state(device), [1, 3, 1], 2.0, kind, "none")
        assert torch.equal(loss[:, 0], torch.zeros(4, device=device)) and torch.equal(loss[:, 2], torch.zeros(4, device=device))
        assert torch.equal(grad[:, 0], torch.zeros(4, device=device)) and torch.equal(grad[:, 4], torch.zeros(4, device=device))
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_zero_size(self, device, reduction):
        for shape, sizes in (((0, 5, 4, 4), 5), ((0, 9), [2, 3, 4]), ((3, 5, 0), 5), ((2, 5, 4, 0), [2, 3])):
            out = torch.zeros(shape, device=device, requires_grad=True)
            loss = ops.score_matching_loss(out, _state(device), sizes, 1.0, kind="mse", reduction=reduction)
            if reduction == "none":
                j = [] if isinstance(sizes, int) else [len(sizes)]
                assert loss.shape == (shape[0], *j, *shape[2:])
            else:
                # An empty batch has nothing to average: 0, not 0/0.
                assert loss.shape == () and loss.item() == 0.0
            loss.sum().backward()
            assert out.grad.shape == shape

    @pytest.mark.parametrize("kind", KINDS)
    def test_non_contiguous_outputs(self, device, kind):
        base = torch.randn(4, 8, 6, 5, device=device)
        tau, state = make_tau(4, device), _state(device)
        for reduction in ("mean", "none"):
            for view in (base.transpose(2, 3), base[:, :, ::2], base.permute(0, 1, 3, 2)[..., 1:]):
                assert not view.is_contiguous()
                loss, grad = _loss_and_grad(view, state, [3, 5], tau, kind, reduction)
                loss_c, grad_c = _loss_and_grad(view.contiguous(), state, [3, 5], tau, kind, reduction)
                assert torch.equal(loss, loss_c) and torch.equal(grad, grad_c)
        # Non-contiguous incoming gradient for reduction "none".
        w = torch.randn(4, 3, 2, device=device).transpose(1, 2)
        _, grad = _loss_and_grad(base[:, :, :3, 0], state, [3, 5], tau, kind, "none", w)
        _, grad_c = _loss_and_grad(base[:, :, :3, 0], state, [3, 5], tau, kind, "none", w.contiguous())
        assert torch.equal(grad, grad_c)

    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("tau", [1e-2, 1.0, 1e3])
    def test_temperature_range(self, device, kind, tau):
        out = torch.randn(6, sum(MANY_FIELDS), device=device) * 3
        state = _state(device)
        for reduction in ("sum", "none"):
            _check_against_reference(out, state, MANY_FIELDS, tau, kind, reduction)

    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("scale", [1e4, -1e4])
    def test_extreme_outputs(self, device, kind, scale):
        out = torch.randn(5, 6, 3, device=device) * scale
        for tau in (1e-2, 1e3):
            _check_against_reference(out, _state(device), [2, 4], tau, kind, "none")

    @pytest.mark.parametrize("kind", KINDS)
    def test_max_finite_bfloat16_outputs(self, device, kind):
        # Fields whose classes all hold +-max finite bf16: the softmax is uniform, so loss and gradient
        # equal those of l = 0 (shift invariance), finite for every temperature.
        big = torch.finfo(torch.bfloat16).max
        out = torch.full((3, 7, 4), big, dtype=torch.bfloat16, device=device)
        out[:, 3:] = -big
        for tau in (1e-2, 1.0, 1e3):
            state = _state(device)
            for reduction in REDUCTIONS:
                loss, grad = _loss_and_grad(out, state, [3, 4], tau, kind, reduction)
                assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
                loss0, grad0 = _loss_and_grad(torch.zeros_like(out), state, [3, 4], tau, kind, reduction)
                assert_close(loss, loss0, msg=f"loss (tau={tau}, {reduction})")
                assert_close(grad.float(), grad0.float(), rtol=1e-2, msg=f"grad (tau={tau}, {reduction})",
                             scale=_grad_scale(kind, tau, [3, 4], reduction, 3))

    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("offset", [1024.0, 65536.0])
    def test_invariant_to_a_per_field_shift(self, device, kind, offset):
        # softmax(l + c) = softmax(l): a constant added to a field's outputs changes neither loss nor
        # gradient. l is a multiple of 1/8 in [-8, 8), so l + offset is exact in fp32 and an fp32
        # log-softmax that subtracts the field max before anything else loses nothing.
        out = torch.randint(-64, 64, (16, 6, 4), device=device).float() / 8
        state, tau = _state(device), make_tau(16, device)
        loss, grad = _loss_and_grad(out, state, [2, 4], tau, kind, "none")
        loss_s, grad_s = _loss_and_grad(out + offset, state, [2, 4], tau, kind, "none")
        assert_close(loss_s, loss, msg="loss")
        assert_close(grad_s, grad, msg="grad", scale=_grad_scale(kind, tau, [2, 4], "none", 16))

    @pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("tau", [1e-2, 1.0, 20.0, 1e3])
    def test_reduced_precision_outputs(self, device, out_dtype, kind, tau):
        # The true mse gradient is up to ~tau^2 K^2 / 4 in size: above fp16's largest finite value
        # (65504) at tau = 1e3, so fp16 storage of that gradient is checked up to tau = 20 only.
        out = (torch.randn(4, 9, 3, 3, device=device) * 2).to(out_dtype)
        state = _state(device)
        loss, grad = _loss_and_grad(out, state, [4, 5], tau, kind, "none")
        assert loss.dtype == torch.float32 and grad.dtype == out_dtype
        if out_dtype == torch.float16 and kind == "mse" and tau > 20:
            ref_loss, _ = _reference_loss_and_grad(out.float(), noise(state, out.shape), [4, 5], tau, kind, "none")
            assert_close(loss, ref_loss, msg="loss (fp32 math on the stored values)")
            return
        _check_against_reference(out, state, [4, 5], tau, kind, "none",
                                 grad_rtol=1e-2 if out_dtype == torch.bfloat16 else 2e-3)

    @pytest.mark.parametrize("kind", KINDS)
    def test_large_k(self, device, kind):
        out = torch.randn(2, 1024, 3, device=device) * 3
        state = _state(device)
        for reduction in ("mean", "none"):
            _check_against_reference(out, state, 1024, 0.5, kind, reduction)

    def test_float64_output_keeps_float64(self, device):
        out = torch.randn(3, 4, 2, dtype=torch.float64, device=device)
        loss, grad = _loss_and_grad(out, _state(device), 4, 1.0, "kl", "mean")
        assert loss.dtype == torch.float64 and grad.dtype == torch.float64

    def test_loss_of_a_relaxed_sample(self, device):
        # The intended use: the loss regenerates the noise of the relax call from its rng_state.
        labels = make_labels(3, [4, 6], (5,), device)
        tau = make_tau(3, device)
        y, state = ops.relax_from_labels(labels, [4, 6], tau)
        out = torch.randn_like(y)
        loss = ops.score_matching_loss(out, state, [4, 6], tau, kind="mse")
        assert_close(loss, ref.score_matching_loss(out.double(), noise(state, y.shape), tau.double(), [4, 6], "mse"))


class TestScoreMatchingLossWithGrad:
    """The CPU-only fused loss + unit gradient that autograd uses on the CPU."""

    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_matches_forward_and_backward_ops(self, kind, reduction):
        out = torch.randn(3, 6, 5)
        tau, state = make_tau(3, "cpu"), _state("cpu")
        loss, grad = torch.ops.gnsm.score_matching_loss_with_grad(out, state, [2, 4], tau, kind, reduction)
        ref_loss = torch.ops.gnsm.score_matching_loss(out, state, [2, 4], tau, kind, reduction)
        unit = torch.ones_like(ref_loss) if reduction == "none" else torch.tensor(1.0)
        ref_grad = torch.ops.gnsm.score_matching_loss_backward(unit, out, state, [2, 4], tau, kind, reduction)
        assert_close(loss, ref_loss)
        assert_close(grad, ref_grad)

    def test_opcheck(self):
        out = torch.randn(2, 5, 3)
        torch.library.opcheck(torch.ops.gnsm.score_matching_loss_with_grad,
                              (out, _state("cpu"), [5], make_tau(2, "cpu"), "kl", "mean"))
