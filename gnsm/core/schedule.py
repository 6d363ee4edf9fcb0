"""Temperature and noise-level schedules (docs/design.md), the accepted temperatures, and the one
check of a temperature range.

Index 0 is the noisiest level. Models are conditioned on log(tau), so a trained network can be
evaluated at any temperature inside the range it was trained on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import math
from numbers import Integral, Real

import torch

TAU_MIN = 1e-4
TAU_MAX = 1e4
"""Accepted temperatures, inclusive, in every op and schedule (the compiled ops enforce the same
bounds: ``gnsm.ops.build_info()``). Far outside the temperatures GNSM trains at (2 to 20), and far
enough from the float32 limits that no op overflows: 1 / tau, tau^2 K^2 and (a + g) / tau stay finite
for every supported field size (docs/ops.md, input contract)."""


def check_tau(value, name: str = "tau") -> float:
    """A single temperature: a real number (not a bool) in ``[TAU_MIN, TAU_MAX]``, as a float.
    Raises ``TypeError`` / ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name}: expected a float or a tensor of temperatures, got {type(value).__name__} {value!r}")
    x = float(value)
    if not (TAU_MIN <= x <= TAU_MAX):  # also rejects NaN
        raise ValueError(f"{name}: expected temperatures in [{TAU_MIN:g}, {TAU_MAX:g}], found {value}")
    return x


def _positive_finite(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (Real, torch.Tensor)):
        raise TypeError(f"{name}: expected a positive finite number, got {type(value).__name__} {value!r}")
    x = float(value)
    if not (0.0 < x < math.inf):
        raise ValueError(f"{name}: expected a positive finite number, got {value}")
    return x


def check_temperatures(tau_max: float, tau_min: float, n: int | None = None) -> tuple[float, float, int | None]:
    """The one check of a temperature range: ``TAU_MAX >= tau_max >= tau_min >= TAU_MIN`` and, when given, an
    integer number of levels ``n >= 1``. Returns ``(tau_max, tau_min, n)`` as float, float, int.
    Raises ``TypeError`` / ``ValueError`` naming the argument."""
    hi = _positive_finite(tau_max, "tau_max")
    lo = _positive_finite(tau_min, "tau_min")
    check_tau(hi, "tau_max")
    check_tau(lo, "tau_min")
    if hi < lo:
        raise ValueError(f"tau_max/tau_min: expected tau_max >= tau_min > 0, got {tau_max}, {tau_min}")
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, Integral):
            raise TypeError(f"n: expected an integer number of temperatures, got {type(n).__name__} {n!r}")
        if n < 1:
            raise ValueError(f"n: expected at least one temperature, got {n}")
        n = int(n)
    return hi, lo, n


def _geometric(start: float, end: float, n: int) -> torch.Tensor:
    return torch.exp(torch.linspace(math.log(start), math.log(end), n, dtype=torch.float64))


@dataclass(frozen=True)
class Schedule:
    """Geometric temperatures tau_i = exp(linspace(log tau_max, log tau_min, n)) and the Gaussian
    sigmas paired with them by index for numerical columns (sigma_max down to sigma_min)."""

    n: int = 20
    tau_max: float = 20.0
    tau_min: float = 2.0
    sigma_max: float = 1.0
    sigma_min: float = 0.1

    def __post_init__(self) -> None:
        check_temperatures(self.tau_max, self.tau_min, self.n)
        for name in ("sigma_max", "sigma_min"):
            _positive_finite(getattr(self, name), name)

    def taus(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The n temperatures, noisiest (largest) first."""
        return _geometric(self.tau_max, self.tau_min, self.n).to(dtype)

    def sigmas(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The n Gaussian noise levels for numerical columns, paired with ``taus()`` by index."""
        return _geometric(self.sigma_max, self.sigma_min, self.n).to(dtype)

    def sample_indices(self, batch: int, generator: torch.Generator | None = None,
                       device: torch.device | str | None = None) -> torch.Tensor:
        """One uniformly drawn level index per record."""
        return torch.randint(0, self.n, (batch,), generator=generator, device=device)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Schedule":
        return cls(**d)
