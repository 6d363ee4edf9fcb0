"""Segmentation evaluation pieces: real-data loaders, metrics, baseline, pictures, markdown summary."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gnsm.evaluation.segmentation import PositionalFrequency, case_metrics, summarize_cases, voxel_auroc


def _data_or_skip(name: str):
    from gnsm.datasets import find_data_dir
    try:
        folder = find_data_dir() / name
    except FileNotFoundError:
        pytest.skip("shared/data is not available")
    if not folder.is_dir():
        pytest.skip(f"{name} is not in shared/data")
    return folder


def test_load_camvid_downsamples_real_maps():
    _data_or_skip("camvid_labels")
    from gnsm.datasets import load_camvid
    val, names = load_camvid("val", downsample=4)
    assert val.shape == (101, 90, 120) and val.dtype == np.uint8 and len(names) == 101
    assert val.max() <= 11
    full, _ = load_camvid("val", downsample=1)
    np.testing.assert_array_equal(val[0], full[0][2::4, 2::4])
    with pytest.raises(ValueError, match="held out"):
        load_camvid("test")


def test_load_spine_and_augment():
    _data_or_skip("spine_panoptica")
    from gnsm.datasets import augment_volume, load_spine
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


def test_evaluate_spine_reports_the_default_verdicts():
    """The spine evaluation records the resolved scoring and predict()'s verdicts on the prediction, the
    reference and the held-out references (a tiny network: the values are not the point here)."""
    _data_or_skip("spine_panoptica")
    from gnsm.evaluation.segmentation import evaluate_spine, markdown_summary
    params = {"channels": (4, 8), "n_steps": 2, "batch_size": 2, "n_temperatures": 4, "device": "cpu"}
    result = evaluate_spine(downsample=8, n_train=10, n_heldout=3, detector_params=params, keep_maps=False)
    assert result["detector"]["scoring"] == "auto" and result["scoring_used"] == "paper"
    assert len(result["score_heldout_references"]) == 3 and 0 <= result["heldout_flagged"] <= 3
    flagged = result["score_prediction"] > result["threshold"]
    assert result["prediction_flagged"] == flagged
    rank = 1 + sum(s > result["score_prediction"] for s in [result["score_reference"],
                                                             *result["score_heldout_references"]])
    assert result["prediction_rank_among_references"] == rank
    assert result["heldout_flagged_in_sample"] == sum(s > result["threshold_in_sample"]
                                                      for s in result["score_heldout_references"])
    text = markdown_summary(result)
    assert ("NOT flagged" in text) != flagged and "held-out references flagged" in text
    base = result["baselines"]
    assert set(base["voxel"]) == {"positional_prior", "boundary_proximity"}
    assert set(base["case"]) == {"positional_prior_mean", "label_volume_z"}
    for v in base["case"].values():
        assert len(v["score_references"]) == 4  # the reference and the 3 held-out references
        assert v["prediction_flagged"] == (v["score_prediction"] > v["threshold"])
    assert "| label_volume_z |" in text and "| boundary_proximity |" in text


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
    from gnsm.evaluation.segmentation import make_cases
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
    from gnsm.evaluation.segmentation import write_report
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


def test_markdown_summary_of_a_camvid_result():
    from gnsm.evaluation.segmentation import markdown_summary
    metric = {"spearman": -0.8, "auroc_good_vs_poor": 0.95,
              "voxel_auroc": {"pooled": 0.9, "mean_per_case": 0.88}, "per_kind": {"shift": {"spearman": -0.7,
                                                                                            "voxel_auroc": 0.8}}}
    text = markdown_summary({"dataset": "camvid", "n_train": 3, "n_cases": 4, "n_val_maps": 2, "shape": [4, 4],
                      "downsample": 1, "fit_seconds": 1.0, "methods": {"gnsm (denoise)": metric, "base": metric}})
    assert "| gnsm (denoise) | -0.800 | 0.950 | 0.900 | 0.880 |" in text
    assert "| shift | -0.700 / - / 0.800 | -0.700 / - / 0.800 |" in text
    json.dumps(metric)
