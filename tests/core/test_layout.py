"""FieldLayout, as_field_sizes and the standardization rule, checked against naive implementations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from gnsm.core import (DETECTOR_EPS, MAX_FIELD_SIZE, PAPER_EPS, FieldLayout, as_field_sizes, fit_standardizer,
                       near_zero_scale, standardize)

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True)


def test_constants():
    assert (MAX_FIELD_SIZE, PAPER_EPS, DETECTOR_EPS) == (65536, 1e-5, 0.01)


@pytest.mark.parametrize("value, expected", [
    (4, ([4], True)),
    (np.int64(4), ([4], True)),
    (np.int32(4), ([4], True)),
    (torch.tensor(4), ([4], True)),
    (np.array(4), ([4], True)),
    ([2, 3], ([2, 3], False)),
    ((2, 3), ([2, 3], False)),
    ([np.int64(2), torch.tensor(3)], ([2, 3], False)),
    (torch.tensor([2, 3]), ([2, 3], False)),
    (np.array([2, 3], dtype=np.uint8), ([2, 3], False)),
    ([1], ([1], False)),
    ([MAX_FIELD_SIZE], ([MAX_FIELD_SIZE], False)),
])
def test_as_field_sizes_accepts(value, expected):
    sizes, single = as_field_sizes(value)
    assert (sizes, single) == expected
    assert all(type(k) is int for k in sizes)


@pytest.mark.parametrize("value, error", [
    ([2.5, 3.7], TypeError), (2.0, TypeError), ("12", TypeError), (b"12", TypeError), ([True, True], TypeError),
    (True, TypeError), (np.bool_(True), TypeError), (torch.tensor([2.0, 3.0]), TypeError),
    (torch.tensor(True), TypeError), (np.array([[2, 3]]), TypeError), ({2, 3}, TypeError), (None, TypeError),
    ([], ValueError), (0, ValueError), ([3, 0], ValueError), (-2, ValueError),
    (MAX_FIELD_SIZE + 1, ValueError), ([2 ** 62] * 4, ValueError),
])
def test_as_field_sizes_rejects_naming_the_argument(value, error):
    with pytest.raises(error, match="^sizes_arg"):
        as_field_sizes(value, name="sizes_arg")


def test_layout_properties():
    layout = FieldLayout.from_sizes([2, 3, 1])
    assert layout.sizes == (2, 3, 1) and not layout.single
    assert (layout.n_fields, layout.width, layout.offsets) == (3, 6, (0, 2, 5, 6))
    assert layout.field_sizes == [2, 3, 1]
    single = FieldLayout.from_sizes(7)
    assert single.single and single.field_sizes == 7 and single.offsets == (0, 7)
    with pytest.raises(ValueError, match="sizes"):
        FieldLayout((2, 3), single=True)
    with pytest.raises(ValueError, match="sizes"):
        FieldLayout((0,))


def test_split_torch_and_numpy():
    layout = FieldLayout.from_sizes([2, 3])
    x = torch.arange(10.0).view(2, 5)
    parts = layout.split(x)
    assert [tuple(p.shape) for p in parts] == [(2, 2), (2, 3)]
    assert torch.equal(torch.cat(parts, dim=1), x)
    parts_np = layout.split(x.numpy().T, dim=0)
    assert [p.shape for p in parts_np] == [(2, 2), (3, 2)]
    with pytest.raises(ValueError, match="x: expected 5 channels"):
        layout.split(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="x: expected 5 channels"):
        layout.split(torch.zeros(5), dim=1)


def _naive_one_hot_logits(codes: np.ndarray, sizes: list[int], eps: float) -> np.ndarray:
    rows = []
    for row in codes:
        parts = []
        for c, k in zip(row, sizes):
            p = np.zeros(k)
            p[c] = 1.0
            parts.append(np.log(np.clip(p, eps, 1.0)))
        rows.append(np.concatenate(parts))
    return np.stack(rows)


@st.composite
def _sizes_and_codes(draw):
    sizes = draw(st.lists(st.integers(1, 9), min_size=1, max_size=5))
    n = draw(st.integers(1, 6))
    codes = np.array([[draw(st.integers(0, k - 1)) for k in sizes] for _ in range(n)], dtype=np.int64)
    return sizes, codes


@PROPERTY
@given(_sizes_and_codes(), st.sampled_from([PAPER_EPS, DETECTOR_EPS, 0.3, 1.0]))
def test_one_hot_logits_matches_naive(sizes_codes, eps):
    sizes, codes = sizes_codes
    layout = FieldLayout.from_sizes(sizes)
    out = layout.one_hot_logits(torch.from_numpy(codes), eps, dtype=torch.float64)
    np.testing.assert_allclose(out.numpy(), _naive_one_hot_logits(codes, sizes, eps), rtol=1e-12, atol=0)


@PROPERTY
@given(_sizes_and_codes(), st.integers(0, 2 ** 32 - 1))
def test_per_field_softmax_matches_naive(sizes_codes, seed):
    sizes, codes = sizes_codes
    layout = FieldLayout.from_sizes(sizes)
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((codes.shape[0], layout.width)))
    expected = []
    for j, k in enumerate(sizes):
        block = x[:, layout.offsets[j]:layout.offsets[j] + k].numpy()
        e = np.exp(block - block.max(axis=1, keepdims=True))
        expected.append(e / e.sum(axis=1, keepdims=True))
    expected = np.concatenate(expected, axis=1)
    np.testing.assert_allclose(layout.softmax(x).numpy(), expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(layout.log_softmax(x).numpy(), np.log(expected), rtol=1e-10, atol=1e-12)


def test_one_hot_logits_single_field_spatial():
    layout = FieldLayout.from_sizes(3)
    codes = torch.tensor([[[0, 2], [1, 1]]])  # (B=1, 2, 2)
    out = layout.one_hot_logits(codes, 0.01)
    assert out.shape == (1, 3, 2, 2) and out.dtype == torch.float32
    assert torch.equal(out.argmax(dim=1), codes)
    assert torch.allclose(out.max(dim=1).values, torch.zeros(1, 2, 2))
    assert torch.allclose(out.min(dim=1).values, torch.full((1, 2, 2), math.log(0.01)))


def test_one_hot_logits_multi_field_spatial():
    layout = FieldLayout.from_sizes([2, 3])
    codes = torch.tensor([[[0, 1], [2, 0]]])  # (B=1, J=2, 2)
    out = layout.one_hot_logits(codes, 0.5)
    assert out.shape == (1, 5, 2)
    assert torch.equal(out[0, :2].argmax(dim=0), codes[0, 0]) and torch.equal(out[0, 2:].argmax(dim=0), codes[0, 1])


@pytest.mark.parametrize("codes, eps, error, match", [
    (torch.tensor([[0, 3]]), 0.1, ValueError, "codes: values must lie"),
    (torch.tensor([[-1, 0]]), 0.1, ValueError, "codes: values must lie"),
    (torch.tensor([[0.0, 1.0]]), 0.1, TypeError, "codes: expected an integer"),
    (torch.tensor([0, 1]), 0.1, ValueError, "codes: expected shape"),
    (torch.tensor([[0, 1, 1]]), 0.1, ValueError, "codes: expected shape"),
    (torch.tensor([[0, 1]]), 0.0, ValueError, "eps"),
    (torch.tensor([[0, 1]]), 1.5, ValueError, "eps"),
    (torch.tensor([[0, 1]]), float("nan"), ValueError, "eps"),
])
def test_one_hot_logits_rejects(codes, eps, error, match):
    with pytest.raises(error, match=match):
        FieldLayout.from_sizes([2, 3]).one_hot_logits(codes, eps)


def test_one_hot_logits_unchecked_matches_checked_and_shape_checks_stay():
    layout = FieldLayout.from_sizes([2, 3])
    codes = torch.tensor([[0, 2], [1, 0], [1, 1]])
    eps = torch.tensor([0.01, 0.1, 0.3])
    assert torch.equal(layout.one_hot_logits(codes, eps, check=False), layout.one_hot_logits(codes, eps))
    # check=False drops only the value-range checks (host syncs); shapes and dtypes are still checked.
    with pytest.raises(ValueError, match="eps: expected a float or one clip per record"):
        layout.one_hot_logits(codes, eps[:2], check=False)
    with pytest.raises(TypeError, match="codes: expected an integer"):
        layout.one_hot_logits(codes.float(), 0.1, check=False)


def test_log_softmax_rejects_wrong_width():
    with pytest.raises(ValueError, match="x: expected 5 channels"):
        FieldLayout.from_sizes([2, 3]).log_softmax(torch.zeros(2, 6))
    with pytest.raises(ValueError, match="x: expected 4 channels"):
        FieldLayout.from_sizes(4).softmax(torch.zeros(2, 3))


# ---------------------------------------------------------------------------- standardization

def test_standardizer_numpy_and_torch_agree():
    F = np.array([[1.0, 5.0, 0.0], [3.0, 5.0, 1e-14], [5.0, 5.0, 0.0]])
    mean, scale = fit_standardizer(F)
    np.testing.assert_allclose(mean, F.mean(axis=0))
    np.testing.assert_allclose(scale, [F[:, 0].std(), 1.0, 1.0])  # constant (up to rounding): scale 1
    mean_t, scale_t = fit_standardizer(torch.from_numpy(F))
    np.testing.assert_allclose(mean_t.numpy(), mean)
    np.testing.assert_allclose(scale_t.numpy(), scale)
    Z = standardize(F, mean, scale)
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-12)
    assert np.all(Z[:, 1:] == 0.0) or np.allclose(Z[:, 1:], 0.0, atol=1e-13)
    assert torch.allclose(standardize(torch.from_numpy(F), mean_t, scale_t), torch.from_numpy(Z))


def test_standardizer_ignores_nan_and_float32_dtype():
    F = np.array([[1.0], [np.nan], [3.0]])
    mean, scale = fit_standardizer(F)
    assert mean[0] == 2.0 and scale[0] == 1.0
    mean_t, scale_t = fit_standardizer(torch.tensor([[1.0], [3.0]], dtype=torch.float32))
    assert mean_t.dtype == torch.float32 and scale_t.dtype == torch.float32


def test_standardizer_axis_and_empty():
    F = np.arange(6.0).reshape(2, 3)
    mean, _ = fit_standardizer(F, axis=1)
    np.testing.assert_allclose(mean, [1.0, 4.0])
    with pytest.raises(ValueError, match="F: cannot standardize from zero samples"):
        fit_standardizer(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="F: cannot standardize from zero samples"):
        fit_standardizer(torch.zeros(0, 3))


def test_near_zero_scale_is_relative_to_the_mean():
    std = np.array([1e-9, 1e-9, 0.0, np.inf, np.nan, 1.0])
    mean = np.array([1e6, 1.0, 0.0, 0.0, 0.0, 0.0])
    assert near_zero_scale(std, mean).tolist() == [True, False, True, True, True, False]
    assert near_zero_scale(torch.from_numpy(std), torch.from_numpy(mean)).tolist() == \
        [True, False, True, True, True, False]


@PROPERTY
@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=30), st.floats(-1e3, 1e3))
def test_standardize_is_invertible(values, shift):
    F = np.asarray(values)[:, None] + shift
    mean, scale = fit_standardizer(F)
    Z = standardize(F, mean, scale)
    np.testing.assert_allclose(Z * scale + mean, F, rtol=1e-9, atol=1e-6)
    assert np.all(np.isfinite(Z))
