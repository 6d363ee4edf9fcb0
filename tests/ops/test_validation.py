"""Bad input to the fused ops (csrc/utils/checks.cpp): each case raises the right exception type
(ValueError for bad values and shapes, TypeError for bad dtypes) with a message that names the
argument, before any kernel runs. One test per case; each case is tried on every op it applies to.
"""
from __future__ import annotations

import re

import pytest
import torch

from ops_testing import make_labels, ops


def _state(device):
    return ops.rng_state(torch.empty(0, device=device))


def _raises(exc, pattern, fn):
    with pytest.raises(exc) as info:
        fn()
    message = str(info.value)
    assert re.search(pattern, message), f"message {message!r} does not match {pattern!r}"
    return message


def _float_input_ops(device, out, sizes, tau, state=None):
    """Every op taking a float (B, C, *spatial) tensor, as zero-argument callables."""
    state = _state(device) if state is None else state
    return {
        "relax_from_logits": lambda: ops.relax_from_logits(out, sizes, tau, rng_state=state),
        "score_matching_loss": lambda: ops.score_matching_loss(out, state, sizes, tau),
        "score_norms": lambda: ops.score_norms(out, sizes, tau),
    }


def _tau_ops(device, tau):
    """Every op taking tau, with otherwise valid inputs (batch 3)."""
    state = _state(device)
    labels = make_labels(3, 4, (5,), device)
    out = torch.randn(3, 4, 5, device=device)
    return {
        "relax_from_labels": lambda: ops.relax_from_labels(labels, 4, tau, rng_state=state),
        "target_score": lambda: ops.target_score(state, (3, 4, 5), 4, tau),
        **_float_input_ops(device, out, 4, tau, state),
    }


class TestLabels:
    def test_float_labels(self, device):
        labels = make_labels(2, 4, (3,), device).float()
        _raises(TypeError, r"^labels: expected an integer tensor .*got Float", lambda: ops.relax_from_labels(labels, 4, 1.0))

    def test_bool_labels(self, device):
        labels = torch.zeros(2, 3, dtype=torch.bool, device=device)
        _raises(TypeError, r"^labels: expected an integer tensor", lambda: ops.relax_from_labels(labels, 2, 1.0))

    def test_labels_out_of_range(self, device):
        labels = make_labels(2, [3, 5], (4, 6), device)
        labels[1, 1, 2, 5] = 5
        msg = _raises(ValueError, r"^labels: expected values in \[0, 5\) for field 1, found 5 at index \(1, 1, 2, 5\)",
                      lambda: ops.relax_from_labels(labels, [3, 5], 1.0))
        assert "index" in msg

    def test_negative_labels(self, device):
        labels = make_labels(3, [3, 5], (), device)
        labels[2, 0] = -1
        _raises(ValueError, r"^labels: expected values in \[0, 3\) for field 0, found -1 at index \(2, 0\)",
                lambda: ops.relax_from_labels(labels, [3, 5], 1.0))

    def test_out_of_range_index_points_into_the_single_field_tensor(self, device):
        # For one field (labels (B, *spatial), field_sizes an int) the reported index must index the
        # tensor the caller passed (as in "found 9 at index (0, 3, 17)").
        labels = make_labels(2, 4, (5, 6), device)
        labels[1, 3, 4] = 7
        msg = _raises(ValueError, r"^labels: expected values in \[0, 4\).*found 7 at index", lambda: ops.relax_from_labels(labels, 4, 1.0))
        index = tuple(int(i) for i in re.search(r"at index \(([^)]*)\)", msg).group(1).split(","))
        assert len(index) == labels.dim() and labels[index].item() == 7, f"index {index} of a {tuple(labels.shape)} tensor"

    def test_wrong_number_of_fields(self, device):
        labels = make_labels(2, [3, 5, 2], (), device)
        _raises(ValueError, r"^labels: expected 2 fields in dim 1", lambda: ops.relax_from_labels(labels, [3, 5], 1.0))

    def test_bad_output_dtype(self, device):
        labels = make_labels(2, 4, (3,), device)
        _raises(TypeError, r"^dtype: expected float32, float64, float16 or bfloat16, got Int",
                lambda: ops.relax_from_labels(labels, 4, 1.0, dtype=torch.int32))

    @pytest.mark.parametrize("eps", [0.0, 1.0, -1e-5])
    def test_bad_eps(self, device, eps):
        labels = make_labels(2, 4, (3,), device)
        _raises(ValueError, r"^eps: expected a clip value in \(0, 1\)", lambda: ops.relax_from_labels(labels, 4, 1.0, eps=eps))

    def test_rejected_call_does_not_draw_from_the_generator(self, device):
        # "Input validation happens before any kernel runs" (DESIGN 2): a rejected call must not have
        # consumed randomness (drawn an rng_state), or a caught error would silently shift every later
        # sample of a seeded run.
        gen = torch.Generator(device=device).manual_seed(0)
        before = gen.get_state()
        bad_labels = make_labels(2, 4, (3,), device).float()
        bad_logits = torch.full((2, 4), float("nan"), device=device)
        with pytest.raises(TypeError):
            ops.relax_from_labels(bad_labels, 4, 1.0, generator=gen)
        assert torch.equal(gen.get_state(), before), "relax_from_labels drew an rng_state before rejecting its input"
        with pytest.raises(ValueError):
            ops.relax_from_logits(bad_logits, 4, 1.0, generator=gen)
        assert torch.equal(gen.get_state(), before), "relax_from_logits drew an rng_state before rejecting its input"


class TestLogitsAndOutputs:
    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
    def test_non_finite_logits(self, device, bad):
        logits = torch.randn(2, 5, 3, device=device)
        logits[1, 3, 2] = bad
        _raises(ValueError, rf"^logits: expected finite values, found {bad} at index \(1, 3, 2\)",
                lambda: ops.relax_from_logits(logits, [2, 3], 1.0))

    def test_integer_logits(self, device):
        logits = torch.zeros(2, 4, 3, dtype=torch.int64, device=device)
        _raises(TypeError, r"^logits: expected a float32, float64, float16 or bfloat16 tensor, got Long",
                lambda: ops.relax_from_logits(logits, 4, 1.0, dtype=torch.float32))

    @pytest.mark.parametrize("op", ["score_matching_loss", "score_norms"])
    def test_integer_outputs(self, device, op):
        out = torch.zeros(2, 4, 3, dtype=torch.int32, device=device)
        _raises(TypeError, r"^output: expected a float32, float64, float16 or bfloat16 tensor, got Int",
                _float_input_ops(device, out, 4, 1.0)[op])

    @pytest.mark.parametrize("op", ["relax_from_logits", "score_matching_loss", "score_norms"])
    def test_rank_one_input(self, device, op):
        out = torch.zeros(4, device=device)
        name = "logits" if op == "relax_from_logits" else "output"
        _raises(ValueError, rf"^{name}: expected shape \(B, C, \*spatial\)", _float_input_ops(device, out, 4, 1.0)[op])


class TestFieldSizes:
    @pytest.mark.parametrize("op", ["relax_from_logits", "score_matching_loss", "score_norms", "target_score"])
    def test_sizes_do_not_sum_to_channels(self, device, op):
        out = torch.randn(2, 7, 3, device=device)
        fns = _float_input_ops(device, out, [3, 5], 1.0)
        fns["target_score"] = lambda: ops.target_score(_state(device), (2, 7, 3), [3, 5], 1.0)
        _raises(ValueError, r"^field_sizes: the fields sum to 8 classes but \w+ has 7 channels", fns[op])

    @pytest.mark.parametrize("op", ["relax_from_labels", "relax_from_logits", "score_matching_loss", "score_norms",
                                    "target_score"])
    def test_zero_field_size(self, device, op):
        out = torch.randn(2, 5, 3, device=device)
        fns = _float_input_ops(device, out, [3, 0, 2], 1.0)
        fns["target_score"] = lambda: ops.target_score(_state(device), (2, 5, 3), [3, 0, 2], 1.0)
        labels = torch.zeros(2, 3, 3, dtype=torch.long, device=device)
        fns["relax_from_labels"] = lambda: ops.relax_from_labels(labels, [3, 0, 2], 1.0)
        # The wrappers check with gnsm.core.as_field_sizes; the op itself (called directly) in C++.
        _raises(ValueError, r"^field_sizes\[1\]: every field needs at least one class, got K = 0", fns[op])
        _raises(ValueError, r"^field_sizes: expected every K_j >= 1, got K_1 = 0",
                lambda: torch.ops.gnsm.score_norms(out, [3, 0, 2], torch.ones(2, device=device)))

    def test_no_fields(self, device):
        _raises(ValueError, r"^field_sizes: expected at least one field",
                lambda: ops.score_norms(torch.randn(2, 3, device=device), [], 1.0))

    def test_bool_field_sizes(self, device):
        _raises(TypeError, r"^field_sizes:", lambda: ops.score_norms(torch.randn(2, 1, device=device), True, 1.0))


class TestTau:
    @pytest.mark.parametrize("op", ["relax_from_labels", "relax_from_logits", "target_score", "score_matching_loss",
                                    "score_norms"])
    @pytest.mark.parametrize("bad", [0.0, -1.0])
    def test_non_positive_tau(self, device, op, bad):
        tau = torch.tensor([1.0, bad, 2.0], device=device)
        _raises(ValueError, rf"^tau: expected finite temperatures > 0, found {bad:g} at index 1", _tau_ops(device, tau)[op])

    @pytest.mark.parametrize("op", ["relax_from_labels", "relax_from_logits", "target_score", "score_matching_loss",
                                    "score_norms"])
    @pytest.mark.parametrize("bad", [float("nan"), float("inf")])
    def test_nan_or_inf_tau(self, device, op, bad):
        tau = torch.tensor([1.0, 2.0, bad], device=device)
        _raises(ValueError, rf"^tau: expected finite temperatures > 0, found {bad} at index 2", _tau_ops(device, tau)[op])

    def test_scalar_nan_tau(self, device):
        _raises(ValueError, r"^tau: expected temperatures in \[0.0001, 10000\], found nan",
                lambda: ops.score_norms(torch.randn(2, 3, device=device), 3, float("nan")))

    @pytest.mark.parametrize("op", ["relax_from_labels", "relax_from_logits", "target_score", "score_matching_loss",
                                    "score_norms"])
    @pytest.mark.parametrize("length", [2, 4])
    def test_tau_of_the_wrong_length(self, device, op, length):
        tau = torch.ones(length, device=device)
        _raises(ValueError, rf"^tau: expected one temperature per record, shape \(3,\), got \({length},\)",
                _tau_ops(device, tau)[op])

    def test_two_dimensional_tau(self, device):
        _raises(ValueError, r"^tau: expected one temperature per record",
                _tau_ops(device, torch.ones(3, 1, device=device))["score_norms"])

    def test_integer_tau(self, device):
        _raises(TypeError, r"^tau: expected a floating-point tensor",
                _tau_ops(device, torch.ones(3, dtype=torch.int64, device=device))["score_matching_loss"])

    def test_raw_op_float16_tau(self, device):
        out = torch.randn(3, 4, device=device)
        _raises(TypeError, r"^tau: expected a float32 or float64 tensor, got Half",
                lambda: torch.ops.gnsm.score_norms(out, [4], torch.ones(3, dtype=torch.float16, device=device)))


class TestRngStateArgument:
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int32, torch.float64])
    @pytest.mark.parametrize("op", ["relax_from_labels", "relax_from_logits", "gumbel_noise", "target_score",
                                    "score_matching_loss"])
    def test_wrong_dtype(self, device, op, dtype):
        # On a CPU-only machine this stands in for a state of the wrong kind: a float or int32 tensor
        # cannot carry the 64-bit [seed, offset].
        state = _state(device).to(dtype)
        labels = make_labels(2, 4, (3,), device)
        out = torch.randn(2, 4, 3, device=device)
        fns = {
            "relax_from_labels": lambda: ops.relax_from_labels(labels, 4, 1.0, rng_state=state),
            "relax_from_logits": lambda: ops.relax_from_logits(out, 4, 1.0, rng_state=state),
            "gumbel_noise": lambda: ops.gumbel_noise(state, (2, 4, 3)),
            "target_score": lambda: ops.target_score(state, (2, 4, 3), 4, 1.0),
            "score_matching_loss": lambda: ops.score_matching_loss(out, state, 4, 1.0),
        }
        _raises(TypeError, r"^rng_state: expected an int64 tensor \[seed, offset\]", fns[op])

    @pytest.mark.parametrize("numel", [1, 3])
    def test_wrong_size(self, device, numel):
        state = torch.zeros(numel, dtype=torch.int64, device=device)
        _raises(ValueError, rf"^rng_state: expected 2 elements \[seed, offset\], got {numel}",
                lambda: ops.score_matching_loss(torch.randn(2, 4, device=device), state, 4, 1.0))

    def test_bad_shape_argument(self, device):
        _raises(ValueError, r"^shape: expected \(B, C, \*spatial\)", lambda: ops.gumbel_noise(_state(device), (5,)))
        _raises(ValueError, r"^shape: expected non-negative sizes", lambda: ops.gumbel_noise(_state(device), (2, -1)))


class TestLossArguments:
    def test_wrong_kind(self, device):
        out = torch.randn(2, 4, device=device)
        _raises(ValueError, r"^kind: expected 'kl' or 'mse', got 'l2'",
                lambda: ops.score_matching_loss(out, _state(device), 4, 1.0, kind="l2"))

    def test_wrong_reduction(self, device):
        out = torch.randn(2, 4, device=device)
        _raises(ValueError, r"^reduction: expected 'mean', 'sum' or 'none', got 'avg'",
                lambda: ops.score_matching_loss(out, _state(device), 4, 1.0, reduction="avg"))

    def test_backward_grad_shape_mismatch(self, device):
        out = torch.randn(2, 6, 3, device=device)
        state, tau = _state(device), torch.ones(2, device=device)
        _raises(ValueError, r"^grad: expected shape \(2, 2, 3\), got \(2, 3\)",
                lambda: torch.ops.gnsm.score_matching_loss_backward(torch.ones(2, 3, device=device), out, state, [2, 4],
                                                                   tau, "kl", "none"))
        _raises(ValueError, r"^grad: expected a scalar for reduction 'mean', got shape \(2,\)",
                lambda: torch.ops.gnsm.score_matching_loss_backward(torch.ones(2, device=device), out, state, [2, 4],
                                                                   tau, "kl", "mean"))

    def test_backward_wrong_kind(self, device):
        out = torch.randn(2, 4, device=device)
        _raises(ValueError, r"^kind: expected 'kl' or 'mse'",
                lambda: torch.ops.gnsm.score_matching_loss_backward(torch.tensor(1.0, device=device), out,
                                                                   _state(device), [4], torch.ones(2, device=device),
                                                                   "KL", "mean"))


@pytest.mark.cuda
class TestMismatchedDevices:
    """Inputs on different devices (needs CUDA; skipped where there is none)."""

    def test_tau_on_another_device(self):
        labels = make_labels(2, 4, (3,), "cuda")
        _raises(ValueError, r"^tau: expected a tensor on cuda", lambda: ops.relax_from_labels(labels, 4, torch.ones(2)))

    def test_rng_state_on_another_device(self):
        out = torch.randn(2, 4, 3, device="cuda")
        state = _state(torch.device("cpu"))
        _raises(ValueError, r"^rng_state: expected a tensor on cuda",
                lambda: ops.score_matching_loss(out, state, 4, 1.0))
        _raises(ValueError, r"^rng_state: expected a tensor on cuda",
                lambda: ops.relax_from_logits(out, 4, 1.0, rng_state=state))

    def test_backward_grad_on_another_device(self):
        out = torch.randn(2, 4, device="cuda")
        state = _state(torch.device("cuda"))
        _raises(ValueError, r"^grad: expected a tensor on cuda",
                lambda: torch.ops.gnsm.score_matching_loss_backward(torch.tensor(1.0), out, state, [4],
                                                                   torch.ones(2, device="cuda"), "kl", "mean"))
