"""Failure handling of the trainer: non-finite gradients and validation losses, stale temporaries
of a killed checkpoint write, and the metrics log after a resume."""
from __future__ import annotations

import json
import os

import pytest
import torch

from gnsm.core import Schedule
from gnsm.data import TabularData
from gnsm.models import TabularResMLP
from gnsm.training import Trainer, TrainConfig, load_checkpoint

SIZES = [3, 4, 2]
SCHED = Schedule(n=3)


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TabularData(torch.stack([torch.randint(0, k, (n,), generator=g) for k in SIZES], 1))


class PoisonedMLP(TabularResMLP):
    """A finite forward value whose gradient is NaN once ``poison_from`` steps have been taken
    (``0 * sqrt(w - w)``: the value is 0, the derivative 0 * inf = NaN)."""

    def __init__(self, poison_from: int | None = 0, nan_in_eval: bool = False):
        torch.manual_seed(0)
        super().__init__(SIZES, 0, width=16, depth=1, emb_dim=8)
        self.w = torch.nn.Parameter(torch.ones(()))
        self.poison_from = poison_from
        self.nan_in_eval = nan_in_eval
        self.calls = 0

    def forward(self, y, log_tau, cond=None):
        out = super().forward(y, log_tau, cond)
        if self.training:
            self.calls += 1
            if self.poison_from is not None and self.calls > self.poison_from:
                out = out + 0.0 * torch.sqrt(self.w - self.w)
        elif self.nan_in_eval:
            out = out * float("nan")
        return out


def _cfg(tmp_path, **kw):
    base = dict(steps=6, batch_size=16, warmup_steps=1, val_every=1, log_every=1, progress=False,
                checkpoint_dir=str(tmp_path / "ckpt"))
    base.update(kw)
    return TrainConfig(**base)


def test_nan_gradient_stops_before_any_checkpoint(tmp_path):
    trainer = Trainer(PoisonedMLP(poison_from=0), SCHED, _cfg(tmp_path), SIZES)
    with pytest.raises(FloatingPointError) as err:
        trainer.fit(_data(), _data(16, seed=1))
    # nothing was written: neither NaN weights nor a NaN "best"
    assert not (tmp_path / "ckpt" / "last.pt").exists() and not (tmp_path / "ckpt" / "best.pt").exists()
    assert "gradient became non-finite at step 1" in str(err.value)


def test_nan_gradient_keeps_the_last_good_checkpoint(tmp_path):
    # the EMA copy is made with deepcopy, so its calls counter is independent; training calls: 1 per step
    trainer = Trainer(PoisonedMLP(poison_from=3), SCHED, _cfg(tmp_path, log_every=2, val_every=2), SIZES)
    with pytest.raises(FloatingPointError) as err:
        trainer.fit(_data(), _data(16, seed=1))
    for name in ("last.pt", "best.pt"):
        ckpt = load_checkpoint(str(tmp_path / "ckpt" / name))
        assert ckpt["step"] == 2
        assert ckpt["best_val"] is not None and ckpt["best_val"] == ckpt["best_val"]  # finite, not NaN
        assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
        assert all(torch.isfinite(t).all() for t in ckpt["ema"].values())
    assert "gradient became non-finite at step 4" in str(err.value)


def test_nan_validation_is_never_best(tmp_path):
    trainer = Trainer(PoisonedMLP(poison_from=None, nan_in_eval=True), SCHED, _cfg(tmp_path), SIZES)
    with pytest.raises(FloatingPointError, match="validation loss became non-finite at step 1"):
        trainer.fit(_data(), _data(16, seed=1))
    assert trainer.best_val is None and trainer.val_history == []
    assert not (tmp_path / "ckpt" / "best.pt").exists()


def test_nan_validation_never_checkpointed_as_best(tmp_path):
    trainer = Trainer(PoisonedMLP(poison_from=None, nan_in_eval=True), SCHED, _cfg(tmp_path, steps=2), SIZES)
    try:
        trainer.fit(_data(), _data(16, seed=1))
    except FloatingPointError:
        pass
    best = tmp_path / "ckpt" / "best.pt"
    assert not best.exists() or load_checkpoint(str(best))["best_val"] == load_checkpoint(str(best))["best_val"]


def test_save_checkpoint_refuses_non_finite_weights(tmp_path):
    trainer = Trainer(PoisonedMLP(poison_from=None), SCHED, _cfg(tmp_path, steps=2, checkpoint_dir=None), SIZES)
    trainer.fit(_data())
    path = tmp_path / "c.pt"
    trainer.save_checkpoint(str(path))
    before = path.read_bytes()
    with torch.no_grad():
        trainer.model.w.fill_(float("inf"))
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        trainer.save_checkpoint(str(path))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]


def test_stale_checkpoint_temporaries_are_removed_on_start(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    stale = [folder / ".last.pt.k1ll3d.tmp", folder / ".best.pt.x8.tmp"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    keep = [folder / "notes.txt", folder / ".other.pt.x.tmp"]
    for p in keep:
        p.write_bytes(b"not ours")
    Trainer(PoisonedMLP(poison_from=None), SCHED, _cfg(tmp_path, steps=2, val_every=2), SIZES).fit(_data())
    assert sorted(p.name for p in folder.iterdir()) == [".other.pt.x.tmp", "last.pt", "notes.txt"]


def test_metrics_are_trimmed_to_the_checkpoint_on_resume(tmp_path):
    metrics = tmp_path / "metrics.jsonl"

    class Crash(Exception):
        pass

    cfg = _cfg(tmp_path, steps=8, val_every=4, log_every=1, metrics_file=str(metrics))
    first = Trainer(PoisonedMLP(poison_from=None), SCHED, cfg, SIZES)
    original = first._log

    def crash_at_step_6(record):
        original(record)
        if record.get("step") == 6:
            raise Crash

    first._log = crash_at_step_6
    with pytest.raises(Crash):
        first.fit(_data(), _data(16, seed=1))
    with open(metrics, "a") as f:
        f.write('{"step": 7, "lo')  # a line cut short by the kill
    resumed = Trainer(PoisonedMLP(poison_from=None), SCHED, cfg, SIZES)
    resumed.fit(_data(), _data(16, seed=1), resume=str(tmp_path / "ckpt" / "last.pt"))
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    train_steps = [r["step"] for r in records if "loss" in r]
    val_steps = [r["step"] for r in records if "val_loss" in r]
    assert train_steps == list(range(1, 9)) and val_steps == [4, 8]


def test_fresh_run_appends_to_an_existing_metrics_file(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 99, "loss": 1.0}\n')
    cfg = _cfg(tmp_path, steps=2, val_every=2, log_every=1, metrics_file=str(metrics), checkpoint_dir=None)
    Trainer(PoisonedMLP(poison_from=None), SCHED, cfg, SIZES).fit(_data())
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == [99, 1, 2]
