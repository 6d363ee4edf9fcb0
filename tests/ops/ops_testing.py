"""Helpers shared by the tests of the fused ops (tests/ops): input makers and the tolerance rule.

Tolerance rule (``assert_close``): ``|actual - expected| <= rtol (|expected| + scale)`` elementwise,
where ``scale`` is the natural size of the quantity (default: ``max|expected|``). Quantities such as
y, t or a gradient have elements near 0 next to elements of size ~|z| = |a + g| / tau (or tau^2 K^2
for the mse gradient), and fp32 math rounds each element at the scale of the terms it was computed
from; a purely elementwise relative test would demand more than fp32 can give for the near-zero ones.
The expected values come from the float64 reference fed the op's own noise.
"""
from __future__ import annotations

from typing import Sequence

import torch

import gnsm.ops as ops
import gnsm.ops.reference as ref

# The 10 fields of the paper's tabular benchmark layout (docs/design.md, section 1.1).
MANY_FIELDS = [12, 4, 8, 3, 3, 3, 2, 10, 5, 3]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5, scale: float | None = None,
                 msg: str = "") -> None:
    assert actual.shape == expected.shape, f"{msg} shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    assert bool(torch.isfinite(a).all()), f"{msg} non-finite values in the result"
    if scale is None:
        scale = e.abs().max().item() if e.numel() else 0.0
    torch.testing.assert_close(a, e, rtol=rtol, atol=rtol * max(scale, 1e-30), msg=lambda m: f"{msg}\n{m}")


def make_labels(batch: int, field_sizes: int | Sequence[int], spatial: Sequence[int] = (),
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.int64,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Random valid labels: (B, *spatial) for an int K, (B, J, *spatial) for a list of fields."""
    if isinstance(field_sizes, int):
        return torch.randint(0, field_sizes, (batch, *spatial), generator=generator).to(device, dtype)
    cols = [torch.randint(0, k, (batch, *spatial), generator=generator) for k in field_sizes]
    return torch.stack(cols, dim=1).to(device, dtype)


def as_list(field_sizes: int | Sequence[int]) -> list[int]:
    return [field_sizes] if isinstance(field_sizes, int) else list(field_sizes)


def field_dim_labels(labels: torch.Tensor, field_sizes: int | Sequence[int]) -> torch.Tensor:
    """Labels in the reference's (B, J, *spatial) layout."""
    return labels.unsqueeze(1) if isinstance(field_sizes, int) else labels


def make_tau(batch: int, device: torch.device | str = "cpu", low: float = 0.2, high: float = 20.0,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """One temperature per record, log-uniform in [low, high] (fp32)."""
    u = torch.rand(batch, generator=generator, dtype=torch.float64)
    return torch.exp(torch.log(torch.tensor(low)) + u * (torch.log(torch.tensor(high)) - torch.log(torch.tensor(low)))
                     ).float().to(device)


def relaxed_shape(labels: torch.Tensor, field_sizes: int | Sequence[int]) -> tuple[int, ...]:
    sizes = as_list(field_sizes)
    spatial = labels.shape[1:] if isinstance(field_sizes, int) else labels.shape[2:]
    return (labels.shape[0], sum(sizes), *spatial)


def noise(state: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The Gumbel noise g behind a state, in float64 for the reference."""
    return ops.gumbel_noise(state, shape).double()


def per_field_logsumexp(y: torch.Tensor, field_sizes: int | Sequence[int]) -> torch.Tensor:
    return torch.stack([p.logsumexp(dim=1) for p in torch.split(y, as_list(field_sizes), dim=1)], dim=1)


__all__ = ["MANY_FIELDS", "assert_close", "make_labels", "as_list", "field_dim_labels", "make_tau",
           "relaxed_shape", "noise", "per_field_logsumexp", "ops", "ref"]
