"""The training engine under both detectors: one loop for tabular records and label volumes.

What one step does (DESIGN 1.2-1.5): draw the global batch and one temperature index per record,
relax the integer labels with the fused op (no one-hot), add Gaussian noise ``sigma_i * eps`` to the
numerical columns (sigma paired with tau by index), run the network on ``[numerical | fields]`` with
``log tau``, and take the fused score-matching loss (plus Gaussian DSM ``0.5 ||s + eps/sigma||^2``
for the numerical columns). AdamW, gradient clipping, linear warm-up + cosine decay, an EMA of the
weights (used for validation and by the detectors), bf16 autocast on CUDA, ``channels_last_3d`` for
3D networks on CUDA, optional ``torch.compile``.

Determinism and resume: the batch composition, the temperature draws and the noise of a step are
pure functions of ``(seed, step, shard)`` (counter-based: Philox ``rng_state = [key(seed, shard),
step]`` for the Gumbel noise, seeded generators for the rest), so a resumed run needs only the
step counter plus the saved model / EMA / optimizer / scheduler states to reproduce the loss
trajectory of an uninterrupted run exactly. The global RNG states (torch CPU/CUDA, numpy, python)
are saved and restored too, for anything in the model that draws from them (dropout).

Sharding: a step's global batch (``batch_size``) is split into ``world_size * accum_steps`` equal
shards; shard ``k = rank * accum_steps + m`` is micro-batch ``m`` of rank ``rank`` and has its own
noise stream. So a DDP run on W ranks equals a single-process run with ``accum_steps = W`` (same
global batch, same noise) up to float summation order; the DDP test checks exactly that.

Loss scale: tabular losses are summed over fields and averaged over records (the paper's);
volume losses are additionally averaged over positions (per-voxel mean), so the learning rate and
gradient clip do not depend on the patch size.

Checkpoints (``torch.save`` dict, loaded with ``weights_only=True``, written atomically): see
:meth:`Trainer.checkpoint_state` and ``docs/training.md``.
"""
from __future__ import annotations

import copy
import json
import math
import os
import random
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, fields as dc_fields
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

import gnsm
from gnsm import ops
from gnsm.ops import reference
from gnsm.data.tensors import TabularData
from gnsm.core.schedule import Schedule
from gnsm.core.threads import configure_threads, ensure_configured

__all__ = ["TrainConfig", "TrainResult", "Trainer", "TabularData", "load_checkpoint", "load_model",
           "init_distributed", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "gnsm.checkpoint"
CHECKPOINT_VERSION = 1
_MASK63 = (1 << 63) - 1
_MASK64 = (1 << 64) - 1


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 256            # global batch (over ranks and accumulation micro-batches)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0           # max global grad norm; <= 0 disables clipping
    ema_decay: float = 0.999
    kind: str = "kl"                 # "kl" or "mse" (DESIGN 1.4)
    eps: float = 1e-5
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
    # beyond the agreed core
    accum_steps: int = 1             # gradient-accumulation micro-batches per step
    ops_backend: str = "fused"       # "fused" (gnsm.ops) or "reference" (plain PyTorch, for benchmarks)
    log_every: int = 10
    val_batch_size: int | None = None
    channels_last: bool | None = None  # None: channels_last_3d for 3D networks on CUDA
    dsm_weighting: str = "none"      # numerical DSM weight: "none" (DESIGN 1.4) or "sigma2"
    num_threads: int | None = None   # torch/BLAS threads (None: gnsm.threads rule / GNSM_NUM_THREADS)

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
        if self.warmup_steps < 0 or self.lr <= 0:
            raise ValueError("config.warmup_steps must be >= 0 and config.lr > 0")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dc_fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


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


@dataclass
class TrainResult:
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


# ---- counter-based randomness ----------------------------------------------------------------

def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _key(*parts: int) -> int:
    """A 63-bit key mixing integers (seed, purpose, step, shard, ...)."""
    h = 0x243F6A8885A308D3
    for p in parts:
        h = _splitmix64(h ^ (int(p) & _MASK64))
    return h & _MASK63


def _generator(key: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(key)
    return g


_PERM, _LEVEL, _NOISE, _GAUSS, _REF, _VAL = range(1, 7)


class _WarmupCosine:
    """Linear warm-up to 1 then cosine decay to 0 at ``total`` (a plain object: its state pickles safely)."""

    def __init__(self, warmup: int, total: int):
        self.warmup = int(warmup)
        self.total = int(total)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(self.total - self.warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(step - self.warmup, span) / span))


class _ResumableDistributedSampler(DistributedSampler):
    """DistributedSampler that can start an epoch part-way (resume without replaying the loader)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.start = 0

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


# ---- distributed helpers -----------------------------------------------------------------------

def init_distributed(backend: str | None = None) -> tuple[int, int]:
    """Initialize ``torch.distributed`` from torchrun's environment when ``WORLD_SIZE > 1``.

    Returns ``(rank, world_size)``; ``(0, 1)`` when not distributed.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ---- checkpoint I/O ----------------------------------------------------------------------------

def _atomic_save(obj: Any, path: str) -> None:
    """Write to a temporary file in the target folder, fsync, then ``os.replace``: never a partial file."""
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


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
    from gnsm.models import build_model

    ckpt = load_checkpoint(path, map_location)
    if not ckpt.get("model_config"):
        raise ValueError(f"checkpoint: {path!r} holds no model config; rebuild the model yourself and load "
                         "ckpt['ema'] into it")
    model = build_model(ckpt["model_config"])
    model.load_state_dict(ckpt["ema" if ema else "model"])
    return model.eval(), Schedule.from_dict(ckpt["schedule"])


def _rng_state() -> dict:
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


def _set_rng_state(state: dict) -> None:
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


# ---- the trainer -------------------------------------------------------------------------------

def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


class Trainer:
    """Train a score network (see :mod:`gnsm.models` for the interface) on tabular records or label patches.

    Args:
        model: the network; ``model.field_sizes`` / ``model.num_numerical`` must match when present.
        schedule: temperatures (and sigmas) to train on; stored in the checkpoints.
        config: :class:`TrainConfig`.
        field_sizes: ``[K_1, ..., K_J]`` for tabular fields (codes ``(n, J)``) or an int K for masks /
            label volumes (patches ``(*spatial)``); a list with volumes means patches ``(J, *spatial)``.
        num_numerical: D numerical columns (tabular only).
    """

    def __init__(self, model: nn.Module, schedule: Schedule, config: TrainConfig,
                 field_sizes: Sequence[int] | int, num_numerical: int = 0):
        if isinstance(field_sizes, bool):
            raise ValueError("field_sizes: expected an int or a list of ints")
        self.single_field = isinstance(field_sizes, (int, np.integer))
        self.field_sizes: int | list[int] = int(field_sizes) if self.single_field else [int(k) for k in field_sizes]
        self.sizes = [self.field_sizes] if self.single_field else list(self.field_sizes)
        if not self.sizes or any(k < 1 for k in self.sizes):
            raise ValueError(f"field_sizes: expected at least one field with K >= 1, got {field_sizes}")
        self.num_numerical = int(num_numerical)
        if self.num_numerical < 0:
            raise ValueError(f"num_numerical: expected >= 0, got {num_numerical}")
        model_fs = getattr(model, "field_sizes", None)
        if model_fs is not None and (list(model_fs) if not isinstance(model_fs, int) else [model_fs]) != self.sizes:
            raise ValueError(f"field_sizes: the model was built for {model_fs}, the trainer got {field_sizes}")
        model_d = getattr(model, "num_numerical", None)
        if model_d is not None and int(model_d) != self.num_numerical:
            raise ValueError(f"num_numerical: the model was built for {model_d}, the trainer got {num_numerical}")
        self.schedule = schedule
        self.config = config
        if config.num_threads is None:
            ensure_configured()
        else:
            configure_threads(config.num_threads)
        self.rank, self.world_size = _dist_info()
        self.device = self._resolve_device(config.device)
        self.amp_dtype = self._resolve_amp(config.amp)
        self.model = model.to(self.device)
        self.ema = copy.deepcopy(self.model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.spatial_dims = getattr(model, "spatial_dims", None)
        cl = config.channels_last
        self.channels_last = (self.device.type == "cuda" and self.spatial_dims == 3) if cl is None else bool(cl)
        if self.channels_last and self.spatial_dims == 3:
            self.model.to(memory_format=torch.channels_last_3d)
        self.net: nn.Module = self.model
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DDP(self.model, device_ids=ids)
        if config.compile:
            self.net = torch.compile(self.net)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _WarmupCosine(config.warmup_steps,
                                                                                        config.steps))
        self.taus = schedule.taus().to(self.device)
        self.log_taus = self.taus.log()
        self.sigmas = schedule.sigmas().to(self.device)
        self.step = 0
        self.history: list[float] = []
        self._relapse_warned = False
        self.val_history: list[tuple[int, float]] = []
        self.best_val: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        shards = self.world_size * config.accum_steps
        if config.batch_size % shards:
            raise ValueError(f"config.batch_size: {config.batch_size} is not divisible by world_size * accum_steps "
                             f"= {shards}")
        self.shard_batch = config.batch_size // shards

    # -- setup helpers
    @staticmethod
    def _resolve_device(device: str) -> torch.device:
        if device == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            return torch.device("cpu")
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:  # DDP needs the index (init_distributed set it)
            dev = torch.device("cuda", torch.cuda.current_device())
        return dev

    def _resolve_amp(self, amp: str) -> torch.dtype | None:
        if amp == "off" or (amp == "auto" and self.device.type != "cuda"):
            return None
        return torch.bfloat16

    @property
    def ema_model(self) -> nn.Module:
        """The EMA copy of the network (eval mode): what validation and the detectors use."""
        return self.ema

    # -- one shard's loss
    def _loss(self, net: nn.Module, labels: torch.Tensor, numerical: torch.Tensor | None, levels: torch.Tensor,
              shard: int, step: int, purpose: int = _NOISE, cond: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        D = self.num_numerical
        tau = self.taus[levels]
        log_tau = self.log_taus[levels]
        y_dtype = self.amp_dtype or torch.float32
        key = _key(cfg.seed, purpose, shard)
        if cfg.ops_backend == "fused":
            state = torch.tensor([key, step], dtype=torch.int64, device=self.device)
            y, state = ops.relax_from_labels(labels, self.field_sizes, tau, eps=cfg.eps, dtype=y_dtype,
                                             rng_state=state)
        else:
            lab = labels.unsqueeze(1) if self.single_field else labels
            for j, k in enumerate(self.sizes):
                lj = lab[:, j]
                if lj.numel() and (int(lj.min()) < 0 or int(lj.max()) >= k):
                    raise ValueError(f"labels: expected values in [0, {k}) for field {j}, found "
                                     f"{int(lj.max()) if int(lj.max()) >= k else int(lj.min())}")
            g = reference.sample_gumbel((lab.shape[0], sum(self.sizes), *lab.shape[2:]),
                                        generator=_generator(_key(key, step, _REF), self.device), device=self.device)
            y = reference.relax_from_labels(lab, self.sizes, tau, g, cfg.eps).to(y_dtype)
        if D:
            gen = _generator(_key(cfg.seed, _GAUSS if purpose == _NOISE else purpose + 100, shard, step))
            noise = torch.randn(numerical.shape, generator=gen).to(self.device)
            sigma = self.sigmas[levels]
            x = numerical + sigma[:, None] * noise
            y = torch.cat([x.to(y.dtype), y], dim=1)
        if self.channels_last and y.dim() == 5:
            y = y.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            out = net(y, log_tau, cond) if cond is not None else net(y, log_tau)
        out_cat = out[:, D:] if D else out
        if cfg.ops_backend == "fused":
            loss = ops.score_matching_loss(out_cat, state, self.field_sizes, tau, kind=cfg.kind, reduction="mean")
        else:
            loss = reference.score_matching_loss(out_cat.float(), g, tau, self.sizes, kind=cfg.kind)
        positions = math.prod(labels.shape[1 if self.single_field else 2:])
        if positions > 1:
            loss = loss / positions
        if D:
            per_record = reference.gaussian_dsm_loss(out[:, :D].float(), noise, sigma)
            if cfg.dsm_weighting == "sigma2":
                per_record = per_record * sigma.square()
            loss = loss + per_record.mean()
        return loss

    # -- data
    def _tabular_indices(self, n: int, step: int) -> torch.Tensor:
        """Global batch of step ``step``: consecutive slices of per-epoch permutations (a pure function)."""
        B = self.config.batch_size
        start, stop = step * B, (step + 1) * B
        parts = []
        for epoch in range(start // n, (stop - 1) // n + 1):
            if self._perm_epoch != epoch:
                self._perm = torch.randperm(n, generator=_generator(_key(self.config.seed, _PERM, epoch)))
                self._perm_epoch = epoch
            lo, hi = max(start - epoch * n, 0), min(stop - epoch * n, n)
            parts.append(self._perm[lo:hi])
        return torch.cat(parts)

    def _levels(self, step: int, count: int) -> torch.Tensor:
        return self.schedule.sample_indices(count, generator=_generator(_key(self.config.seed, _LEVEL, step)))

    def _check_data(self, data, name: str):
        if isinstance(data, TabularData):
            if self.single_field:
                raise ValueError(f"{name}: tabular data needs field_sizes as a list of K_j")
            data.check_layout(self.sizes, self.num_numerical, name)
            return "tabular"
        if isinstance(data, Dataset):
            try:
                n = len(data)
            except TypeError:
                raise ValueError(f"{name}: expected a map-style Dataset with a length") from None
            if n == 0:
                raise ValueError(f"{name}: the dataset is empty")
            if self.num_numerical:
                raise ValueError(f"{name}: volume datasets carry no numerical columns (num_numerical must be 0)")
            return "volume"
        raise TypeError(f"{name}: expected TabularData or a torch Dataset, got {type(data).__name__}")

    @staticmethod
    def _split_item(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(batch, dict):
            return batch["labels"], batch.get("cond")
        if isinstance(batch, (list, tuple)):
            return batch[0], (batch[1] if len(batch) > 1 else None)
        return batch, None

    # -- EMA
    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        ema_p = [p for p in self.ema.parameters()]
        cur_p = [p.detach() for p in self.model.parameters()]
        torch._foreach_lerp_(ema_p, cur_p, 1.0 - decay)
        for b_ema, b in zip(self.ema.buffers(), self.model.buffers()):
            b_ema.copy_(b)

    # -- validation
    @torch.no_grad()
    def evaluate(self, val) -> float:
        """Mean validation loss of the EMA weights over all temperatures of the schedule (fixed noise)."""
        kind = self._check_data(val, "val")
        model = self.ema
        bs = self.config.val_batch_size or self.shard_batch
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        count = torch.zeros((), dtype=torch.float64, device=self.device)
        N = self.schedule.n
        if kind == "tabular":
            n = len(val)
            batches = [(i, slice(s, min(s + bs, n))) for i, s in enumerate(range(0, n, bs))]
            batches = batches[self.rank::self.world_size]
            items = ((i, val.codes[sl].to(self.device),
                      None if val.numerical is None else val.numerical[sl].to(self.device), None) for i, sl in batches)
        else:
            sampler = DistributedSampler(val, self.world_size, self.rank, shuffle=False) if self.world_size > 1 else None
            loader = DataLoader(val, batch_size=bs, sampler=sampler, num_workers=self.config.num_workers)

            def gen():
                for i, b in enumerate(loader):
                    lab, cond = self._split_item(b)
                    yield (i * self.world_size + self.rank, lab.to(self.device), None,
                           None if cond is None else cond.to(self.device))
            items = gen()
        for i, codes, num, cond in items:
            b = codes.shape[0]
            for level in range(N):
                levels = torch.full((b,), level, dtype=torch.long, device=self.device)
                loss = self._loss(model, codes, num, levels, shard=i, step=level, purpose=_VAL, cond=cond)
                total += loss.double() * b
                count += b
        if self.world_size > 1:
            both = torch.stack([total, count])
            dist.all_reduce(both)
            total, count = both[0], both[1]
        return float(total / count.clamp_min(1))

    # -- checkpoints
    def checkpoint_state(self) -> dict:
        model = _unwrap(self.model)
        cfg = getattr(model, "config", None)
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "gnsm_version": gnsm.__version__,
            "torch_version": str(torch.__version__),
            "model": model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "rng": _rng_state(),
            "schedule": self.schedule.to_dict(),
            "field_sizes": self.field_sizes,
            "num_numerical": self.num_numerical,
            "model_config": cfg() if callable(cfg) else None,
            "train_config": asdict(self.config),
            "history": list(self.history),
            "val_history": [[int(s), float(v)] for s, v in self.val_history],
            "best_val": self.best_val,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
        }

    def save_checkpoint(self, path: str) -> None:
        """Write a checkpoint atomically (only on rank 0; other ranks return immediately)."""
        if self.rank != 0:
            return
        _atomic_save(self.checkpoint_state(), path)

    def _check_compatible(self, ckpt: dict, source: str) -> None:
        fs = ckpt.get("field_sizes")
        if (fs if isinstance(fs, int) else list(fs or [])) != self.field_sizes:
            raise ValueError(f"checkpoint {source}: field layout {fs} does not match the trainer's {self.field_sizes}")
        if int(ckpt.get("num_numerical", 0)) != self.num_numerical:
            raise ValueError(f"checkpoint {source}: {ckpt.get('num_numerical')} numerical columns, the trainer has "
                             f"{self.num_numerical}")
        if ckpt.get("schedule") != self.schedule.to_dict():
            raise ValueError(f"checkpoint {source}: schedule {ckpt.get('schedule')} differs from the trainer's "
                             f"{self.schedule.to_dict()}")
        cfg = getattr(_unwrap(self.model), "config", None)
        if callable(cfg) and ckpt.get("model_config") is not None and ckpt["model_config"] != cfg():
            raise ValueError(f"checkpoint {source}: model config {ckpt['model_config']} differs from the model's "
                             f"{cfg()}")

    def restore(self, ckpt: dict | str) -> None:
        """Load a checkpoint (a path or a loaded dict) into this trainer, after checking the layout."""
        source = ckpt if isinstance(ckpt, str) else "<dict>"
        if isinstance(ckpt, str):
            ckpt = load_checkpoint(ckpt, map_location="cpu")
        self._check_compatible(ckpt, source)
        try:
            _unwrap(self.model).load_state_dict(ckpt["model"])
            self.ema.load_state_dict(ckpt["ema"])
        except RuntimeError as exc:
            raise ValueError(f"checkpoint {source}: weights do not fit the model ({exc})") from exc
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.step = int(ckpt["step"])
        self.history = [float(x) for x in ckpt.get("history", [])]
        self.val_history = [(int(s), float(v)) for s, v in ckpt.get("val_history", [])]
        self.best_val = ckpt.get("best_val")
        self.best_step = ckpt.get("best_step")
        self.bad_evals = int(ckpt.get("bad_evals", 0))
        _set_rng_state(ckpt["rng"])

    load_state = restore

    @classmethod
    def load_checkpoint(cls, path: str, config: TrainConfig | None = None, **overrides) -> "Trainer":
        """Rebuild a trainer (network from ``model_config``, schedule, layout) from a checkpoint."""
        from gnsm.models import build_model

        ckpt = load_checkpoint(path)
        if not ckpt.get("model_config"):
            raise ValueError(f"checkpoint {path!r}: holds no model config; build the Trainer yourself and call "
                             "restore(path)")
        if config is None:
            config = TrainConfig.from_dict({**ckpt.get("train_config", {}), **overrides})
        trainer = cls(build_model(ckpt["model_config"]), Schedule.from_dict(ckpt["schedule"]), config,
                      ckpt["field_sizes"], ckpt.get("num_numerical", 0))
        trainer.restore(ckpt)
        return trainer

    # -- the loop
    def _check_relapse(self) -> None:
        """Warns once (and logs) when the training loss has gone back to its starting level."""
        if self._relapse_warned or self.step % (10 * self.config.log_every):
            return  # checking every 10th log interval keeps the cost negligible
        found = loss_relapse(self.history)
        if found is None:
            return
        self._relapse_warned = True
        start, best, now = found
        msg = (f"training loss went back to its starting level at step {self.step} (start {start:.4g}, "
               f"best {best:.4g}, now {now:.4g}): the run has likely diverged; lower the learning rate "
               f"(config.lr = {self.config.lr:g}) or raise the batch size")
        if self.rank == 0:
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
        self._log({"step": self.step, "warning": msg})

    def _log(self, record: dict) -> None:
        if self.rank == 0 and self.config.metrics_file:
            folder = os.path.dirname(os.path.abspath(self.config.metrics_file))
            os.makedirs(folder, exist_ok=True)
            with open(self.config.metrics_file, "a") as f:
                f.write(json.dumps(record) + "\n")

    def _reduce_mean(self, values: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            values = values.clone()
            dist.all_reduce(values)
            values /= self.world_size
        return values

    def fit(self, train, val=None, resume: str | None = None) -> TrainResult:
        """Train to ``config.steps`` (or early stop); ``resume``: a checkpoint path to continue from."""
        cfg = self.config
        kind = self._check_data(train, "train")
        if val is not None:
            vkind = self._check_data(val, "val")
            if vkind != kind:
                raise ValueError(f"val: expected {kind} data like train, got {vkind}")
        if resume is not None:
            self.restore(resume)
        ckpt_dir = cfg.checkpoint_dir
        self._perm_epoch = None
        start_step = self.step
        unit = "records/s"
        loader_iter = None
        if kind == "tabular":
            codes_all = train.codes
            num_all = train.numerical
            n = len(train)
        else:
            local_batch = self.shard_batch * cfg.accum_steps
            sampler = _ResumableDistributedSampler(train, num_replicas=self.world_size, rank=self.rank,
                                                   shuffle=True, seed=cfg.seed, drop_last=True)
            steps_per_epoch = sampler.num_samples // local_batch
            if steps_per_epoch == 0:
                raise ValueError(f"train: {len(train)} samples are fewer than one global batch ({cfg.batch_size})")
            unit = "voxels/s"

            def start_epoch(step: int):
                epoch, within = divmod(step, steps_per_epoch)
                sampler.set_epoch(epoch)
                sampler.start = within * local_batch
                if hasattr(train, "set_epoch"):
                    train.set_epoch(epoch)
                loader = DataLoader(train, batch_size=local_batch, sampler=sampler, num_workers=cfg.num_workers,
                                    drop_last=True, pin_memory=self.device.type == "cuda")
                return iter(loader)

        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not cfg.progress or self.rank != 0,
                   desc="gnsm train", unit="step", dynamic_ncols=True)
        pending: list[torch.Tensor] = []
        units_done = 0.0
        t0 = time.perf_counter()
        t_last, units_last = t0, 0.0
        stopped_early = False
        self.net.train()
        try:
            while self.step < cfg.steps:
                step = self.step
                levels_all = self._levels(step, cfg.batch_size)
                if kind == "tabular":
                    idx = self._tabular_indices(n, step)
                else:
                    if loader_iter is None or step % steps_per_epoch == 0:
                        loader_iter = start_epoch(step)
                    batch = next(loader_iter)
                    labels_local, cond_local = self._split_item(batch)
                self.optimizer.zero_grad(set_to_none=True)
                step_loss = torch.zeros((), device=self.device)
                for m in range(cfg.accum_steps):
                    shard = self.rank * cfg.accum_steps + m
                    sl = slice(shard * self.shard_batch, (shard + 1) * self.shard_batch)
                    levels = levels_all[sl].to(self.device)
                    cond = None
                    if kind == "tabular":
                        labels = codes_all[idx[sl]].to(self.device, non_blocking=True)
                        num = None if num_all is None else num_all[idx[sl]].to(self.device, non_blocking=True)
                    else:
                        lsl = slice(m * self.shard_batch, (m + 1) * self.shard_batch)
                        labels = labels_local[lsl].to(self.device, non_blocking=True)
                        num = None
                        if cond_local is not None:
                            cond = cond_local[lsl].to(self.device, non_blocking=True)
                    sync_ctx = (self.net.no_sync() if self.world_size > 1 and m < cfg.accum_steps - 1
                                and hasattr(self.net, "no_sync") else _nullcontext())
                    with sync_ctx:
                        loss = self._loss(self.net, labels, num, levels, shard, step, cond=cond) / cfg.accum_steps
                        loss.backward()
                    step_loss += loss.detach()
                if cfg.grad_clip and cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                self._update_ema()
                pending.append(step_loss)
                per_step_units = cfg.batch_size * (1 if kind == "tabular" else math.prod(labels.shape[1:]))
                units_done += per_step_units
                bar.update(1)
                last = self.step == cfg.steps
                if self.step % cfg.log_every == 0 or last or self.step % cfg.val_every == 0:
                    losses = self._reduce_mean(torch.stack(pending).float()).tolist()
                    pending.clear()
                    if not all(math.isfinite(v) for v in losses):
                        raise FloatingPointError(f"training loss became non-finite at step {self.step}: {losses}")
                    self.history.extend(losses)
                    self._check_relapse()
                    now = time.perf_counter()
                    rate = (units_done - units_last) / max(now - t_last, 1e-9)
                    t_last, units_last = now, units_done
                    mean_loss = sum(losses) / len(losses)
                    bar.set_postfix(loss=f"{mean_loss:.4f}", **{unit.replace("/", "_per_"): f"{rate:.3g}"})
                    self._log({"step": self.step, "loss": mean_loss, "lr": self.scheduler.get_last_lr()[0],
                               unit.replace("/", "_per_"): rate, "time": now - t0})
                if self.step % cfg.val_every == 0 or last:
                    stop = self._validate_and_checkpoint(val, ckpt_dir)
                    self.net.train()
                    if stop:
                        stopped_early = True
                        break
        finally:
            bar.close()
        seconds = time.perf_counter() - t0
        return TrainResult(history=list(self.history), val_history=list(self.val_history), best_val=self.best_val,
                           best_step=self.best_step, steps_run=self.step, stopped_early=stopped_early,
                           checkpoint_dir=ckpt_dir, seconds=seconds,
                           throughput=units_done / max(seconds, 1e-9), throughput_unit=unit)

    def _validate_and_checkpoint(self, val, ckpt_dir: str | None) -> bool:
        improved = False
        if val is not None:
            v = self.evaluate(val)
            self.val_history.append((self.step, v))
            self._log({"step": self.step, "val_loss": v})
            if self.best_val is None or v < self.best_val:
                self.best_val, self.best_step, self.bad_evals = v, self.step, 0
                improved = True
            else:
                self.bad_evals += 1
        if ckpt_dir is not None:
            if improved:
                self.save_checkpoint(os.path.join(ckpt_dir, "best.pt"))
            self.save_checkpoint(os.path.join(ckpt_dir, "last.pt"))
            if self.world_size > 1:
                dist.barrier()
        return self.config.patience is not None and self.bad_evals >= self.config.patience


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
