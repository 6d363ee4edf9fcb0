"""Trainer tests: learning, resume reproducibility, checkpoints, bad input, early stopping, metrics."""
import json
import os

import numpy as np
import pytest
import torch

from gnsm.core import Schedule
from gnsm.data import PatchDataset, TabularData
from gnsm.models import TabularResMLP, UNet
from gnsm.training import Trainer, TrainConfig, load_checkpoint, load_model

SCHED = Schedule(n=5)


def _cfg(**kw):
    base = dict(steps=12, batch_size=32, warmup_steps=2, val_every=6, progress=False, log_every=3, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def _mlp(sizes, D=0, seed=0):
    torch.manual_seed(seed)
    return TabularResMLP(sizes, D, width=32, depth=2, emb_dim=16)


def _numerical(codes):
    g = torch.Generator().manual_seed(1)
    return codes[:, :2].float() + 0.1 * torch.randn(codes.shape[0], 2, generator=g)


def test_loss_decreases_on_real_table(solar):
    codes, sizes = solar
    train, val = TabularData(codes[:250]), TabularData(codes[250:])
    trainer = Trainer(_mlp(sizes), Schedule(), _cfg(steps=100, batch_size=64, lr=3e-3, val_every=50), sizes)
    res = trainer.fit(train, val)
    h = res.history
    assert len(h) == 100 and res.steps_run == 100
    assert np.mean(h[-20:]) < 0.9 * np.mean(h[:10])
    assert res.val_history[-1][1] < res.val_history[0][1]
    assert res.best_val == min(v for _, v in res.val_history)


def test_numerical_columns_train(solar):
    codes, sizes = solar
    data = TabularData(codes, _numerical(codes))
    trainer = Trainer(_mlp(sizes, 2), SCHED, _cfg(steps=10, lr=3e-3, dsm_weighting="sigma2"), sizes, num_numerical=2)
    h = trainer.fit(data).history
    assert len(h) == 10 and np.isfinite(h).all()
    assert trainer.model.out.weight[:2].abs().sum() > 0  # the numerical score head was trained


def test_resume_reproduces_uninterrupted_run(solar, tmp_path):
    codes, sizes = solar
    data = TabularData(codes, _numerical(codes))
    val = TabularData(codes[:40], _numerical(codes)[:40])
    full_trainer = Trainer(_mlp(sizes, 2), SCHED, _cfg(), sizes, 2)
    full = full_trainer.fit(data, val)

    class Crash(Exception):
        pass

    interrupted = Trainer(_mlp(sizes, 2), SCHED, _cfg(checkpoint_dir=str(tmp_path)), sizes, 2)
    original = interrupted._validate_and_checkpoint

    def crash_after_first_checkpoint(*args):
        original(*args)
        raise Crash

    interrupted._validate_and_checkpoint = crash_after_first_checkpoint
    with pytest.raises(Crash):
        interrupted.fit(data, val)
    assert load_checkpoint(str(tmp_path / "last.pt"))["step"] == 6

    torch.manual_seed(123)  # the resumed run must not depend on the fresh model's init or the global RNG
    resumed = Trainer(_mlp(sizes, 2, seed=7), SCHED, _cfg(checkpoint_dir=str(tmp_path)), sizes, 2)
    res = resumed.fit(data, val, resume=str(tmp_path / "last.pt"))
    assert res.history == full.history  # bitwise: same steps, same noise, same states
    assert res.val_history == full.val_history
    for a, b in zip(resumed.ema_model.state_dict().values(), full_trainer.ema_model.state_dict().values()):
        assert torch.equal(a, b)


def test_checkpoint_contents_and_weights_only(solar, tmp_path):
    codes, sizes = solar
    trainer = Trainer(_mlp(sizes), SCHED, _cfg(steps=6, checkpoint_dir=str(tmp_path)), sizes)
    trainer.fit(TabularData(codes), TabularData(codes[:30]))
    path = str(tmp_path / "last.pt")
    ckpt = torch.load(path, weights_only=True)
    for key in ("model", "ema", "optimizer", "scheduler", "step", "rng", "schedule", "field_sizes",
                "num_numerical", "model_config", "gnsm_version"):
        assert key in ckpt
    assert ckpt["field_sizes"] == sizes and ckpt["step"] == 6
    assert os.path.exists(tmp_path / "best.pt")
    model, sched = load_model(path)
    assert sched == SCHED
    out = model(torch.zeros(2, sum(sizes)), torch.zeros(2))
    assert out.shape == (2, sum(sizes))
    clone = Trainer.load_checkpoint(path, progress=False)
    assert clone.step == 6
    assert all(torch.equal(a, b) for a, b in zip(clone.ema.state_dict().values(), trainer.ema.state_dict().values()))


def test_atomic_checkpoint_leaves_no_partial_file(solar, tmp_path, monkeypatch):
    codes, sizes = solar
    trainer = Trainer(_mlp(sizes), SCHED, _cfg(steps=2), sizes)
    trainer.fit(TabularData(codes))
    path = tmp_path / "ckpt.pt"
    trainer.save_checkpoint(str(path))
    before = path.read_bytes()
    real_save = torch.save

    def failing_save(obj, f, *a, **k):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    trainer.step += 1
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint(str(path))
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before  # the old checkpoint is intact
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]  # no temp file left behind
    with pytest.raises(OSError):
        monkeypatch.setattr(torch, "save", failing_save)
        trainer.save_checkpoint(str(tmp_path / "new.pt"))
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]


def test_bad_inputs(solar, tmp_path):
    codes, sizes = solar
    with pytest.raises(ValueError, match="empty"):
        TabularData(codes[:0])
    num = _numerical(codes)
    num[5, 1] = float("nan")
    with pytest.raises(ValueError, match="row 5, column 1"):
        TabularData(codes, num)
    trainer = Trainer(_mlp(sizes), SCHED, _cfg(steps=2, checkpoint_dir=str(tmp_path)), sizes)
    bad = codes.clone()
    bad[7, 2] = sizes[2]
    with pytest.raises(ValueError, match=r"field 2 expects values in \[0, 2\), found 2 at row 7"):
        trainer.fit(TabularData(bad))
    with pytest.raises(ValueError, match="numerical columns"):
        trainer.fit(TabularData(codes, _numerical(codes)))
    trainer.fit(TabularData(codes))
    other = Trainer(_mlp(sizes[:-1] + [sizes[-1] + 1]), SCHED, _cfg(steps=4), sizes[:-1] + [sizes[-1] + 1])
    with pytest.raises(ValueError, match="field layout"):
        other.fit(TabularData(codes), resume=str(tmp_path / "last.pt"))
    with pytest.raises(ValueError, match="schedule"):
        Trainer(_mlp(sizes), Schedule(n=6), _cfg(steps=4), sizes).fit(TabularData(codes),
                                                                       resume=str(tmp_path / "last.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable gnsm checkpoint"):
        load_checkpoint(str(junk))
    with pytest.raises(ValueError, match="field_sizes"):
        Trainer(_mlp(sizes), SCHED, _cfg(), sizes[:-1])
    with pytest.raises(ValueError, match="divisible"):
        Trainer(_mlp(sizes), SCHED, _cfg(batch_size=30, accum_steps=4), sizes)


def test_volume_labels_exceeding_k(tmp_path):
    vol = np.zeros((6, 6, 6), dtype=np.uint8)
    vol[2, 3, 4] = 9
    ds = PatchDataset([vol], (6, 6, 6), num_classes=4, samples_per_epoch=4)
    with pytest.raises(ValueError, match=r"labels in \[0, 4\), found 9 at index \(2, 3, 4\)"):
        ds[0]
    with pytest.raises(ValueError, match="at least one label volume"):
        PatchDataset([], (4, 4), 3)


def test_early_stopping(solar):
    codes, sizes = solar
    # lr so small that validation cannot improve: patience 2 stops after 3 validations.
    cfg = _cfg(steps=40, val_every=2, patience=2, lr=1e-9, warmup_steps=0, ema_decay=0.0)
    trainer = Trainer(_mlp(sizes), SCHED, cfg, sizes)
    trainer.ema.load_state_dict(trainer.model.state_dict())
    res = trainer.fit(TabularData(codes), TabularData(codes[:40]))
    assert res.stopped_early and res.steps_run < 40
    assert len(res.val_history) == res.best_step // 2 + 2


def test_metrics_file_and_progress(solar, tmp_path, capsys):
    codes, sizes = solar
    path = tmp_path / "m" / "metrics.jsonl"
    cfg = _cfg(steps=6, metrics_file=str(path), progress=True, val_every=3)
    Trainer(_mlp(sizes), SCHED, cfg, sizes).fit(TabularData(codes), TabularData(codes[:20]))
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    train_lines = [x for x in lines if "loss" in x]
    val_lines = [x for x in lines if "val_loss" in x]
    assert [x["step"] for x in train_lines] == [3, 6] and [x["step"] for x in val_lines] == [3, 6]
    assert all(x["records_per_s"] > 0 for x in train_lines)
    assert "records_per_s" in capsys.readouterr().err


def test_volume_training_from_files(tmp_path):
    import nibabel

    vol = np.zeros((10, 9, 11), dtype=np.int16)
    vol[2:7, 3:8, 1:9] = 1
    vol[4:6, 4:6, 3:6] = 2
    np.save(tmp_path / "a.npy", vol)
    nibabel.save(nibabel.Nifti1Image(vol[::-1].copy(), np.eye(4)), str(tmp_path / "b.nii.gz"))
    ds = PatchDataset([str(tmp_path / "a.npy"), str(tmp_path / "b.nii.gz"), vol], (8, 8, 8), num_classes=3,
                      samples_per_epoch=8, seed=1)
    torch.manual_seed(0)
    model = UNet(3, spatial_dims=3, channels=(8, 16), groups=4, emb_dim=16)
    path = tmp_path / "m.jsonl"
    cfg = _cfg(steps=4, batch_size=2, val_every=4, metrics_file=str(path), num_workers=0)
    res = Trainer(model, SCHED, cfg, 3).fit(ds, ds)
    assert res.steps_run == 4 and res.throughput_unit == "voxels/s" and np.isfinite(res.history).all()
    assert "voxels_per_s" in path.read_text()


def test_png_label_maps_with_cond(tmp_path):
    from PIL import Image

    lab = np.zeros((12, 10), dtype=np.uint8)
    lab[3:9, 2:7] = 1
    Image.fromarray(lab).save(tmp_path / "m.png")
    img = np.random.default_rng(0).normal(size=(12, 10)).astype(np.float32)
    ds = PatchDataset([str(tmp_path / "m.png")], (8, 8), num_classes=2, samples_per_epoch=4, cond=[img])
    labels, cond = ds[0]
    assert labels.shape == (8, 8) and cond.shape == (1, 8, 8) and labels.dtype == torch.int64
    model = UNet(2, spatial_dims=2, cond_channels=1, channels=(8, 8), groups=4, emb_dim=16)
    res = Trainer(model, SCHED, _cfg(steps=2, batch_size=2), 2).fit(ds)
    assert res.steps_run == 2


def test_reference_backend_matches_fused_in_expectation(solar):
    codes, sizes = solar
    # Different noise streams, same math: the first losses (same weights, same batches) agree closely.
    ref = Trainer(_mlp(sizes), SCHED, _cfg(steps=6, ops_backend="reference"), sizes).fit(TabularData(codes))
    fused = Trainer(_mlp(sizes), SCHED, _cfg(steps=6), sizes).fit(TabularData(codes))
    assert abs(np.mean(ref.history) - np.mean(fused.history)) < 0.1 * np.mean(fused.history)


def test_loss_relapse_detector():
    from gnsm.training import loss_relapse
    rng = np.random.default_rng(0)
    # the spine failure: the loss fell from 0.39 to 0.36, jumped back to 0.39 and stayed there
    relapsed = list(np.linspace(0.39, 0.36, 60)) + list(0.39 + 0.005 * rng.standard_normal(300))
    start, best, now = loss_relapse(relapsed)
    assert best < 0.37 and now > 0.385 and start > best
    converged = list(np.linspace(2.0, 1.0, 300) + 0.3 * rng.standard_normal(300)) + \
        list(1.0 + 0.3 * rng.standard_normal(2000))
    assert loss_relapse(converged) is None
    flat_noisy = [list(1 + 0.3 * rng.standard_normal(500)) for _ in range(100)]
    assert not any(loss_relapse(h) is not None for h in flat_noisy)
    assert loss_relapse(relapsed[:50]) is None  # too short to judge


def test_trainer_warns_when_loss_relapses(solar, tmp_path, monkeypatch):
    codes, sizes = solar
    path = tmp_path / "metrics.jsonl"
    trainer = Trainer(_mlp(sizes), SCHED, _cfg(steps=150, val_every=1000, metrics_file=str(path)), sizes)
    real_loss = trainer._loss

    def scripted(*args, **kw):  # the real graph (so backward works) with a scripted value: falls, then relapses
        level = 1.0 - 0.01 * trainer.step if trainer.step < 30 else 1.0
        return real_loss(*args, **kw) * 0.0 + level

    monkeypatch.setattr(trainer, "_loss", scripted)
    with pytest.warns(RuntimeWarning, match="went back to its starting level"):
        trainer.fit(TabularData(codes))
    warned = [json.loads(x) for x in path.read_text().splitlines() if "warning" in x]
    assert len(warned) == 1 and "lower the learning rate" in warned[0]["warning"]


def test_healthy_run_does_not_warn(solar, recwarn):
    codes, sizes = solar
    Trainer(_mlp(sizes), Schedule(), _cfg(steps=150, batch_size=64, lr=3e-3, val_every=1000), sizes).fit(
        TabularData(codes))
    assert not [w for w in recwarn if "starting level" in str(w.message)]
