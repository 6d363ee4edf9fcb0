"""The checkpoint file of a training run: its format, the atomic write, loading, and the
housekeeping of a run folder (stale temporaries, the metrics log after a resume).

A checkpoint is one ``torch.save`` dict holding only tensors and plain Python values, so it loads
with ``weights_only=True`` (no code runs on load). Keys: ``format`` / ``format_version``, the
versions of gnsm and torch, ``model`` and ``ema`` state dicts, ``optimizer`` / ``scheduler`` states,
``step``, ``rng`` (global RNG states), ``schedule``, ``field_sizes``, ``num_numerical``,
``model_config`` (rebuilds the network through :func:`gnsm.models.build_model`), ``train_config``,
``history`` / ``val_history``, ``best_val`` / ``best_step`` / ``bad_evals``.
"""
from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import nn

from ..core import Schedule, atomic_write, clean_stale_temps, temp_pattern
from ..models import build_model

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_NAMES", "CHECKPOINT_VERSION", "clean_checkpoint_temps",
           "load_checkpoint", "load_model", "trim_metrics", "write_checkpoint"]

CHECKPOINT_FORMAT = "gnsm.checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAMES = ("best.pt", "last.pt")
"""The files the trainer writes into ``config.checkpoint_dir``."""


def write_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """``torch.save`` ``state`` to ``path`` atomically (a temporary in the same folder, fsync, rename):
    a reader or a killed process never sees a partial file. Creates the folder."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, lambda f: torch.save(state, f))


def clean_checkpoint_temps(folder: str | os.PathLike) -> list:
    """Remove the temporaries a killed checkpoint write left in ``folder`` (``.last.pt.*.tmp``, ...).
    Returns the removed paths."""
    removed = []
    for name in CHECKPOINT_NAMES:
        removed += clean_stale_temps(folder, temp_pattern(name))
    return removed


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict:
    """Load a gnsm checkpoint with ``weights_only=True``; ``ValueError`` if it is not one."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint: no file at {path!r}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated or foreign pickle
        raise ValueError(f"checkpoint: {path!r} is not a readable gnsm checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint: {path!r} is not a gnsm checkpoint (missing format {CHECKPOINT_FORMAT!r})")
    if ckpt.get("format_version", 0) > CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint: format version {ckpt['format_version']} is newer than this gnsm "
                         f"({CHECKPOINT_VERSION}); upgrade gnsm")
    return ckpt


def load_model(path: str, ema: bool = True, map_location: str | torch.device = "cpu") -> tuple[nn.Module, Schedule]:
    """Rebuild the network of a checkpoint (EMA weights by default) and its schedule, in eval mode."""
    ckpt = load_checkpoint(path, map_location)
    if not ckpt.get("model_config"):
        raise ValueError(f"checkpoint: {path!r} holds no model config; rebuild the model yourself and load "
                         "ckpt['ema'] into it")
    model = build_model(ckpt["model_config"])
    model.load_state_dict(ckpt["ema" if ema else "model"])
    return model.eval(), Schedule.from_dict(ckpt["schedule"])


def _record_step(line: str) -> Any:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None  # a line cut short by a killed process
    return record.get("step") if isinstance(record, dict) else None


def trim_metrics(path: str | os.PathLike, step: int) -> int:
    """Drop the records of the JSONL metrics log ``path`` whose ``step`` is after ``step`` (and lines
    that are not complete JSON records), so a run resumed from the checkpoint of ``step`` does not log
    those steps twice. Rewrites the file atomically; returns the number of lines dropped."""
    if not os.path.isfile(path):
        return 0
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    kept = []
    for line in lines:
        s = _record_step(line)
        if isinstance(s, int) and not isinstance(s, bool) and s <= step:
            kept.append(line)
    dropped = len(lines) - len(kept)
    if dropped:
        data = "".join(line + "\n" for line in kept).encode("utf-8")
        atomic_write(path, lambda f: f.write(data))
    return dropped
