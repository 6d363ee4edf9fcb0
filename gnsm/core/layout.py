"""The categorical layout shared by every layer: field sizes, channel offsets, one-hot logits,
per-field softmax, and the one standardization rule for real-valued features.

``field_sizes`` is either one int K (a single field: a segmentation mask or label volume, codes
``(B, *spatial)``) or a sequence ``[K_1, ..., K_J]`` (J fields side by side, codes ``(B, J, *spatial)``).
Float tensors over the classes are ``(B, C, *spatial)`` with ``C = sum K_j`` and field j occupying
channels ``offsets[j]:offsets[j + 1]``. :func:`as_field_sizes` is the one place that normalizes and
validates field sizes; :class:`FieldLayout` derives everything else from the normalized sizes.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = [
    "DETECTOR_EPS",
    "MAX_FIELD_SIZE",
    "MIN_RELATIVE_SCALE",
    "PAPER_EPS",
    "FieldLayout",
    "as_field_sizes",
    "fit_standardizer",
    "near_zero_scale",
    "standardize",
]

MAX_FIELD_SIZE = 65536
"""Largest accepted number of classes K in one field (bounds memory per position and keeps sums of
field sizes far from integer overflow)."""

PAPER_EPS = 1e-5
"""The paper's clip of the one-hot: non-true classes get logit log(eps). The ops' default."""

DETECTOR_EPS = 0.01
"""The detectors' default clip: measured to rank anomalies better than ``PAPER_EPS`` (docs/tabular.md)."""

MIN_RELATIVE_SCALE = 1e-12
"""A standard deviation at or below ``MIN_RELATIVE_SCALE * max(1, |mean|)`` counts as zero: the
feature is constant up to rounding."""

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


# ---------------------------------------------------------------------------- field sizes

def _integer_dtype(x: torch.Tensor | np.ndarray) -> bool:
    if isinstance(x, np.ndarray):
        return bool(np.issubdtype(x.dtype, np.integer))
    return not (x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool)


def _one_size(value: Any, name: str) -> int:
    """One K: a Python / numpy integer or a 0-d integer tensor / array, in [1, MAX_FIELD_SIZE]."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if value.ndim != 0:
            raise TypeError(f"{name}: expected an integer, got a {value.ndim}-d array")
        if not _integer_dtype(value):
            raise TypeError(f"{name}: expected integer sizes, got dtype {value.dtype}")
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected integer sizes, got {type(value).__name__} {value!r}")
    k = int(value)
    if k < 1:
        raise ValueError(f"{name}: every field needs at least one class, got K = {k}")
    if k > MAX_FIELD_SIZE:
        raise ValueError(f"{name}: K = {k} exceeds the largest supported field size {MAX_FIELD_SIZE}")
    return k


def _is_scalar(value: Any) -> bool:
    return (isinstance(value, (int, np.integer, np.bool_))
            or (isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0))


def as_field_sizes(field_sizes: Any, name: str = "field_sizes") -> tuple[list[int], bool]:
    """Normalize ``field_sizes`` to ``(sizes, single_field)``.

    Accepts an int, a numpy integer or a 0-d integer tensor / array (one field: ``single_field`` is
    True), or a non-empty list / tuple / 1-d integer tensor / 1-d integer numpy array of those.
    Every K must lie in ``[1, MAX_FIELD_SIZE]``. Bools, floats and strings raise ``TypeError``; an
    empty sequence or an out-of-range K raises ``ValueError``; both name ``name``.
    """
    if isinstance(field_sizes, bool) or _is_scalar(field_sizes):
        return [_one_size(field_sizes, name)], True
    if isinstance(field_sizes, (torch.Tensor, np.ndarray)):
        if field_sizes.ndim != 1:
            raise TypeError(f"{name}: expected an int or a 1-d sequence of ints, got a "
                            f"{field_sizes.ndim}-d array")
        if not _integer_dtype(field_sizes):
            raise TypeError(f"{name}: expected integer sizes, got dtype {field_sizes.dtype}")
        items: Sequence[Any] = list(field_sizes)
    elif isinstance(field_sizes, Sequence) and not isinstance(field_sizes, (str, bytes, bytearray)):
        items = field_sizes
    else:
        raise TypeError(f"{name}: expected an int or a sequence of ints, got {type(field_sizes).__name__}")
    if len(items) == 0:
        raise ValueError(f"{name}: expected at least one field")
    return [_one_size(k, f"{name}[{j}]") for j, k in enumerate(items)], False


# ---------------------------------------------------------------------------- the layout

@dataclass(frozen=True)
class FieldLayout:
    """J categorical fields of sizes ``sizes`` laid side by side along dim 1 (see the module docstring).

    ``single`` marks the one-field mask layout, where codes carry no field dimension.
    """

    sizes: tuple[int, ...]
    single: bool = False

    def __post_init__(self) -> None:
        sizes, _ = as_field_sizes(list(self.sizes), "sizes")
        object.__setattr__(self, "sizes", tuple(sizes))
        if self.single and len(sizes) != 1:
            raise ValueError(f"sizes: the single-field layout has one field, got {len(sizes)}")

    @classmethod
    def from_sizes(cls, field_sizes: Any, name: str = "field_sizes") -> "FieldLayout":
        """The layout of an int K (single field) or a sequence ``[K_1, ..., K_J]``."""
        sizes, single = as_field_sizes(field_sizes, name)
        return cls(tuple(sizes), single)

    @property
    def field_sizes(self) -> int | list[int]:
        """The sizes in the form the ops take: an int K for the single-field layout, else a list."""
        return self.sizes[0] if self.single else list(self.sizes)

    @property
    def n_fields(self) -> int:
        return len(self.sizes)

    @property
    def width(self) -> int:
        """C = sum K_j, the number of class channels."""
        return sum(self.sizes)

    @property
    def offsets(self) -> tuple[int, ...]:
        """``(0, K_1, K_1 + K_2, ..., C)``: field j occupies channels ``offsets[j]:offsets[j + 1]``."""
        out = [0]
        for k in self.sizes:
            out.append(out[-1] + k)
        return tuple(out)

    def _check_width(self, x: np.ndarray | torch.Tensor, dim: int, name: str) -> None:
        if not -x.ndim <= dim < x.ndim or x.shape[dim] != self.width:
            raise ValueError(f"{name}: expected {self.width} channels along dim {dim}, got shape {tuple(x.shape)}")

    def split(self, x: ArrayT, dim: int = 1) -> list[ArrayT]:
        """The per-field slices of ``x`` along ``dim`` (views, one per field)."""
        self._check_width(x, dim, "x")
        if isinstance(x, torch.Tensor):
            return list(torch.split(x, list(self.sizes), dim=dim))
        return np.split(x, self.offsets[1:-1], axis=dim)

    def _codes(self, codes: Any, check: bool = True) -> torch.Tensor:
        codes = torch.as_tensor(codes)
        if codes.dtype == torch.bool or codes.dtype.is_floating_point or codes.dtype.is_complex:
            raise TypeError(f"codes: expected an integer tensor, got {codes.dtype}")
        if self.single:
            if codes.ndim < 1:
                raise ValueError(f"codes: expected shape (B, *spatial), got {tuple(codes.shape)}")
            codes = codes.unsqueeze(1)
        elif codes.ndim < 2 or codes.shape[1] != self.n_fields:
            raise ValueError(f"codes: expected shape (B, {self.n_fields}, *spatial), got {tuple(codes.shape)}")
        codes = codes.long()
        if check and codes.numel():
            sizes = torch.tensor(self.sizes, device=codes.device).view(1, -1, *([1] * (codes.ndim - 2)))
            if bool((codes < 0).any()) or bool((codes >= sizes).any()):
                raise ValueError("codes: values must lie in [0, K_j) for every field j")
        return codes

    def one_hot_logits(self, codes: Any, eps: float | torch.Tensor,
                       dtype: torch.dtype = torch.float32, *, check: bool = True) -> torch.Tensor:
        """``log(clip(onehot(codes), eps, 1))``: 0 at the true class, ``log(eps)`` elsewhere.

        ``codes`` (B, J, *spatial) integer (``(B, *spatial)`` for the single-field layout) ->
        ``(B, C, *spatial)`` of ``dtype`` on the codes' device. ``eps``: one clip, or a ``(B,)`` tensor of
        one clip per record (a clip per noise level, docs/training.md). ``check=False`` skips the range checks
        of the codes and of a clip tensor (each a host sync on a GPU) for callers that validated both already.
        """
        codes = self._codes(codes, check)
        shape = (codes.shape[0], self.width, *codes.shape[2:])
        if isinstance(eps, torch.Tensor) and eps.dim() > 0:
            if eps.shape != (codes.shape[0],):
                raise ValueError(f"eps: expected a float or one clip per record ({codes.shape[0]},), got shape "
                                 f"{tuple(eps.shape)}")
            if check and not bool(((eps > 0) & (eps <= 1)).all()):
                raise ValueError("eps: expected 0 < eps <= 1 for every record")
            fill = eps.to(device=codes.device, dtype=dtype).log().view(-1, *([1] * (len(shape) - 1)))
            out = fill.expand(shape).clone()
        else:
            eps = float(eps)
            if not (0.0 < eps <= 1.0):
                raise ValueError(f"eps: expected 0 < eps <= 1, got {eps}")
            out = torch.full(shape, math.log(eps), dtype=dtype, device=codes.device)
        offsets = torch.tensor(self.offsets[:-1], device=codes.device).view(1, -1, *([1] * (codes.ndim - 2)))
        return out.scatter_(1, codes + offsets, 0.0)

    def log_softmax(self, x: torch.Tensor) -> torch.Tensor:
        """Log-softmax over the classes of each field, along dim 1."""
        if self.n_fields == 1:
            self._check_width(x, 1, "x")
            return x.log_softmax(dim=1)
        return torch.cat([p.log_softmax(dim=1) for p in self.split(x, 1)], dim=1)

    def softmax(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax over the classes of each field, along dim 1."""
        if self.n_fields == 1:
            self._check_width(x, 1, "x")
            return x.softmax(dim=1)
        return torch.cat([p.softmax(dim=1) for p in self.split(x, 1)], dim=1)


# ---------------------------------------------------------------------------- standardization

def near_zero_scale(std: ArrayT, mean: ArrayT, min_scale: float = MIN_RELATIVE_SCALE) -> ArrayT:
    """True where ``std`` is non-finite or ``<= min_scale * max(1, |mean|)`` (a constant feature)."""
    if isinstance(std, torch.Tensor):
        mean = torch.as_tensor(mean, dtype=std.dtype, device=std.device)
        return ~torch.isfinite(std) | (std <= min_scale * torch.clamp(mean.abs(), min=1.0))
    std = np.asarray(std)
    return ~np.isfinite(std) | (std <= min_scale * np.maximum(np.abs(np.asarray(mean)), 1.0))


def fit_standardizer(F: ArrayT, axis: int = 0,
                     min_scale: float = MIN_RELATIVE_SCALE) -> tuple[ArrayT, ArrayT]:
    """Mean and scale (population std, ddof=0) of ``F`` along ``axis``; NaNs are ignored (numpy).

    A constant feature (see :func:`near_zero_scale`) gets scale 1, so standardizing it gives exactly
    0 on the training data and does not blow up a deviation seen later. Torch input is reduced in
    float64 and returned in ``F``'s dtype; numpy input returns float64.
    """
    if isinstance(F, torch.Tensor):
        if F.numel() == 0 or F.shape[axis] == 0:
            raise ValueError("F: cannot standardize from zero samples")
        x = F.double()
        mean = x.mean(dim=axis)
        std = x.std(dim=axis, unbiased=False)
        scale = torch.where(near_zero_scale(std, mean, min_scale), torch.ones_like(std), std)
        dtype = F.dtype if F.is_floating_point() else torch.float64
        return mean.to(dtype), scale.to(dtype)
    F = np.asarray(F, dtype=np.float64)
    if F.size == 0 or F.shape[axis] == 0:
        raise ValueError("F: cannot standardize from zero samples")
    with warnings.catch_warnings():  # an all-NaN column: NaN mean and std, then scale 1
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(F, axis=axis)
        std = np.nanstd(F, axis=axis)
    return mean, np.where(near_zero_scale(std, mean, min_scale), 1.0, std)


def standardize(F: ArrayT, mean: Any, scale: Any) -> ArrayT:
    """``(F - mean) / scale`` (broadcast along the last axis), in the type of ``F``."""
    if isinstance(F, torch.Tensor):
        mean = torch.as_tensor(mean, dtype=F.dtype, device=F.device)
        scale = torch.as_tensor(scale, dtype=F.dtype, device=F.device)
        return (F - mean) / scale
    return (np.asarray(F) - mean) / scale

