"""The input contract of the fused ops (docs/ops.md, "Input contract"): each case below used to crash,
return garbage or raise an unnamed error, and must now either work or raise a named error.

Covered: field sizes whose sum overflows int64 and a bound on one K; CPU inputs next to meta tensors;
field_sizes / labels / tau coercion; the accepted temperature range; tau requiring grad; non-finite
network outputs (NaN where they act); double backward through the loss (against the float64 reference).
"""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import gnsm.core as core
from ops_testing import assert_close, make_labels, noise, ops, ref


def _raises(exc, pattern, fn):
    with pytest.raises(exc) as info:
        fn()
    assert re.search(pattern, str(info.value)), f"message {str(info.value)!r} does not match {pattern!r}"


def _state():
    return ops.rng_state(torch.empty(0))


def _wrapper_calls(field_sizes, tau=1.0, channels=4, state=None, labels=None, output=None):
    """Every public op with the given field sizes and tau (batch 2, CPU)."""
    state = _state() if state is None else state
    labels = torch.zeros(2, 8, dtype=torch.long) if labels is None else labels
    output = torch.randn(2, channels, 8) if output is None else output
    return {
        "relax_from_labels": lambda: ops.relax_from_labels(labels, field_sizes, tau, rng_state=state),
        "relax_from_logits": lambda: ops.relax_from_logits(output, field_sizes, tau, rng_state=state),
        "target_score": lambda: ops.target_score(state, output.shape, field_sizes, tau),
        "score_matching_loss": lambda: ops.score_matching_loss(output, state, field_sizes, tau),
        "score_norms": lambda: ops.score_norms(output, field_sizes, tau),
    }


def _direct_calls(field_sizes, tau, state, labels, output):
    """The same ops through torch.ops.gnsm (no Python checks in front of the C++ ones)."""
    g = torch.ops.gnsm
    return {
        "relax_from_labels": lambda: g.relax_from_labels(labels, field_sizes, tau, state, 1e-5, torch.float32),
        "relax_from_logits": lambda: g.relax_from_logits(output, field_sizes, tau, state, torch.float32),
        "target_score": lambda: g.target_score(state, list(output.shape), field_sizes, tau),
        "score_matching_loss": lambda: g.score_matching_loss(output, state, field_sizes, tau, "kl", "mean"),
        "score_matching_loss_with_grad": lambda: g.score_matching_loss_with_grad(output, state, field_sizes, tau,
                                                                                "kl", "mean"),
        "score_matching_loss_backward": lambda: g.score_matching_loss_backward(torch.tensor(1.0), output, state,
                                                                              field_sizes, tau, "kl", "mean"),
        "score_norms": lambda: g.score_norms(output, field_sizes, tau),
    }


class TestFieldSizeBounds:
    def test_overflowing_sum_is_rejected_not_a_segfault(self):
        # [2^62] * 3 + [2^62 + 4] sums to 4 modulo 2^64: it used to pass the channel check and crash
        # (signal 11) in every op. Run in a child process so that a crash fails this test, not the suite.
        code = r"""
import torch, gnsm.ops as ops
sizes = [2 ** 62] * 3 + [2 ** 62 + 4]
labels4, out = torch.zeros(2, 4, 8, dtype=torch.long), torch.randn(2, 4, 8, 8)
state, tau = ops.rng_state(out), torch.ones(2)
calls = [lambda: ops.score_norms(out, sizes, 1.0), lambda: ops.relax_from_labels(labels4, sizes, 1.0),
         lambda: ops.relax_from_logits(out, sizes, 1.0), lambda: ops.score_matching_loss(out, state, sizes, 1.0),
         lambda: ops.target_score(state, out.shape, sizes, 1.0),
         lambda: torch.ops.gnsm.score_norms(out, sizes, tau),
         lambda: torch.ops.gnsm.relax_from_labels(labels4, sizes, tau, state, 1e-5, torch.float32),
         lambda: torch.ops.gnsm.relax_from_logits(out, sizes, tau, state, torch.float32),
         lambda: torch.ops.gnsm.score_matching_loss(out, state, sizes, tau, "kl", "mean"),
         lambda: torch.ops.gnsm.target_score(state, list(out.shape), sizes, tau)]
for call in calls:
    try:
        call()
    except ValueError as err:
        assert str(err).startswith("field_sizes"), err
    else:
        raise SystemExit("accepted")
print("all rejected")
"""
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0 and "all rejected" in run.stdout, (run.returncode, run.stderr[-2000:])

    def test_bounds_agree_between_python_and_cpp(self):
        info = ops.build_info()
        assert info["max_field_size"] == core.MAX_FIELD_SIZE
        assert (info["tau_min"], info["tau_max"]) == (core.TAU_MIN, core.TAU_MAX)

    @pytest.mark.parametrize("op", ["relax_from_labels", "relax_from_logits", "target_score", "score_matching_loss",
                                    "score_matching_loss_with_grad", "score_matching_loss_backward", "score_norms"])
    def test_one_field_too_large_direct(self, op):
        k = core.MAX_FIELD_SIZE + 1
        out = torch.zeros(1, k, 1)  # 256 KiB: the bound is checked before any kernel or big allocation
        fns = _direct_calls([k], torch.ones(1), _state(), torch.zeros(1, 1, 1, dtype=torch.long), out)
        _raises(ValueError, rf"^field_sizes: expected every K_j <= {core.MAX_FIELD_SIZE}", fns[op])

    def test_one_field_too_large_wrapper(self):
        for name, fn in _wrapper_calls(2 ** 31).items():
            _raises(ValueError, r"^field_sizes: K = 2147483648 exceeds the largest supported field size", fn)

    def test_largest_field_is_accepted(self):
        k = core.MAX_FIELD_SIZE
        per_record, _ = ops.score_norms(torch.zeros(1, k), k, 1.0)
        assert per_record.item() == 0.0  # uniform logits: softmax = 1/K, so s = 0
        labels = torch.tensor([k - 1])
        y, _ = ops.relax_from_labels(labels, k, 1.0)
        assert y.shape == (1, k) and bool(torch.isfinite(y).all())


class TestMetaTensors:
    """A meta input next to CPU inputs runs the Meta (fake) kernel: it must raise the device error."""

    def test_meta_tau_or_state(self):
        labels = torch.zeros(2, 8, 8, dtype=torch.uint8)
        out = torch.randn(2, 4, 8)
        meta_tau, state = torch.ones(2, device="meta"), _state()
        for name, fn in _wrapper_calls(4, meta_tau, labels=labels, output=out).items():
            _raises(ValueError, r"^tau: expected a tensor on cpu \(the inputs' device\), got meta", fn)
        meta_state = state.to("meta")
        for name, fn in _wrapper_calls(4, 1.0, state=meta_state, labels=labels, output=out).items():
            if name in ("target_score", "score_norms"):  # no state, or its device is the state's
                continue
            _raises(ValueError, r"^rng_state: expected a tensor on cpu \(the inputs' device\), got meta", fn)
        for name, fn in _direct_calls([4], meta_tau, state, labels.unsqueeze(1), out).items():
            if name != "score_matching_loss_backward":
                _raises(ValueError, r"^tau: expected a tensor on cpu", fn)
        _raises(ValueError, r"^grad: expected a tensor on cpu, got meta",
                lambda: torch.ops.gnsm.score_matching_loss_backward(torch.tensor(1.0, device="meta"), out, state, [4],
                                                                   torch.ones(2), "kl", "mean"))

    def test_meta_input_with_cpu_tau(self):
        out = torch.empty(2, 4, 8, device="meta")
        _raises(ValueError, r"^tau: expected a tensor on meta", lambda: torch.ops.gnsm.score_norms(out, [4], torch.ones(2)))

    def test_all_meta_gives_shapes(self):
        out = torch.empty(2, 7, 5, device="meta")
        tau, state = torch.ones(2, device="meta"), torch.zeros(2, dtype=torch.long, device="meta")
        per_record, per_position = torch.ops.gnsm.score_norms(out, [3, 4], tau)
        assert per_record.shape == (2,) and per_position.shape == (2, 2, 5) and per_record.device.type == "meta"
        loss = torch.ops.gnsm.score_matching_loss(out, state, [3, 4], tau, "kl", "none")
        assert loss.shape == (2, 2, 5)


class TestCoercion:
    @pytest.mark.parametrize("sizes, error", [([2.5, 3.7], TypeError), ("12", TypeError), ([True, True], TypeError),
                                              (True, TypeError), (4.0, TypeError), ([], ValueError),
                                              ([3, 0], ValueError), (torch.tensor([2.0, 2.0]), TypeError)])
    def test_bad_field_sizes(self, sizes, error):
        for name, fn in _wrapper_calls(sizes).items():
            _raises(error, r"^field_sizes", fn)

    @pytest.mark.parametrize("sizes", [4, np.int64(4), torch.tensor(4), np.array(4), [np.int64(1), 3],
                                       torch.tensor([1, 3]), (2, np.int32(2))])
    def test_integer_like_field_sizes(self, sizes):
        out = torch.randn(2, 4, 3)
        expected = ops.score_norms(out, [4] if isinstance(sizes, int) or np.ndim(sizes) == 0 else [1, 3]
                                   if np.asarray(sizes).tolist() == [1, 3] else [2, 2], 1.0)[0]
        assert torch.equal(ops.score_norms(out, sizes, 1.0)[0], expected)

    @pytest.mark.parametrize("labels", [np.zeros((2, 3), dtype=np.int64), [[0, 1], [1, 0]]])
    def test_non_tensor_labels(self, labels):
        _raises(TypeError, r"^labels: expected a torch.Tensor", lambda: ops.relax_from_labels(labels, 4, 1.0))

    def test_zero_dim_labels(self):
        _raises(ValueError, r"^labels: expected a tensor .* got a 0-d tensor",
                lambda: ops.relax_from_labels(torch.tensor(1), 4, 1.0))
        _raises(ValueError, r"^labels: expected a tensor", lambda: ops.relax_from_labels(torch.tensor(1), [4], 1.0))

    @pytest.mark.parametrize("op", ["relax_from_logits", "score_matching_loss", "score_norms"])
    def test_non_tensor_float_input(self, op):
        name = "logits" if op == "relax_from_logits" else "output"
        _raises(TypeError, rf"^{name}: expected a torch.Tensor", _wrapper_calls(4, output=np.zeros((2, 4)))[op])

    @pytest.mark.parametrize("tau, error", [([1.0, 2.0], TypeError), ("1.0", TypeError), (True, TypeError),
                                            (None, TypeError)])
    def test_bad_tau_type(self, tau, error):
        for name, fn in _wrapper_calls(4, tau).items():
            _raises(error, r"^tau: expected a float or a tensor", fn)

    def test_numpy_float_tau(self):
        out = torch.randn(2, 4)
        assert torch.equal(ops.score_norms(out, 4, np.float32(2.0))[0], ops.score_norms(out, 4, 2.0)[0])


class TestTauRange:
    @pytest.mark.parametrize("bad", [1e-40, 9e-5, 1.1e4, 1e20])
    def test_out_of_range_float(self, bad):
        for name, fn in _wrapper_calls(4, bad).items():
            _raises(ValueError, r"^tau: expected temperatures in \[0.0001, 10000\], found", fn)

    @pytest.mark.parametrize("bad", [1e-40, 9e-5, 1.1e4, 1e20])
    def test_out_of_range_tensor(self, bad):
        tau = torch.tensor([1.0, bad])
        for name, fn in _wrapper_calls(4, tau).items():
            _raises(ValueError, r"^tau: expected temperatures in \[0.0001, 10000\], found .* at index 1", fn)
        for name, fn in _direct_calls([4], tau, _state(), torch.zeros(2, 1, 3, dtype=torch.long),
                                      torch.randn(2, 4, 3)).items():
            _raises(ValueError, r"^tau: expected temperatures in", fn)

    @pytest.mark.parametrize("tau", [core.TAU_MIN, core.TAU_MAX])
    @pytest.mark.parametrize("kind", ["kl", "mse"])
    def test_extremes_give_finite_results(self, tau, kind):
        fields = [core.MAX_FIELD_SIZE, 3]
        labels = torch.tensor([[core.MAX_FIELD_SIZE - 1, 2]])
        y, state = ops.relax_from_labels(labels, fields, tau)
        out = (y * 50).requires_grad_()
        loss = ops.score_matching_loss(out, state, fields, tau, kind=kind)
        loss.backward()
        results = [y, loss, out.grad, ops.target_score(state, y.shape, fields, tau), *ops.score_norms(out, fields, tau),
                   ops.relax_from_logits(out.detach(), fields, tau)[0]]
        for r in results:
            assert bool(torch.isfinite(r).all())

    def test_schedule_uses_the_range(self):
        _raises(ValueError, r"^tau_max: expected temperatures in", lambda: core.Schedule(tau_max=2e4, tau_min=2.0))
        _raises(ValueError, r"^tau_min: expected temperatures in", lambda: core.check_temperatures(20.0, 1e-5))


class TestTauRequiringGrad:
    def test_every_op_says_no(self):
        tau = torch.ones(2, requires_grad=True)
        for name, fn in _wrapper_calls(4, tau).items():
            _raises(ValueError, r"^tau: gradients with respect to the temperature are not supported", fn)
        with torch.no_grad():  # harmless without autograd
            ops.relax_from_labels(torch.zeros(2, 3, dtype=torch.long), 4, tau)
        ops.relax_from_labels(torch.zeros(2, 3, dtype=torch.long), 4, tau.detach())


class TestNonFiniteOutput:
    """NaN / inf in a network output give NaN exactly where they act (never a finite number, which a
    -inf logit used to give): the trainer then stops on a non-finite loss or gradient."""

    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
    @pytest.mark.parametrize("path", ["wrapper", "op"])
    def test_loss_and_gradient(self, bad, path):
        out = torch.randn(2, 7, 3)
        out[1, 5, 0] = bad  # field 1 (classes 3..6) of record 1, position 0
        state, tau = _state(), torch.ones(2)
        if path == "wrapper":
            per_pos = ops.score_matching_loss(out, state, [3, 4], tau, reduction="none")
            leaf = out.clone().requires_grad_()
            loss = ops.score_matching_loss(leaf, state, [3, 4], tau)
            (grad,) = torch.autograd.grad(loss, leaf)
        else:
            per_pos = torch.ops.gnsm.score_matching_loss(out, state, [3, 4], tau, "kl", "none")
            loss, grad = torch.ops.gnsm.score_matching_loss_with_grad(out, state, [3, 4], tau, "mse", "mean")
            back = torch.ops.gnsm.score_matching_loss_backward(torch.tensor(1.0), out, state, [3, 4], tau, "kl", "sum")
            assert torch.equal(torch.isnan(back), torch.isnan(grad))
        expected_nan = torch.zeros(2, 2, 3, dtype=torch.bool)
        expected_nan[1, 1, 0] = True
        assert torch.equal(torch.isnan(per_pos), expected_nan)
        assert bool(torch.isfinite(per_pos[~expected_nan]).all())
        assert torch.isnan(loss)
        grad_nan = torch.zeros(2, 7, 3, dtype=torch.bool)
        grad_nan[1, 3:, 0] = True
        assert torch.equal(torch.isnan(grad), grad_nan) and bool(torch.isfinite(grad[~grad_nan]).all())

    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
    def test_score_norms(self, bad, dtype):
        out = torch.randn(3, 4, 5).to(dtype)
        out[2, 1, 4] = bad
        per_record, per_position = ops.score_norms(out, 4, 1.0)
        assert torch.isnan(per_record).tolist() == [False, False, True]
        expected = torch.zeros(3, 5, dtype=torch.bool)
        expected[2, 4] = True
        assert torch.equal(torch.isnan(per_position), expected)

    def test_large_finite_float64_is_not_flagged(self):
        out = torch.zeros(2, 4, dtype=torch.float64)
        out[0, 0] = 1e300  # beyond float32, finite in float64
        assert bool(torch.isfinite(ops.score_norms(out, 4, 1.0)[0]).all())


def _double_backward(loss_fn, o0):
    o = o0.clone().requires_grad_()
    loss = loss_fn(o).sum()
    (g,) = torch.autograd.grad(loss, o, create_graph=True)
    assert g.requires_grad, "the first gradient is not differentiable"
    (loss + (g ** 2).sum()).backward()
    return g.detach(), o.grad


class TestDoubleBackward:
    @pytest.mark.parametrize("kind", ["kl", "mse"])
    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    @pytest.mark.parametrize("path", ["wrapper", "op"])
    def test_matches_reference(self, kind, reduction, path):
        # The wrapper on the CPU computes the gradient in the forward (score_matching_loss_with_grad); the
        # op called directly uses the registered autograd formula (the GPU path). Both used to return a
        # first gradient that did not require grad: (L + |g|^2).backward() then gave L's gradient only.
        fields, tau = [4, 3], torch.tensor([1.5, 0.5, 3.0])
        o0 = torch.randn(3, 7, 5)
        state = ops.rng_state(o0)
        if path == "wrapper":
            fn = lambda o: ops.score_matching_loss(o, state, fields, tau, kind=kind, reduction=reduction)
        else:
            fn = lambda o: torch.ops.gnsm.score_matching_loss(o, state, fields, tau, kind, reduction)
        g, second = _double_backward(fn, o0)
        g_ref, second_ref = _double_backward(
            lambda o: ref.score_matching_loss(o, noise(state, o0.shape), tau.double(), fields, kind, reduction),
            o0.double())
        assert_close(g, g_ref, rtol=1e-5, msg="first gradient")
        assert_close(second, second_ref, rtol=1e-4, msg="d/do (L + |dL/do|^2)")

    @pytest.mark.parametrize("kind", ["kl", "mse"])
    def test_gradgradcheck(self, kind):
        o = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
        state, tau = ops.rng_state(o), torch.tensor([0.7, 2.0], dtype=torch.float64)
        assert torch.autograd.gradgradcheck(lambda x: ops.score_matching_loss(x, state, [2, 3], tau, kind=kind), (o,))
        assert torch.autograd.gradgradcheck(
            lambda x: torch.ops.gnsm.score_matching_loss(x, state, [2, 3], tau, kind, "none"), (o,))
