"""Thread discipline: gnsm sets the torch intra-op and BLAS thread counts itself.

Why: on a 2-core machine two torch threads measured up to 10x slower than one when the other core
was busy (oversubscription: each op waits for its slowest thread), and a multi-threaded BLAS made a
scikit-learn GaussianMixture fit about 100x slower (many tiny matrix products, each paying the
thread fork/join). The rule, :func:`default_num_threads`:

* machines with <= 2 usable cores (CPU affinity / cgroup aware through ``os.sched_getaffinity``): 1
  thread, leaving a core to the data pipeline, the OS and whatever else runs;
* larger machines: ``usable_cores - 1`` capped at 16, again leaving a core to the data loader;
  beyond ~16 threads per process the small per-step ops of these networks stop scaling.

Override with the environment variable ``GNSM_NUM_THREADS`` (an integer >= 1) or by passing ``n``.
``limit_blas_threads(n)`` is a context manager for scikit-learn fits (density heads, baselines).
"""
from __future__ import annotations

import contextlib
import os
import warnings

import torch

ENV_VAR = "GNSM_NUM_THREADS"
_configured: int | None = None


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def default_num_threads() -> int:
    """The thread count gnsm uses when neither ``n`` nor ``GNSM_NUM_THREADS`` says otherwise."""
    cores = usable_cores()
    return 1 if cores <= 2 else min(cores - 1, 16)


def _env_threads() -> int | None:
    raw = os.environ.get(ENV_VAR)
    if raw is None or raw.strip() == "":
        return None
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"{ENV_VAR}: expected a positive integer, got {raw!r}") from None
    if n < 1:
        raise ValueError(f"{ENV_VAR}: expected a positive integer, got {raw!r}")
    return n


def resolve_num_threads(n: int | None = None) -> int:
    """``n`` if given, else ``GNSM_NUM_THREADS``, else :func:`default_num_threads`."""
    if n is not None:
        if int(n) < 1:
            raise ValueError(f"n: expected a positive number of threads, got {n}")
        return int(n)
    env = _env_threads()
    return env if env is not None else default_num_threads()


def configure_threads(n: int | None = None) -> int:
    """Set torch intra-op threads and the BLAS/OpenMP pools (threadpoolctl) to ``n``; return ``n``.

    Process-wide. Inter-op threads are left alone (they can only be set before first use).
    """
    global _configured
    n = resolve_num_threads(n)
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        warnings.warn("threadpoolctl is not installed: BLAS thread counts are not limited", RuntimeWarning)
    _configured = n
    return n


def ensure_configured() -> int:
    """Configure threads once per process (the trainer and detectors call this); later calls are no-ops."""
    return _configured if _configured is not None else configure_threads()


@contextlib.contextmanager
def limit_blas_threads(n: int | None = None):
    """Limit the BLAS / OpenMP thread pools inside the block (for scikit-learn fits), then restore them."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=resolve_num_threads(n)):
        yield
