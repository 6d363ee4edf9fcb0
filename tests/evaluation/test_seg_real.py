"""The real-prediction CamVid evaluation: frame/label pairing, folds by sequence, void filling, the
moving-block bootstrap, and one small end-to-end run of ``evaluate-seg camvid-real`` on a synthetic
data folder with the CamVid layout."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gnsm.cli import main
from gnsm.datasets import load_camvid_frames
from gnsm.evaluation.segmentation.bootstrap import block_indices, fold_metrics, pooled_with_intervals
from gnsm.evaluation.segmentation.folds import fill_void, fold_masks

PIL = pytest.importorskip("PIL")

_SEQS = {"train": {"AAA": 4, "BBB": 4, "CCC": 3}, "val": {"CCC": 3}}


def _write_layout(root, shape=(24, 32)):
    """camvid_images/<split>/ and camvid_labels/<split>annot/ with frames whose colour follows the labels."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, seqs in _SEQS.items():
        (root / "camvid_images" / split).mkdir(parents=True)
        (root / "camvid_labels" / f"{split}annot").mkdir(parents=True)
        for seq, n in seqs.items():
            for i in range(n):
                name = f"{seq}_{i + (10 if split == 'val' else 0):03d}.png"
                lab = np.zeros(shape, np.uint8)
                lab[shape[0] // 2:] = 3
                lab[:, : 4 + 2 * i] = 1
                lab[0, 0] = 11  # void
                img = np.stack([lab * 20, 255 - lab * 20, rng.integers(0, 30, shape)], axis=-1).astype(np.uint8)
                Image.fromarray(lab).save(root / "camvid_labels" / f"{split}annot" / name)
                Image.fromarray(img).save(root / "camvid_images" / split / name)
    return root


def test_frames_pair_by_name_and_name_their_sequence(tmp_path):
    root = _write_layout(tmp_path)
    f = load_camvid_frames(downsample=2, data_dir=root)
    assert f.images.shape == (14, 3, 12, 16) and f.labels.shape == (14, 12, 16)
    assert f.names == sorted(f.names) and f.sequences.count("CCC") == 6
    assert f.splits.count("val") == 3
    assert 0.0 <= f.images.min() and f.images.max() <= 1.0
    # the frame's colour encodes the label: block averaging keeps them aligned
    assert np.allclose(f.images[0, 0][f.labels[0] == 3], 60 / 255, atol=1e-6)


def test_missing_or_extra_frame_or_size_mismatch_is_named(tmp_path):
    from PIL import Image
    root = _write_layout(tmp_path)
    (root / "camvid_images" / "train" / "AAA_001.png").unlink()
    with pytest.raises(FileNotFoundError, match="no frame for 1 label map.*AAA_001.png"):
        load_camvid_frames(data_dir=root, downsample=1)
    Image.fromarray(np.zeros((24, 30, 3), np.uint8)).save(root / "camvid_images" / "train" / "AAA_001.png")
    with pytest.raises(ValueError, match="AAA_001.png: frame .* and label map .* differ in size"):
        load_camvid_frames(data_dir=root, downsample=1)
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(root / "camvid_images" / "train" / "ZZZ_000.png")
    with pytest.raises(FileNotFoundError, match="without a label map.*ZZZ_000.png"):
        load_camvid_frames(data_dir=root, downsample=1)


def test_folds_hold_out_each_sequence():
    masks = fold_masks(["A", "A", "B", "C", "C"])
    assert list(masks) == ["A", "B", "C"]
    assert np.array_equal(sum(m.astype(int) for m in masks.values()), np.ones(5))
    with pytest.raises(ValueError, match="no frames of sequence"):
        fold_masks(["A", "B"], folds=["X"])
    with pytest.raises(ValueError, match="at least two sequences"):
        fold_masks(["A", "A"])


def test_fill_void_takes_the_nearest_label():
    m = np.array([[[0, 0, 11, 1, 1]]], np.uint8).repeat(3, axis=1)
    out = fill_void(m, 11)
    assert (out != 11).all()
    assert set(out[0, :, 2].tolist()) <= {0, 1}
    assert np.array_equal(out[0, :, [0, 1, 3, 4]], m[0, :, [0, 1, 3, 4]])
    assert (fill_void(np.full((1, 2, 2), 11), 11) == 11).all()  # an all-void map stays as it is


def test_block_bootstrap_keeps_runs_of_consecutive_frames():
    rng = np.random.default_rng(0)
    idx = block_indices(25, 10, rng)
    assert idx.shape == (25,) and idx.min() >= 0 and idx.max() < 25
    steps = np.diff(idx)
    assert (steps[:9] == 1).all() and (steps[10:19] == 1).all()  # two full blocks of 10 consecutive frames
    assert np.array_equal(block_indices(3, 10, rng), np.arange(3))  # a fold shorter than a block: itself


def test_pooled_intervals_and_paired_differences():
    rng = np.random.default_rng(1)
    folds = []
    for n in (40, 60):
        dice = rng.random(n)
        folds.append({"dice": dice, "scores": {"good": -dice + 0.05 * rng.standard_normal(n), "noise": rng.random(n)},
                      "pixel": {"good": np.full(n, 0.9), "noise": np.full(n, 0.5)}})
    res = pooled_with_intervals(folds, ["good", "noise"], "noise", n_boot=200, block=10, seed=0)
    g = res["good"]
    assert g["spearman"] < -0.9 and g["spearman_ci"][1] < -0.8
    assert g["auroc_worst_quarter"] > 0.95 and abs(g["pixel_auroc"] - 0.9) < 1e-12
    d = g["diff_vs_ref"]["spearman"]
    assert d[1] <= d[0] <= d[2] and d[2] < 0  # the paired interval excludes 0
    # frame-weighted: equals the weighted mean of the per-fold values
    per = [fold_metrics(f["scores"]["good"], f["dice"], f["pixel"]["good"])["spearman"] for f in folds]
    assert abs(g["spearman"] - (40 * per[0] + 60 * per[1]) / 100) < 1e-12
    assert "diff_vs_ref" not in res["noise"]


def test_evaluate_camvid_real_end_to_end(tmp_path, capsys):
    root = _write_layout(tmp_path / "data")
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["evaluate-seg", "camvid-real", "--data-dir", str(root), "--downsample", "2", "--seg-epochs", "2",
            "--steps", "3", "--channels", "4", "8", "--n-boot", "10", "--device", "cpu", "--out", str(out),
            "--cache-dir", str(cache), "-q"]
    assert main(args) == 0
    result = json.loads((out / "camvid-real.json").read_text())
    assert [f["fold"] for f in result["folds"]] == ["AAA", "BBB", "CCC"]
    assert sum(f["n_test"] for f in result["folds"]) == result["n_frames"] == 14
    for f in result["folds"]:  # each segmenter trained on the other sequences only
        assert f["n_train"] == 14 - f["n_test"] and f["segmenter"]["train_frames"] == f["n_train"]
    assert set(result["pooled_over_folds"]) >= {"gnsm_image", "gnsm_mask", "gnsm_mask_map", "entropy",
                                                "positional_prior"}
    assert "diff_vs_ref" in result["pooled_over_folds"]["gnsm_image"]
    for name in ("camvid-real_score_vs_dice.png", "camvid-real_pixel_roc.png", "camvid-real_most_anomalous_1.png"):
        assert (out / "figures" / name).is_file()
    md = (out / "camvid-real.md").read_text()
    assert "gnsm_image" in md and "entropy" in md
    with np.load(out / "camvid-real_cases.npz") as z:
        assert z["image"].dtype == np.uint8 and z["pred"].shape == (14, 12, 16)
    # a rerun reuses the cached segmenters and QC models; other settings are refused, not silently reused
    assert main(args[:-1] + ["--out", str(tmp_path / "out2"), "-q"]) == 0
    again = json.loads((tmp_path / "out2" / "camvid-real.json").read_text())
    assert all(f["segmenter"].get("loaded") for f in again["folds"])
    assert again["pooled_over_folds"]["gnsm_image"]["spearman"] == pytest.approx(
        result["pooled_over_folds"]["gnsm_image"]["spearman"], nan_ok=True)
    bad = [a if a != "3" else "4" for a in args]
    capsys.readouterr()
    assert main(bad[:-1] + ["--out", str(tmp_path / "out3"), "-q"]) == 2
    assert "trained with other settings (['n_steps'])" in capsys.readouterr().err
