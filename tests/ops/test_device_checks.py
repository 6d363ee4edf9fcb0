"""The CUDA ops' value checks without host syncs (csrc/ops/cuda/device_checks.cuh): by default the
kernels report the first bad label / temperature / logit they read, and the next gnsm CUDA call raises
the same named ValueError as the host check; GNSM_VALIDATE=eager raises at the offending call. The
default CUDA path must not synchronize: no ``item`` / ``_local_scalar_dense`` / ``nonzero`` is run.

Needs the CUDA kernels: a GPU, or GNSM_CUDA_EMULATION=1 (the kernels under CPU emulation).
"""
from __future__ import annotations

import pytest
import torch

from conftest import DEVICES
from ops_testing import make_labels, ops

CUDA = [DEVICES[1]]
SYNC_OPS = ("aten::item", "aten::_local_scalar_dense", "aten::nonzero", "aten::is_nonzero")


@pytest.fixture(params=CUDA)
def cuda_device(request, monkeypatch) -> torch.device:
    monkeypatch.delenv("GNSM_VALIDATE", raising=False)
    return request.param


def _state(device):
    return torch.tensor([3, 4], dtype=torch.int64, device=device)


def _next_call_raises(device, match):
    with pytest.raises(ValueError, match=match):
        ops.gumbel_noise(_state(device), (2, 4, 3))
    ops.gumbel_noise(_state(device), (2, 4, 3))  # raised once, then cleared


def test_bad_label_is_raised_by_the_next_call(cuda_device):
    labels = make_labels(2, [4, 3], (5,), cuda_device)
    labels[1, 1, 2] = 7
    y, _ = ops.relax_from_labels(labels, [4, 3], 1.0, rng_state=_state(cuda_device))  # no sync, no error yet
    assert y.shape == (2, 7, 5)
    _next_call_raises(cuda_device, r"^labels: expected values in \[0, 3\) for field 1, found 7 at index \(1, 1, 2\)")


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), 1e-6, 1e5])
def test_bad_tau_is_raised_by_the_next_call(cuda_device, bad):
    out = torch.randn(3, 4, 6, device=cuda_device)
    tau = torch.tensor([1.0, bad, 2.0], device=cuda_device)
    ops.score_matching_loss(out, _state(cuda_device), 4, tau)
    _next_call_raises(cuda_device, r"^tau: expected finite temperatures in \[0.0001, 10000\], found .* at index 1")


def test_non_finite_logit_is_raised_by_the_next_call(cuda_device):
    logits = torch.randn(2, 5, 4, device=cuda_device)
    logits[0, 3, 1] = float("nan")
    ops.relax_from_logits(logits, 5, 1.0, rng_state=_state(cuda_device))
    _next_call_raises(cuda_device, r"^logits: expected finite values, found nan at index \(0, 3, 1\)")


def test_eager_mode_raises_at_the_call(cuda_device, monkeypatch):
    monkeypatch.setenv("GNSM_VALIDATE", "eager")
    labels = make_labels(2, 4, (5,), cuda_device)
    labels[0, 3] = 9
    with pytest.raises(ValueError, match=r"^labels: expected values in \[0, 4\) found 9 at index \(0, 3\)"):
        ops.relax_from_labels(labels, 4, 1.0, rng_state=_state(cuda_device))
    ops.gumbel_noise(_state(cuda_device), (2, 4, 3))  # nothing left over for the next call


def test_unknown_validate_mode_is_named(cuda_device, monkeypatch):
    monkeypatch.setenv("GNSM_VALIDATE", "sometimes")
    with pytest.raises(ValueError, match="GNSM_VALIDATE: expected 'device'"):
        ops.relax_from_labels(make_labels(2, 4, (5,), cuda_device), 4, 1.0, rng_state=_state(cuda_device))


def test_default_path_does_not_synchronize(cuda_device):
    labels = make_labels(2, [4, 3], (5,), cuda_device)
    logits = torch.randn(2, 7, 5, device=cuda_device)
    tau = torch.tensor([0.5, 2.0], device=cuda_device)
    st = _state(cuda_device)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        ops.relax_from_labels(labels, [4, 3], tau, rng_state=st)
        ops.relax_from_logits(logits, [4, 3], tau, rng_state=st)
        out = logits.clone().requires_grad_()
        loss = ops.score_matching_loss(out, st, [4, 3], tau, reduction="sum")
        loss.backward(torch.ones_like(loss))
        ops.score_norms(logits, [4, 3], tau)
        ops.target_score(st, logits.shape, [4, 3], tau)
    names = {e.name for e in prof.events()}
    assert any(n.startswith("gnsm") for n in names), sorted(names)
    assert not names & set(SYNC_OPS), sorted(names & set(SYNC_OPS))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("sizes,channels", [([3, 4], 7), ([40, 3], 43)])  # register path; team path (K > 32)
def test_non_finite_output_gives_nan_where_it_acts(cuda_device, bad, sizes, channels):
    """Like the CPU backend: NaN exactly at the (record, field, position) a non-finite network output
    touches, in the loss, its gradient and the score norms; never a finite number; no error raised."""
    out = torch.randn(2, channels, 3, dtype=torch.float32)
    out[1, sizes[0] + 1, 0] = bad  # field 1 of record 1, position 0
    out = out.to(cuda_device)
    state, tau = _state(cuda_device), torch.ones(2, device=cuda_device)
    for kind in ("kl", "mse"):
        per_pos = ops.score_matching_loss(out, state, sizes, tau, kind=kind, reduction="none").cpu()
        expected = torch.zeros(2, 2, 3, dtype=torch.bool)
        expected[1, 1, 0] = True
        assert torch.equal(torch.isnan(per_pos), expected), kind
        assert bool(torch.isfinite(per_pos[~expected]).all())
        leaf = out.clone().requires_grad_()
        loss = ops.score_matching_loss(leaf, state, sizes, tau, kind=kind)
        (grad,) = torch.autograd.grad(loss, leaf)
        assert torch.isnan(loss.cpu())
        grad_nan = torch.zeros(2, channels, 3, dtype=torch.bool)
        grad_nan[1, sizes[0]:, 0] = True
        grad = grad.cpu()
        assert torch.equal(torch.isnan(grad), grad_nan) and bool(torch.isfinite(grad[~grad_nan]).all())
    per_record, per_position = ops.score_norms(out, sizes, tau)
    assert torch.isnan(per_record.cpu()).tolist() == [False, True]
    expected = torch.zeros(2, 2, 3, dtype=torch.bool)  # per (record, field, position)
    expected[1, 1, 0] = True
    assert torch.equal(torch.isnan(per_position.cpu()), expected)
    ops.gumbel_noise(state, (2, 4, 3))  # a non-finite network output is not an input error
