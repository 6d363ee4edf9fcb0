"""A compact segmenter whose real predictions are the cases of the CamVid QC evaluation.

This is evaluation code, not a detector: :func:`train_segmenter` fits a small UNet (conv-BN-ReLU
blocks, max-pool down, bilinear up) on RGB frames and their label maps with cross-entropy (the void
label ignored, random horizontal mirroring), so that :func:`predict_probs` gives soft class
probabilities of frames it never saw. A fitted segmenter is saved atomically with
:func:`save_segmenter` and read back with :func:`load_segmenter`, so evaluations can reuse it.
"""
from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ...core.io import atomic_write_bytes

__all__ = ["Segmenter", "load_segmenter", "predict_probs", "save_segmenter", "train_segmenter"]


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Segmenter(nn.Module):
    """UNet segmenter: ``(B, in_channels, H, W)`` images -> ``(B, num_classes, H, W)`` logits (any H, W)."""

    def __init__(self, num_classes: int, in_channels: int = 3, channels: Sequence[int] = (24, 48, 96, 192)):
        super().__init__()
        ch = [int(c) for c in channels]
        self.num_classes, self.in_channels, self.channels = int(num_classes), int(in_channels), tuple(ch)
        self.register_buffer("mean", torch.zeros(in_channels))  # input normalization (set by train_segmenter)
        self.register_buffer("std", torch.ones(in_channels))
        self.down = nn.ModuleList([_block(c_in, c) for c_in, c in zip([in_channels] + ch[:-1], ch)])
        self.up = nn.ModuleList([_block(ch[i] + ch[i + 1], ch[i]) for i in reversed(range(len(ch) - 1))])
        self.head = nn.Conv2d(ch[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)
        skips = []
        for i, block in enumerate(self.down):
            if i:
                h = F.max_pool2d(h, 2, ceil_mode=True)
            h = block(h)
            skips.append(h)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, skip], dim=1))
        return self.head(h)

    def config(self) -> dict:
        return {"num_classes": self.num_classes, "in_channels": self.in_channels, "channels": list(self.channels)}


def train_segmenter(images: np.ndarray, labels: np.ndarray, num_classes: int, *, ignore_index: int | None = None,
                    epochs: int = 60, batch_size: int = 8, lr: float = 2e-3, weight_decay: float = 1e-4,
                    channels: Sequence[int] = (24, 48, 96, 192), seed: int = 0,
                    verbose: bool = False) -> tuple[Segmenter, dict]:
    """Fit a :class:`Segmenter` on ``images`` ``(n, C, H, W)`` float and ``labels`` ``(n, H, W)`` int.

    AdamW with a one-cycle cosine rate, cross-entropy ignoring ``ignore_index``, random horizontal
    mirroring. Returns the model (eval mode) and ``{"epochs", "seconds", "final_loss"}``.
    """
    if images.ndim != 4 or labels.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"images (n, C, H, W) and labels (n, H, W) do not match: {images.shape}, {labels.shape}")
    torch.manual_seed(int(seed))
    rng = np.random.default_rng(int(seed))
    model = Segmenter(num_classes, images.shape[1], channels)
    x_all = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    y_all = torch.from_numpy(np.ascontiguousarray(labels).astype(np.int64))
    model.mean.copy_(x_all.mean(dim=(0, 2, 3)))
    model.std.copy_(x_all.std(dim=(0, 2, 3)).clamp_min(1e-3))
    n = len(x_all)
    steps_per_epoch = max(n // batch_size, 1)
    total = int(epochs) * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.1)
    ignore = -100 if ignore_index is None else int(ignore_index)
    t0 = time.perf_counter()
    losses: list[float] = []
    model.train()
    for epoch in range(int(epochs)):
        perm = rng.permutation(n)
        for s in range(steps_per_epoch):
            idx = torch.from_numpy(perm[s * batch_size:(s + 1) * batch_size])
            x, y = x_all[idx], y_all[idx]
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            y = torch.where(flip.view(-1, 1, 1), y.flip(-1), y)
            loss = F.cross_entropy(model(x), y, ignore_index=ignore)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        if verbose:
            print(f"segmenter epoch {epoch + 1}/{epochs}: loss {np.mean(losses[-steps_per_epoch:]):.4f} "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
    model.eval()
    tail = losses[-steps_per_epoch:]
    return model, {"epochs": int(epochs), "batch_size": int(batch_size), "seconds": time.perf_counter() - t0,
                   "final_loss": float(np.mean(tail)) if tail else math.nan}


@torch.no_grad()
def predict_probs(model: Segmenter, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Softmax class probabilities ``(n, K, H, W)`` float32 of ``images`` ``(n, C, H, W)``."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size], dtype=np.float32))
        out.append(torch.softmax(model(x), dim=1).numpy())
    return np.concatenate(out)


def save_segmenter(model: Segmenter, path: str | Path, info: dict | None = None) -> None:
    """Write the segmenter (config, weights, ``info``) to ``path`` atomically."""
    buf = io.BytesIO()
    torch.save({"config": model.config(), "state": model.state_dict(), "info": info or {}}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_segmenter(path: str | Path) -> tuple[Segmenter, dict]:
    """Read a segmenter written by :func:`save_segmenter`; returns (model in eval mode, info)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg = ckpt["config"]
    model = Segmenter(cfg["num_classes"], cfg["in_channels"], cfg["channels"])
    model.load_state_dict(ckpt["state"])
    return model.eval(), dict(ckpt.get("info", {}))
