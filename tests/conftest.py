"""Fixtures shared by every test package (ops, models, detectors, ...).

The device x dtype grid follows pytorch_scatter's ``testing.py``: tests take the ``device`` and/or
``dtype`` fixtures (or parametrize over ``DEVICES`` / ``FLOAT_DTYPES``) and run once per entry.
CUDA entries carry the ``cuda`` marker and are skipped (not faked) where no CUDA device is present,
unless ``GNSM_CUDA_EMULATION=1``: then the ``cuda`` entries of the device grid run on CPU tensors through
the CUDA kernels compiled for CPU emulation (tests/cuda_emulation; ``scripts/test_cuda_emulated.sh``),
and the terminal summary says how many of them passed. Tests that need a real GPU (CUDA tensors,
graphs, streams; ``tests/ops/test_cuda_specific.py``) stay skipped.
The thread count is kept modest so the suite behaves the same on 2-core CI machines and on big
workstations, and every test starts from a fixed seed and the same thread count, whatever ran
before it.
"""
from __future__ import annotations

import os

import pytest
import torch

NUM_THREADS = max(1, min(2, torch.get_num_threads()))
torch.set_num_threads(NUM_THREADS)

HAS_CUDA = torch.cuda.is_available()
# The "cuda" entries through the emulated CUDA kernels (on CPU tensors) where no GPU is present.
EMULATE_CUDA = not HAS_CUDA and os.environ.get("GNSM_CUDA_EMULATION", "0") not in ("", "0")

DEVICES = [
    pytest.param(torch.device("cpu"), id="cpu"),
    pytest.param(torch.device("cpu"), id="cuda", marks=[pytest.mark.cuda, pytest.mark.cuda_emulated])
    if EMULATE_CUDA else pytest.param(torch.device("cuda", 0), id="cuda", marks=pytest.mark.cuda),
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
    config.addinivalue_line("markers", "cuda_emulated: a cuda entry run through the emulated CUDA kernels")
    if EMULATE_CUDA:
        import cuda_emulation

        try:
            cuda_emulation.load()
        except (FileNotFoundError, RuntimeError, OSError) as err:
            raise pytest.UsageError(f"GNSM_CUDA_EMULATION=1: cannot load the emulated CUDA kernels: {err}") from err


def pytest_runtest_setup(item):
    if item.get_closest_marker("cuda") is not None and not HAS_CUDA:
        if item.get_closest_marker("cuda_emulated") is None:
            pytest.skip("CUDA is not available" + (" (needs a real GPU; not emulated)" if EMULATE_CUDA else ""))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    if item.get_closest_marker("cuda_emulated") is None:
        yield
        return
    import cuda_emulation

    # tests/ops/test_validation.py checks that each bad input is rejected by the call itself: on CUDA
    # that is the opt-in eager mode (by default the kernels report bad values to the next call,
    # tested in tests/ops/test_device_checks.py).
    eager = item.path.name == "test_validation.py"
    saved = os.environ.get("GNSM_VALIDATE")
    if eager:
        os.environ["GNSM_VALIDATE"] = "eager"
    try:
        with cuda_emulation.emulated_cuda():
            yield
    finally:
        if eager:
            if saved is None:
                os.environ.pop("GNSM_VALIDATE", None)
            else:
                os.environ["GNSM_VALIDATE"] = saved


_EMULATED = {"passed": 0, "failed": 0, "skipped": 0}


def pytest_runtest_logreport(report):
    if EMULATE_CUDA and "cuda_emulated" in report.keywords:
        if report.when == "call" or (report.when == "setup" and not report.passed):
            _EMULATED["skipped" if report.skipped else "passed" if report.passed else "failed"] += 1


def pytest_terminal_summary(terminalreporter):
    if EMULATE_CUDA:
        e = _EMULATED
        failed = f", {e['failed']} failed" if e["failed"] else ""
        terminalreporter.write_line(
            f"CUDA kernels under CPU emulation: {e['passed']} passed, {e['skipped']} skipped{failed}")


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
