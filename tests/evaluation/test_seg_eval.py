"""Segmentation evaluation pieces: real-data loaders, metrics, baseline, pictures, CLI commands."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gnsm.evaluation.seg_eval import PositionalFrequency, case_metrics, summarize_cases, voxel_auroc


def _data_or_skip(name: str):
    from gnsm.datasets.registry import find_data_dir
    try:
        folder = find_data_dir() / name
    except FileNotFoundError:
        pytest.skip("shared/data is not available")
    if not folder.is_dir():
        pytest.skip(f"{name} is not in shared/data")
    return folder


def test_load_camvid_downsamples_real_maps():
    _data_or_skip("camvid_labels")
    from gnsm.evaluation.seg_data import load_camvid
    val, names = load_camvid("val", downsample=4)
    assert val.shape == (101, 90, 120) and val.dtype == np.uint8 and len(names) == 101
    assert val.max() <= 11
    full, _ = load_camvid("val", downsample=1)
    np.testing.assert_array_equal(val[0], full[0][2::4, 2::4])
    with pytest.raises(ValueError, match="held out"):
        load_camvid("test")


def test_load_spine_and_augment():
    _data_or_skip("spine_panoptica")
    from gnsm.evaluation.seg_data import augment_volume, load_spine
    data = load_spine(downsample=4)
    assert data["ref"].shape == data["pred"].shape == (128, 128, 17)
    assert data["labels"][0] == 0 and 60 in data["labels"] and len(data["labels"]) == int(data["ref"].max()) + 1
    rng = np.random.default_rng(0)
    aug = augment_volume(data["ref"], rng)
    assert aug.shape == data["ref"].shape and aug.dtype == data["ref"].dtype
    assert set(np.unique(aug)) <= set(np.unique(data["ref"]))
    changed = (aug != data["ref"]).mean()
    assert 0.0 < changed < 0.5
    again = augment_volume(data["ref"], np.random.default_rng(0))
    np.testing.assert_array_equal(aug, again)


def test_positional_frequency_flags_rare_labels():
    maps = np.zeros((10, 4, 4), np.int64)
    maps[:, 2:] = 1
    base = PositionalFrequency(3).fit(maps)
    pred = maps[0].copy()
    pred[0, 0] = 2
    amap = base.anomaly_map(pred)
    assert amap[0, 0] == amap.max() and amap[0, 0] > amap[1, 1]
    np.testing.assert_allclose(amap[3, 3], -np.log(11 / 13))
    with pytest.raises(ValueError, match="shape"):
        base.anomaly_map(np.zeros((5, 5), np.int64))


def test_voxel_auroc_and_case_metrics():
    err = [np.array([[1, 0], [0, 0]], bool), np.array([[0, 0], [0, 1]], bool)]
    perfect = [e.astype(float) for e in err]
    out = voxel_auroc(perfect, err)
    assert out["pooled"] == 1.0 and out["mean_per_case"] == 1.0 and out["cases"] == 2
    inverted = voxel_auroc([1.0 - p for p in perfect], err)
    assert inverted["pooled"] == 0.0
    valid = [np.ones((2, 2), bool), np.array([[1, 1], [1, 0]], bool)]  # drops case 2's only error
    assert voxel_auroc(perfect, err, valid)["cases"] == 1
    dice = np.array([1.0, 0.95, 0.6, 0.3, 0.8])
    m = case_metrics(-dice, dice)
    assert m["spearman"] == pytest.approx(-1.0) and m["auroc_good_vs_poor"] == 1.0
    assert (m["n_good"], m["n_poor"]) == (2, 2)


def test_summarize_cases_per_kind():
    from gnsm.evaluation.seg_corruptions import make_cases
    masks = []
    for i in range(3):
        m = np.zeros((32, 32), np.uint8)
        m[16:] = 1
        m[4 + i:12 + i, 6:14] = 2
        masks.append(m)
    cases = make_cases(masks, seed=0, kinds=("erosion", "class_swap"), severities=(0.5, 1.0))
    dice = np.array([c.dice for c in cases])
    perfect = [c.error.astype(np.float32) for c in cases]  # the error masks themselves
    out = summarize_cases(-dice, dice, perfect, cases, [np.ones(c.gt.shape, bool) for c in cases])
    assert out["n"] == len(cases) and out["spearman"] == pytest.approx(-1.0)
    assert out["voxel_auroc"]["pooled"] == 1.0 and out["voxel_auroc"]["cases"] == 12  # clean cases left out
    assert sorted(out["per_kind"]) == ["class_swap", "erosion"]
    assert out["per_kind"]["erosion"]["n"] == 9 and out["per_kind"]["erosion"]["voxel_auroc"] == 1.0  # + clean
    json.dumps(out)


def test_report_pictures(tmp_path):
    from gnsm.evaluation.seg_report import write_report
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 3, size=(5, 8, 8))
    pred = gt.copy()
    pred[:, :2] = 0
    arrays = {"gt": gt, "pred": pred, "anomaly_map": rng.normal(size=(5, 8, 8)), "score": np.arange(5.0),
              "dice": np.linspace(1, 0.5, 5), "kind": np.array(["a", "b", "a", "b", "a"]),
              "severity": np.ones(5), "names": np.array([f"m{i}" for i in range(5)]), "ignore_index": 11}
    paths = write_report(arrays, tmp_path, top=2)
    assert sorted(p.name for p in paths) == ["least_anomalous_1.png", "least_anomalous_2.png",
                                             "most_anomalous_1.png", "most_anomalous_2.png", "score_vs_dice.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    vol = {"gt": gt[None, :, :, :3], "pred": pred[None, :, :, :3], "anomaly_map": rng.normal(size=(1, 5, 8, 3)),
           "score": np.zeros(1), "dice": np.ones(1)}
    assert len(write_report(vol, tmp_path / "vol", top=1)) == 2


def test_cli_fit_score_report_seg(tmp_path, capsys):
    from PIL import Image

    from gnsm.cli import main
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(4):
        m = np.zeros((12, 12), np.uint8)
        m[6:] = 1
        m[7 + i % 3:9 + i % 3, 2:5] = 2
        Image.fromarray(m).save(masks / f"m{i}.png")
    model = tmp_path / "model"
    assert main(["fit-seg", str(masks), "--model-dir", str(model), "--steps", "2", "--channels", "4", "8",
                 "--lr", "1e-3", "--device", "cpu", "-q"]) == 0
    import json
    assert json.loads((model / "meta.json").read_text())["params"]["lr"] == 1e-3
    model2 = tmp_path / "model2"
    assert main(["fit-seg", str(masks), "--model-dir", str(model2), "--steps", "2", "--channels", "4", "8",
                 "--positional-prior", "--device", "cpu", "-q"]) == 0
    assert json.loads((model2 / "meta.json").read_text())["params"]["positional_prior"] is True
    assert main(["evaluate-seg", "spine", "--positional-prior", "both", "--out", str(tmp_path / "e"), "-q"]) == 2
    assert "one --scoring and --positional-prior" in capsys.readouterr().err
    out = tmp_path / "scores.csv"
    assert main(["score-seg", str(masks / "m0.png"), str(masks / "m1.png"), "--model-dir", str(model),
                 "-o", str(out), "--maps-dir", str(tmp_path / "maps"), "-q"]) == 0
    import pandas as pd
    table = pd.read_csv(out)
    assert list(table.columns) == ["file", "score", "is_poor", "flagged_voxels"] and len(table) == 2
    assert np.load(tmp_path / "maps" / "m0_anomaly.npy").shape == (12, 12)
    assert main(["score-seg", str(tmp_path / "nope.png"), "--model-dir", str(model), "-o", str(out), "-q"]) == 2
    assert "not found" in capsys.readouterr().err
    Image.fromarray(np.full((12, 12), 7, np.uint8)).save(tmp_path / "bad.png")
    assert main(["score-seg", str(tmp_path / "bad.png"), "--model-dir", str(model), "-o", str(out), "-q"]) == 2
    assert "outside [0, 3)" in capsys.readouterr().err

    cases = tmp_path / "cases.npz"
    rng = np.random.default_rng(1)
    np.savez(cases, gt=rng.integers(0, 3, (3, 6, 6)), pred=rng.integers(0, 3, (3, 6, 6)),
             anomaly_map=rng.normal(size=(3, 6, 6)), score=np.arange(3.0), dice=np.ones(3))
    assert main(["report-seg", str(cases), "--out", str(tmp_path / "fig"), "--top", "1", "-q"]) == 0
    assert (tmp_path / "fig" / "most_anomalous_1.png").is_file()
    np.savez(tmp_path / "broken.npz", gt=np.zeros((1, 2, 2)))
    assert main(["report-seg", str(tmp_path / "broken.npz"), "--out", str(tmp_path / "fig2"), "-q"]) == 2
    assert "missing arrays" in capsys.readouterr().err


def test_markdown_summary_of_a_camvid_result():
    from gnsm.cli_seg import _markdown
    metric = {"spearman": -0.8, "auroc_good_vs_poor": 0.95,
              "voxel_auroc": {"pooled": 0.9, "mean_per_case": 0.88}, "per_kind": {"shift": {"spearman": -0.7,
                                                                                            "voxel_auroc": 0.8}}}
    text = _markdown({"dataset": "camvid", "n_train": 3, "n_cases": 4, "n_val_maps": 2, "shape": [4, 4],
                      "downsample": 1, "fit_seconds": 1.0, "methods": {"gnsm (denoise)": metric, "base": metric}})
    assert "| gnsm (denoise) | -0.800 | 0.950 | 0.900 | 0.880 |" in text
    assert "| shift | -0.700 / - / 0.800 | -0.700 / - / 0.800 |" in text
    json.dumps(metric)


def test_torchrun_fit_seg_trains_on_two_ranks(tmp_path):
    """``torchrun --nproc-per-node 2 -m gnsm fit-seg``: DDP on CPU (gloo); rank 0 alone writes the model."""
    import subprocess
    import sys

    from PIL import Image
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(4):
        m = np.zeros((12, 12), np.uint8)
        m[6:] = 1
        m[7:9, 2 + i:5 + i] = 2
        Image.fromarray(m).save(masks / f"m{i}.png")
    model = tmp_path / "model"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "gnsm", "fit-seg", str(masks), "--model-dir", str(model), "--steps", "3", "--channels", "4", "8",
           "--device", "cpu"]
    env = {**__import__("os").environ, "GNSM_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    from gnsm.detectors import SegmentationQC
    det = SegmentationQC.load(model)
    assert det.train_info_["steps"] == 3
    assert done.stderr.count("gnsm fit-seg: saved") == 1  # rank 1 is quiet and does not write
