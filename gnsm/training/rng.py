"""Counter-based randomness of the trainer, and the save / restore of the global RNG states.

Every random draw of a training step comes from a generator seeded by :func:`key` of integers
``(seed, purpose, step, shard, ...)``, so a step's batch, temperatures and noise are pure functions
of those integers: a resumed run needs only the step counter to reproduce them. The global states
(torch CPU / CUDA, numpy, python) are saved too, for whatever in a model draws from them (dropout).
"""
from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["GAUSS", "LEVEL", "NOISE", "PERM", "REF", "VAL", "generator", "global_rng_state", "key",
           "set_global_rng_state", "splitmix64"]

_MASK63 = (1 << 63) - 1
_MASK64 = (1 << 64) - 1

# Purposes: one independent stream per kind of draw.
PERM, LEVEL, NOISE, GAUSS, REF, VAL = range(1, 7)


def splitmix64(x: int) -> int:
    """The SplitMix64 finalizer: a bijective mix of a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def key(*parts: int) -> int:
    """A 63-bit key mixing integers (seed, purpose, step, shard, ...)."""
    h = 0x243F6A8885A308D3
    for p in parts:
        h = splitmix64(h ^ (int(p) & _MASK64))
    return h & _MASK63


def generator(seed_key: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed_key``."""
    g = torch.Generator(device=device)
    g.manual_seed(seed_key)
    return g


def global_rng_state() -> dict:
    """The torch (CPU and every CUDA device), numpy and python global RNG states, as tensors and
    plain Python values (so a checkpoint holding them loads with ``weights_only=True``)."""
    np_state = np.random.get_state(legacy=False)
    py = random.getstate()
    return {
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": torch.from_numpy(np.asarray(np_state["state"]["key"]).astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "python": [py[0], list(py[1]), py[2]],
    }


def set_global_rng_state(state: dict) -> None:
    """Restore what :func:`global_rng_state` returned (CUDA states only onto as many devices)."""
    torch.set_rng_state(state["torch_cpu"].cpu())
    cuda = state.get("torch_cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    npst = state["numpy"]
    np.random.set_state({"bit_generator": npst["bit_generator"],
                         "state": {"key": npst["key"].numpy().astype(np.uint32), "pos": npst["pos"]},
                         "has_gauss": npst["has_gauss"], "gauss": npst["gauss"]})
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
