"""Fixtures shared by every test package (ops, models, detectors, ...).

The device x dtype grid follows pytorch_scatter's ``testing.py``: tests take the ``device`` and/or
``dtype`` fixtures (or parametrize over ``DEVICES`` / ``FLOAT_DTYPES``) and run once per entry.
CUDA entries carry the ``cuda`` marker and are skipped (not faked) where no CUDA device is present.
The thread count is kept modest so the suite behaves the same on 2-core CI machines and on big
workstations, and every test starts from a fixed seed and the same thread count, whatever ran
before it.
"""
from __future__ import annotations

import pytest
import torch

NUM_THREADS = max(1, min(2, torch.get_num_threads()))
torch.set_num_threads(NUM_THREADS)

HAS_CUDA = torch.cuda.is_available()

DEVICES = [
    pytest.param(torch.device("cpu"), id="cpu"),
    pytest.param(torch.device("cuda", 0), id="cuda", marks=pytest.mark.cuda),
]

FLOAT_DTYPES = [
    pytest.param(torch.float32, id="float32"),
    pytest.param(torch.float64, id="float64"),
    pytest.param(torch.bfloat16, id="bfloat16"),
    pytest.param(torch.float16, id="float16"),
]

# Relative tolerance of a result stored in each dtype (about a few units of its last place).
DTYPE_RTOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped where none is present)")


def pytest_runtest_setup(item):
    if item.get_closest_marker("cuda") is not None and not HAS_CUDA:
        pytest.skip("CUDA is not available")


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Each device of the grid: cpu, and cuda (skipped without a CUDA device)."""
    return request.param


@pytest.fixture(params=FLOAT_DTYPES)
def dtype(request) -> torch.dtype:
    """Each floating dtype of the grid: float32, float64, bfloat16, float16."""
    return request.param


@pytest.fixture(autouse=True)
def _fixed_seed_and_threads():
    """A fixed seed and the suite's thread count for every test; restored afterwards."""
    torch.manual_seed(0)
    yield
    torch.set_num_threads(NUM_THREADS)


def tensor(x, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """pytorch_scatter's helper: a tensor of the grid's dtype and device (None stays None)."""
    return None if x is None else torch.tensor(x, dtype=dtype, device=device)
