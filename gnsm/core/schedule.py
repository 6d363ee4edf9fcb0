"""Temperature and noise-level schedules (DESIGN.md 1.2 and 1.5).

Index 0 is the noisiest level. Models are conditioned on log(tau), so a trained network can be
evaluated at any temperature inside the range it was trained on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import math

import torch


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
        if self.n < 1:
            raise ValueError(f"schedule: n must be >= 1, got {self.n}")
        for name in ("tau_max", "tau_min", "sigma_max", "sigma_min"):
            value = getattr(self, name)
            if not (value > 0 and value < float("inf")):
                raise ValueError(f"schedule: {name} must be a positive finite number, got {value}")

    def taus(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The n temperatures, noisiest (largest) first."""
        return _geometric(self.tau_max, self.tau_min, self.n).to(dtype)

    def sigmas(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The n Gaussian noise levels for numerical columns, paired with ``taus()`` by index."""
        return _geometric(self.sigma_max, self.sigma_min, self.n).to(dtype)

    def sample_indices(self, batch: int, generator: torch.Generator | None = None,
                       device: torch.device | str | None = None) -> torch.Tensor:
        """One uniformly drawn level index per record (DESIGN 1.5)."""
        return torch.randint(0, self.n, (batch,), generator=generator, device=device)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Schedule":
        return cls(**d)
