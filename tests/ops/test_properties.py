"""Property-based tests of the fused ops (hypothesis): generated layouts (one field given as an int or
J fields), batch and spatial shapes, storage dtypes and temperatures anywhere in the accepted range
[TAU_MIN, TAU_MAX] (gnsm.core), checked against the float64 reference (gnsm/ops/reference.py) fed the
op's own noise; generated bad field sizes and temperatures must raise the named error.

Example counts are kept small (100 per test, derandomized, for 2-core CI machines); set
GNSM_HYPOTHESIS_EXAMPLES=N for a longer randomized search. ``deadline=None`` because a
first call may compile or warm up a kernel.
"""
from __future__ import annotations

import math
import os

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

import gnsm.core as core  # noqa: E402
from ops_testing import as_list, assert_close, noise, ops, ref  # noqa: E402

SETTINGS = settings(max_examples=int(os.environ.get("GNSM_HYPOTHESIS_EXAMPLES", "100")), deadline=None,
                    derandomize=os.environ.get("GNSM_HYPOTHESIS_EXAMPLES") is None)


@st.composite
def layouts(draw):
    """(field_sizes, batch, spatial): an int K (mask layout) or 1 to 4 fields of 1 to 12 classes."""
    if draw(st.booleans()):
        sizes = draw(st.integers(1, 12))
    else:
        sizes = draw(st.lists(st.integers(1, 12), min_size=1, max_size=4))
    batch = draw(st.integers(1, 4))
    spatial = tuple(draw(st.lists(st.integers(1, 4), max_size=2)))
    return sizes, batch, spatial


def taus(batch):
    """A float, or one temperature per record, log-uniform over the accepted range (extremes included)."""
    one = st.one_of(st.sampled_from([core.TAU_MIN, core.TAU_MAX, 1.0]),
                    st.floats(math.log(core.TAU_MIN), math.log(core.TAU_MAX)).map(
                        lambda x: min(max(math.exp(x), core.TAU_MIN), core.TAU_MAX)))
    return st.one_of(one, st.lists(one, min_size=batch, max_size=batch).map(
        lambda v: torch.tensor(v, dtype=torch.float64).clamp(core.TAU_MIN, core.TAU_MAX).float()))


def _tau64(tau, batch):
    """The temperatures the op computes with (a float becomes a float32 tensor), in float64."""
    return torch.as_tensor(tau, dtype=torch.float32).expand(batch).double()


def _labels(sizes, batch, spatial, seed, dtype=torch.int64):
    gen = torch.Generator().manual_seed(seed)
    if isinstance(sizes, int):
        return torch.randint(0, sizes, (batch, *spatial), generator=gen).to(dtype)
    return torch.stack([torch.randint(0, k, (batch, *spatial), generator=gen) for k in sizes], 1).to(dtype)


@SETTINGS
@given(layout=layouts(), data=st.data(), seed=st.integers(0, 2 ** 31),
       label_dtype=st.sampled_from([torch.uint8, torch.int16, torch.int32, torch.int64]),
       out_dtype=st.sampled_from([torch.float32, torch.float64]))
def test_relax_from_labels_matches_reference(layout, data, seed, label_dtype, out_dtype):
    sizes, batch, spatial = layout
    tau = data.draw(taus(batch))
    labels = _labels(sizes, batch, spatial, seed, label_dtype)
    y, state = ops.relax_from_labels(labels, sizes, tau, dtype=out_dtype, generator=torch.Generator().manual_seed(seed))
    lab = labels.unsqueeze(1) if isinstance(sizes, int) else labels
    expected = ref.relax_from_labels(lab.long(), as_list(sizes), _tau64(tau, batch), noise(state, y.shape))
    assert y.dtype == out_dtype
    assert_close(y, expected, rtol=1e-5 if out_dtype == torch.float32 else 1e-7)


def _loss_scale(l, g, tau, sizes, kind, reduction):
    """The size of the terms the loss is a difference of, reduced like the loss (its rounding scale)."""
    if kind == "mse":
        terms = 0.5 * (ref.score_from_output(l, tau, sizes).square() + ref.target_score(g, tau, sizes).square())
    else:
        log_q = ref.per_field(lambda p: p.log_softmax(dim=1), -g, sizes)
        log_p = ref.per_field(lambda p: p.log_softmax(dim=1), l, sizes)
        terms = log_q.exp() * (log_q.abs() + log_p.abs())
    per_position = torch.stack([p.sum(dim=1) for p in torch.split(terms, sizes, dim=1)], dim=1)
    total = per_position.abs().max() if reduction == "none" else per_position.sum()
    return float(total / l.shape[0] if reduction == "mean" else total)


@SETTINGS
@given(layout=layouts(), data=st.data(), seed=st.integers(0, 2 ** 31),
       kind=st.sampled_from(["kl", "mse"]), reduction=st.sampled_from(["mean", "sum", "none"]),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_loss_and_gradient_match_reference(layout, data, seed, kind, reduction, dtype):
    sizes, batch, spatial = layout
    tau = data.draw(taus(batch))
    gen = torch.Generator().manual_seed(seed)
    out0 = (torch.randn(batch, sum(as_list(sizes)), *spatial, generator=gen) * 3).to(dtype)
    state = ops.rng_state(out0, torch.Generator().manual_seed(seed))
    out = out0.clone().requires_grad_()
    loss = ops.score_matching_loss(out, state, sizes, tau, kind=kind, reduction=reduction)
    (grad,) = torch.autograd.grad(loss.sum(), out)
    l64 = out0.double().requires_grad_()
    t64 = _tau64(tau, batch)
    expected = ref.score_matching_loss(l64, noise(state, out0.shape), t64, as_list(sizes), kind, reduction)
    if reduction == "none" and isinstance(sizes, int):
        expected = expected.squeeze(1)
    (expected_grad,) = torch.autograd.grad(expected.sum(), l64)
    # float64: the reference sees the noise rounded to float32 (gumbel_noise), the op does not.
    rtol = 1e-4 if dtype == torch.float32 else 1e-6
    # The loss is a difference of terms (p - q, log q - log p) that round at their own size, not at the
    # size of the difference: compare at the scale of those terms.
    assert_close(loss, expected, rtol=rtol,
                 scale=_loss_scale(out0.double(), noise(state, out0.shape), t64, as_list(sizes), kind, reduction))
    grad_scale = 1.0 if kind == "kl" else float(t64.max()) ** 2 * max(as_list(sizes)) ** 2
    assert_close(grad, expected_grad, rtol=rtol, scale=grad_scale)


@SETTINGS
@given(layout=layouts(), data=st.data(), seed=st.integers(0, 2 ** 31),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.float16]))
def test_score_norms_match_reference(layout, data, seed, dtype):
    sizes, batch, spatial = layout
    tau = data.draw(taus(batch))
    gen = torch.Generator().manual_seed(seed)
    out = (torch.randn(batch, sum(as_list(sizes)), *spatial, generator=gen) * 3).to(dtype)
    per_record, per_position = ops.score_norms(out, sizes, tau)
    ref_record, ref_position = ref.score_norms(out.double(), _tau64(tau, batch), as_list(sizes))
    if isinstance(sizes, int):
        ref_position = ref_position.squeeze(1)
    rtol = 1e-9 if dtype == torch.float64 else 1e-5  # math is fp32 on the stored values
    assert_close(per_record, ref_record, rtol=rtol)
    assert_close(per_position, ref_position, rtol=rtol)


@SETTINGS
@given(layout=layouts(), data=st.data())
def test_target_score_matches_reference(layout, data):
    sizes, batch, spatial = layout
    tau = data.draw(taus(batch))
    shape = (batch, sum(as_list(sizes)), *spatial)
    state = ops.rng_state(torch.empty(0), torch.Generator().manual_seed(data.draw(st.integers(0, 2 ** 31))))
    t = ops.target_score(state, shape, sizes, tau)
    assert_close(t, ref.target_score(noise(state, shape), _tau64(tau, batch), as_list(sizes)), rtol=1e-5)


bad_sizes = st.one_of(
    st.lists(st.integers(-3, 0), min_size=1, max_size=3).map(lambda v: ([2] + v, ValueError)),
    st.integers(core.MAX_FIELD_SIZE + 1, 2 ** 63 - 1).map(lambda k: ([k], ValueError)),
    st.lists(st.integers(2 ** 40, 2 ** 62), min_size=2, max_size=5).map(lambda v: (v, ValueError)),
    st.floats(allow_nan=True).map(lambda x: ([2, x], TypeError)),
    st.booleans().map(lambda b: ([b], TypeError)),
    st.text(max_size=3).map(lambda s: (s, TypeError)),
)


@SETTINGS
@given(case=bad_sizes, op=st.sampled_from(["relax_from_labels", "relax_from_logits", "target_score",
                                           "score_matching_loss", "score_norms"]))
def test_bad_field_sizes_raise_a_named_error(case, op):
    sizes, error = case
    labels, out, state = torch.zeros(2, 3, dtype=torch.long), torch.randn(2, 4, 3), ops.rng_state(torch.empty(0))
    calls = {
        "relax_from_labels": lambda: ops.relax_from_labels(labels, sizes, 1.0),
        "relax_from_logits": lambda: ops.relax_from_logits(out, sizes, 1.0),
        "target_score": lambda: ops.target_score(state, out.shape, sizes, 1.0),
        "score_matching_loss": lambda: ops.score_matching_loss(out, state, sizes, 1.0),
        "score_norms": lambda: ops.score_norms(out, sizes, 1.0),
    }
    with pytest.raises(error, match=r"^field_sizes"):
        calls[op]()


@SETTINGS
@given(bad=st.one_of(st.floats(0, core.TAU_MIN, exclude_max=True), st.floats(core.TAU_MAX, exclude_min=True),
                     st.floats(max_value=0.0), st.just(float("nan"))),
       as_tensor=st.booleans(), op=st.sampled_from(["relax_from_labels", "relax_from_logits", "target_score",
                                                     "score_matching_loss", "score_norms"]))
def test_bad_temperatures_raise_a_named_error(bad, as_tensor, op):
    tau = torch.tensor([1.0, bad], dtype=torch.float64) if as_tensor else bad
    if as_tensor and core.TAU_MIN <= float(tau.float()[1]) <= core.TAU_MAX:
        return  # rounds into the range in float32 storage
    labels, out, state = torch.zeros(2, 3, dtype=torch.long), torch.randn(2, 4, 3), ops.rng_state(torch.empty(0))
    calls = {
        "relax_from_labels": lambda: ops.relax_from_labels(labels, 4, tau),
        "relax_from_logits": lambda: ops.relax_from_logits(out, 4, tau),
        "target_score": lambda: ops.target_score(state, out.shape, 4, tau),
        "score_matching_loss": lambda: ops.score_matching_loss(out, state, 4, tau),
        "score_norms": lambda: ops.score_norms(out, 4, tau),
    }
    with pytest.raises(ValueError, match=r"^tau: expected"):
        calls[op]()
