"""The temperature schedule and the one temperature-range check."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gnsm.core import Schedule, check_temperatures


def test_schedule_taus_geometric_noisiest_first():
    taus = Schedule(n=3, tau_max=8.0, tau_min=2.0).taus(torch.float64)
    assert torch.allclose(taus, torch.tensor([8.0, 4.0, 2.0], dtype=torch.float64))


def test_check_temperatures_accepts():
    assert check_temperatures(20, 2.0, np.int64(5)) == (20.0, 2.0, 5)
    assert check_temperatures(3.0, 3.0) == (3.0, 3.0, None)


@pytest.mark.parametrize("args, error, match", [
    ((2.0, 20.0, 5), ValueError, "tau_max/tau_min"),
    ((0.0, 0.0, 5), ValueError, "tau_max"),
    ((20.0, -1.0, 5), ValueError, "tau_min"),
    ((float("inf"), 2.0, 5), ValueError, "tau_max"),
    ((20.0, float("nan"), 5), ValueError, "tau_min"),
    (("20", 2.0, 5), TypeError, "tau_max"),
    ((True, 2.0, 5), TypeError, "tau_max"),
    ((20.0, 2.0, 0), ValueError, "n: expected at least one"),
    ((20.0, 2.0, 2.5), TypeError, "n: expected an integer"),
    ((20.0, 2.0, True), TypeError, "n: expected an integer"),
])
def test_check_temperatures_rejects(args, error, match):
    with pytest.raises(error, match=match):
        check_temperatures(*args)


def test_schedule_validates_through_the_same_check():
    with pytest.raises(ValueError, match="tau_max/tau_min"):
        Schedule(tau_max=2.0, tau_min=20.0)
    with pytest.raises(ValueError, match="n: expected at least one"):
        Schedule(n=0)
    with pytest.raises(ValueError, match="sigma_min"):
        Schedule(sigma_min=0.0)


def test_check_tau_accepts_the_range_inclusive():
    from gnsm.core import TAU_MAX, TAU_MIN, check_tau

    assert (TAU_MIN, TAU_MAX) == (1e-4, 1e4)
    assert check_tau(TAU_MIN) == TAU_MIN and check_tau(TAU_MAX) == TAU_MAX and check_tau(np.float32(2.0)) == 2.0
    assert check_temperatures(TAU_MAX, TAU_MIN) == (TAU_MAX, TAU_MIN, None)


@pytest.mark.parametrize("value, error", [(9.9e-5, ValueError), (1.01e4, ValueError), (float("nan"), ValueError),
                                          (0.0, ValueError), ([1.0], TypeError), (True, TypeError), ("2", TypeError)])
def test_check_tau_rejects_naming_the_argument(value, error):
    from gnsm.core import check_tau

    with pytest.raises(error, match=r"^temp: expected"):
        check_tau(value, "temp")
