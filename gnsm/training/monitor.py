"""Health checks of a training run: non-finite losses, gradients or weights, and a relapsed loss."""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["all_finite", "first_non_finite", "loss_relapse"]


def all_finite(*modules: nn.Module) -> bool:
    """True when every floating parameter and buffer of ``modules`` is finite (one device sync)."""
    tensors = [t for m in modules for t in (*m.parameters(), *m.buffers()) if t.is_floating_point()]
    if not tensors:
        return True
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def first_non_finite(values: Iterable[float], steps: Iterable[int]) -> int | None:
    """The step of the first non-finite value, or None."""
    for v, s in zip(values, steps):
        if not math.isfinite(v):
            return s
    return None


def loss_relapse(history: Sequence[float], window: int = 20, min_drop: float = 0.05,
                 back: float = 0.9) -> tuple[float, float, float] | None:
    """Detects a run whose loss fell and then went back to where it started (a diverged run that
    settled on a trivial solution, seen with a too-high lr on 3-D volumes): returns (start, best,
    now) of the ``window``-step mean loss when the loss first dropped by more than ``min_drop`` of
    its start and has since recovered at least ``back`` of that drop, else None."""
    n = len(history)
    if n < 3 * window:
        return None
    start = float(np.mean(history[:window]))
    csum = np.concatenate([[0.0], np.cumsum(np.asarray(history, dtype=np.float64))])
    means = (csum[window:] - csum[:-window]) / window
    best, now = float(means.min()), float(means[-1])
    drop = start - best
    # the drop must also stand out of the step-to-step noise of a window mean (a flat noisy run is no relapse)
    noise = float(np.std(history[-5 * window:])) / math.sqrt(window)
    if start > 0 and drop > max(min_drop * start, 6 * noise) and now - best >= back * drop:
        return start, best, now
    return None
