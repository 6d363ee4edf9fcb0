"""The training engine under both detectors: one loop for tabular records and label volumes.

What one step does (docs/design.md): draw the global batch and one temperature index per record,
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

Failure policy: a non-finite training loss, gradient or validation loss stops the run with a
``FloatingPointError`` naming the step, checked before anything is written, so a checkpoint never
holds non-finite weights and a non-finite validation loss is never the best. Checkpoints: see
:mod:`gnsm.training.checkpoint`.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
import warnings
from dataclasses import asdict
from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from .. import __version__
from .. import ops
from ..core import FieldLayout, Schedule, configure_threads, ensure_configured
from ..data import TabularData
from ..models import build_model
from ..ops import reference
from . import rng
from .checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, clean_checkpoint_temps, load_checkpoint,
                         trim_metrics, write_checkpoint)
from .config import TrainConfig, TrainResult
from .distributed import ResumableDistributedSampler, dist_info
from .monitor import all_finite, first_non_finite, loss_relapse

__all__ = ["Trainer"]


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
        self.layout = FieldLayout.from_sizes(field_sizes)
        self.single_field = self.layout.single
        self.field_sizes: int | list[int] = self.layout.field_sizes
        self.sizes = list(self.layout.sizes)
        self.num_numerical = int(num_numerical)
        if self.num_numerical < 0:
            raise ValueError(f"num_numerical: expected >= 0, got {num_numerical}")
        model_fs = getattr(model, "field_sizes", None)
        if model_fs is not None and FieldLayout.from_sizes(model_fs, "model.field_sizes").sizes != self.layout.sizes:
            raise ValueError(f"field_sizes: the model was built for {model_fs}, the trainer got {field_sizes}")
        model_d = getattr(model, "num_numerical", None)
        if model_d is not None and int(model_d) != self.num_numerical:
            raise ValueError(f"num_numerical: the model was built for {model_d}, the trainer got {num_numerical}")
        self.schedule = schedule
        self.config = config
        if config.eps_levels is not None:
            if len(config.eps_levels) != schedule.n:
                raise ValueError(f"config.eps_levels: expected one clip per schedule level ({schedule.n}), got "
                                 f"{len(config.eps_levels)}")
            if config.ops_backend != "fused":
                raise ValueError("config.eps_levels: needs ops_backend='fused'")
        if config.num_threads is None:
            ensure_configured()
        else:
            configure_threads(config.num_threads)
        self.rank, self.world_size = dist_info()
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
        # fused: one kernel per update instead of PyTorch's default loop over parameters on a CPU, which is a
        # visible share of a small network's step (docs/tabular.md, Speed).
        params = list(self.model.parameters())
        fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay,
                                           fused=fused or None)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _WarmupCosine(config.warmup_steps,
                                                                                        config.steps))
        self.taus = schedule.taus().to(self.device)
        self.log_taus = self.taus.log()
        self.eps_levels = (None if config.eps_levels is None
                           else torch.tensor(config.eps_levels, dtype=torch.float32, device=self.device))
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
              shard: int, step: int, purpose: int = rng.NOISE, cond: torch.Tensor | None = None,
              checked: bool = False) -> torch.Tensor:
        """``checked``: the labels were range-checked with their data (tabular data is, up front); batches of a
        volume Dataset are not, so their labels are checked here."""
        cfg = self.config
        D = self.num_numerical
        tau = self.taus[levels]
        log_tau = self.log_taus[levels]
        y_dtype = self.amp_dtype or torch.float32
        key = rng.key(cfg.seed, purpose, shard)
        if cfg.ops_backend == "fused":
            state = torch.tensor([key, step], dtype=torch.int64, device=self.device)
            if self.eps_levels is not None:  # a clip per level: relax the per-record one-hot logits
                y, state = ops.relax_from_logits(self._level_logits(labels, levels, checked), self.field_sizes, tau,
                                                 dtype=y_dtype, rng_state=state)
            else:
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
                                        generator=rng.generator(rng.key(key, step, rng.REF), self.device), device=self.device)
            y = reference.relax_from_labels(lab, self.sizes, tau, g, cfg.eps).to(y_dtype)
        if D:
            gen = rng.generator(rng.key(cfg.seed, rng.GAUSS if purpose == rng.NOISE else purpose + 100, shard, step))
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

    def _level_logits(self, labels: torch.Tensor, levels: torch.Tensor, checked: bool = False) -> torch.Tensor:
        """``log(clip(onehot, eps_levels[level]))`` of each record: 0 at the true class, log eps elsewhere."""
        # TrainConfig checked the clips; labels already range-checked with their data need no per-step range
        # checks (host syncs on a GPU). Volume batches keep them: an out-of-range label is a clear error there.
        return self.layout.one_hot_logits(labels, self.eps_levels[levels], check=not checked)

    # -- data
    def _tabular_indices(self, n: int, step: int) -> torch.Tensor:
        """Global batch of step ``step``: consecutive slices of per-epoch permutations (a pure function)."""
        B = self.config.batch_size
        start, stop = step * B, (step + 1) * B
        parts = []
        for epoch in range(start // n, (stop - 1) // n + 1):
            if self._perm_epoch != epoch:
                self._perm = torch.randperm(n, generator=rng.generator(rng.key(self.config.seed, rng.PERM, epoch)))
                self._perm_epoch = epoch
            lo, hi = max(start - epoch * n, 0), min(stop - epoch * n, n)
            parts.append(self._perm[lo:hi])
        return torch.cat(parts)

    def _levels(self, step: int, count: int) -> torch.Tensor:
        return self.schedule.sample_indices(count, generator=rng.generator(rng.key(self.config.seed, rng.LEVEL, step)))

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
                loss = self._loss(model, codes, num, levels, shard=i, step=level, purpose=rng.VAL, cond=cond,
                                  checked=kind == "tabular")
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
            "gnsm_version": __version__,
            "torch_version": str(torch.__version__),
            "model": model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "rng": rng.global_rng_state(),
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
        """Write a checkpoint atomically (only on rank 0; other ranks return immediately).

        Raises ``FloatingPointError`` instead of writing when a weight of the model or its EMA is not
        finite (the file already at ``path``, if any, stays as it was).
        """
        if self.rank != 0:
            return
        if not all_finite(_unwrap(self.model), self.ema):
            raise FloatingPointError(f"checkpoint {path}: the weights hold NaN or inf at step {self.step}; "
                                     "not writing them")
        write_checkpoint(self.checkpoint_state(), path)

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
        rng.set_global_rng_state(ckpt["rng"])

    @classmethod
    def load_checkpoint(cls, path: str, config: TrainConfig | None = None, **overrides) -> "Trainer":
        """Rebuild a trainer (network from ``model_config``, schedule, layout) from a checkpoint."""
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
        if self.rank == 0:
            if ckpt_dir is not None:
                clean_checkpoint_temps(ckpt_dir)  # left by a process killed mid-write
            if cfg.metrics_file and self.step > 0:
                trim_metrics(cfg.metrics_file, self.step)  # those steps are about to be logged again
        self._perm_epoch = None
        unit = "records/s"
        loader_iter = None
        if kind == "tabular":
            codes_all = train.codes
            num_all = train.numerical
            n = len(train)
        else:
            local_batch = self.shard_batch * cfg.accum_steps
            sampler = ResumableDistributedSampler(train, num_replicas=self.world_size, rank=self.rank,
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
        pending_norms: list[torch.Tensor] = []
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
                                and hasattr(self.net, "no_sync") else contextlib.nullcontext())
                    with sync_ctx:
                        loss = self._loss(self.net, labels, num, levels, shard, step, cond=cond,
                                          checked=kind == "tabular") / cfg.accum_steps
                        loss.backward()
                    step_loss += loss.detach()
                if cfg.grad_clip and cfg.grad_clip > 0:
                    grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                else:
                    grad_norm = torch.nn.utils.get_total_norm(
                        [p.grad for p in self.model.parameters() if p.grad is not None])
                pending_norms.append(grad_norm.detach())
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
                    norms = torch.stack(pending_norms).float().tolist()
                    first = self.step - len(losses) + 1
                    pending.clear()
                    pending_norms.clear()
                    self._check_finite(losses, norms, first)
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

    @staticmethod
    def _check_finite(losses: list[float], grad_norms: list[float], first_step: int) -> None:
        """Raise at the first step whose loss or gradient norm is not finite (before any checkpoint)."""
        steps = range(first_step, first_step + len(losses))
        bad_grad = first_non_finite(grad_norms, steps)
        bad_loss = first_non_finite(losses, steps)
        if bad_loss is not None and (bad_grad is None or bad_loss <= bad_grad):
            raise FloatingPointError(f"training loss became non-finite at step {bad_loss}: {losses}")
        if bad_grad is not None:
            raise FloatingPointError(f"gradient became non-finite at step {bad_grad} (the loss was finite); "
                                     "the weights are no longer usable and no checkpoint was written after "
                                     "that step: lower the learning rate or check the model for operations "
                                     "with infinite derivatives")

    def _validate_and_checkpoint(self, val, ckpt_dir: str | None) -> bool:
        improved = False
        if val is not None:
            v = self.evaluate(val)
            if not math.isfinite(v):
                raise FloatingPointError(f"validation loss became non-finite at step {self.step} ({v}); "
                                         "no checkpoint was written for this step")
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

