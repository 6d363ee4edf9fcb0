"""What a training run is told (:class:`TrainConfig`) and what it reports (:class:`TrainResult`)."""
from __future__ import annotations

from dataclasses import dataclass, fields as dc_fields

from ..core import PAPER_EPS

__all__ = ["TrainConfig", "TrainResult"]


@dataclass
class TrainConfig:
    """Options of :class:`gnsm.training.Trainer` (docs/training.md describes each)."""

    steps: int = 2000
    batch_size: int = 256            # global batch (over ranks and accumulation micro-batches)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0           # max global grad norm; <= 0 disables clipping
    ema_decay: float = 0.999
    kind: str = "kl"                 # "kl" or "mse": the divergence of the categorical score loss
    eps: float = PAPER_EPS           # clip of the one-hot before relaxing (non-true classes get log(eps))
    eps_levels: tuple[float, ...] | None = None  # one clip per schedule level (overrides eps); docs/training.md
    amp: str = "auto"                # "auto" (bf16 on CUDA, off on CPU), "bf16", "off"
    compile: bool = False
    val_every: int = 200
    patience: int | None = None      # validations without improvement before stopping
    checkpoint_dir: str | None = None
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    metrics_file: str | None = None  # JSONL, one line per log interval and per validation
    num_workers: int = 0
    accum_steps: int = 1             # gradient-accumulation micro-batches per step
    ops_backend: str = "fused"       # "fused" (gnsm.ops) or "reference" (plain PyTorch, for benchmarks)
    log_every: int = 10
    val_batch_size: int | None = None
    channels_last: bool | None = None  # None: channels_last_3d for 3D networks on CUDA
    dsm_weighting: str = "none"      # numerical DSM weight: "none" (plain DSM) or "sigma2" (times sigma^2)
    num_threads: int | None = None   # torch/BLAS threads (None: gnsm.core.threads rule / GNSM_NUM_THREADS)

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "val_every", "accum_steps", "log_every")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"config.{name}: expected a positive integer, got {getattr(self, name)}")
        if self.kind not in ("kl", "mse"):
            raise ValueError(f"config.kind: expected 'kl' or 'mse', got {self.kind!r}")
        if self.amp not in ("auto", "bf16", "off"):
            raise ValueError(f"config.amp: expected 'auto', 'bf16' or 'off', got {self.amp!r}")
        if self.ops_backend not in ("fused", "reference"):
            raise ValueError(f"config.ops_backend: expected 'fused' or 'reference', got {self.ops_backend!r}")
        if self.dsm_weighting not in ("none", "sigma2"):
            raise ValueError(f"config.dsm_weighting: expected 'none' or 'sigma2', got {self.dsm_weighting!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"config.ema_decay: expected a value in [0, 1), got {self.ema_decay}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"config.patience: expected None or >= 1, got {self.patience}")
        if self.eps_levels is not None:
            self.eps_levels = tuple(float(e) for e in self.eps_levels)
            if not self.eps_levels or not all(0.0 < e <= 1.0 for e in self.eps_levels):
                raise ValueError(f"config.eps_levels: expected values in (0, 1], got {self.eps_levels}")
        if self.warmup_steps < 0 or self.lr <= 0:
            raise ValueError("config.warmup_steps must be >= 0 and config.lr > 0")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A config from a dict (e.g. a checkpoint's ``train_config``); unknown keys are ignored."""
        names = {f.name for f in dc_fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainResult:
    """What :meth:`gnsm.training.Trainer.fit` returns."""

    history: list[float]                       # training loss per step (from step 1, resumed runs included)
    val_history: list[tuple[int, float]]       # (step, validation loss of the EMA weights)
    best_val: float | None
    best_step: int | None
    steps_run: int                             # the step counter at the end
    stopped_early: bool = False
    checkpoint_dir: str | None = None
    seconds: float = 0.0
    throughput: float = 0.0                    # records/s (tabular) or voxels/s (volumes) of this call
    throughput_unit: str = "records/s"
