"""CamVid: the per-position HGAD pixel head against the default channel-mean anomaly map, with one trained network.

Loads a SegmentationQC saved by ``gnsm evaluate-seg camvid --model-dir DIR`` (trained on the downsampled
train maps), refits only the scoring with ``pixel_head="hgad"`` for each scoring mode, and scores the same
corrupted val cases as ``evaluate-seg`` (same seed, kinds and severities), so the numbers compare directly
with ``benchmarks/results/seg_camvid.json``.

    python benchmarks/eval_seg_pixel_head.py --model-dir camvid_model --downsample 8 --severities 0.33 0.67 1.0
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from gnsm.detectors import SegmentationQC
from gnsm.datasets import CAMVID_VOID, load_camvid
from gnsm.evaluation.segmentation import CORRUPTIONS, make_cases, summarize_cases


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True, help="a SegmentationQC saved by gnsm evaluate-seg camvid")
    p.add_argument("--downsample", type=int, default=8)
    p.add_argument("--severities", type=float, nargs="+", default=[0.33, 0.67, 1.0])
    p.add_argument("--scoring", nargs="+", default=["denoise", "paper"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/seg_camvid_pixel_hgad.json")
    args = p.parse_args()

    train, _ = load_camvid("train", args.downsample)
    val, _ = load_camvid("val", args.downsample)
    det = SegmentationQC.load(args.model_dir, device="cpu")
    cases = make_cases(list(val), args.seed, kinds=tuple(CORRUPTIONS), severities=tuple(args.severities),
                       ignore_index=CAMVID_VOID, include_clean=True)
    preds = np.stack([c.pred for c in cases])
    dice = np.array([c.dice for c in cases])
    valid = [c.gt != CAMVID_VOID for c in cases]
    out: dict = {"model_dir": args.model_dir, "downsample": args.downsample, "severities": args.severities,
                 "n_cases": len(cases), "methods": {}}
    for scoring in args.scoring:
        t0 = time.perf_counter()
        det.refit_scoring(train, scoring=scoring, pixel_head="hgad")
        refit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = det.predict_maps(preds)
        score_s = time.perf_counter() - t0
        summary = summarize_cases(res.pred_score, dice, res.anomaly_map, cases, valid)
        out["methods"][f"gnsm ({scoring}, pixel_head=hgad)"] = {
            "refit_seconds": refit_s, "score_seconds": score_s,
            "pixel_head_classes": det.pixel_head_.class_info.get("k"), **summary}
        v = summary["voxel_auroc"]
        print(f"{scoring}: rho {summary['spearman']:.3f}  AUROC good-vs-poor {summary['auroc_good_vs_poor']:.3f}  "
              f"voxel AUROC pooled {v['pooled']:.3f} / per case {v['mean_per_case']:.3f}  "
              f"per kind " + ", ".join(f"{k} {m['voxel_auroc']:.3f}" for k, m in summary["per_kind"].items()))
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
