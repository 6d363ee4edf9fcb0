"""The seeded error family, now with the image: one fold's cached QC models of ``gnsm evaluate-seg
camvid-real`` (image-conditioned and mask-only, trained on the other sequences) score corrupted copies of
the held-out sequence's ground truth (void filled), each with its frame.

Every held-out map is scored clean and under each corruption kind at one severity; metrics are those of the
seeded CamVid evaluation (:func:`gnsm.evaluation.segmentation.summarize_cases`: Spearman rho(score, Dice),
good (Dice >= 0.9) vs poor (< 0.7) AUROC, voxel AUROC; per kind). Same cases for both models.

    python benchmarks/eval_seg_real_corruptions.py --cache-dir CACHE [--fold 0016E5] [--severity 0.67] \
        [--max-frames 50] [--out benchmarks/results/seg_camvid_real_corruptions.json]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import markdown_table, write_json  # noqa: E402

from gnsm.datasets import CAMVID_VOID, load_camvid_frames  # noqa: E402
from gnsm.detectors import SegmentationQC  # noqa: E402
from gnsm.evaluation.segmentation import CORRUPTIONS, make_cases, summarize_cases  # noqa: E402
from gnsm.evaluation.segmentation.folds import fill_void, fold_masks  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--fold", default="0016E5")
    p.add_argument("--severity", type=float, default=0.67)
    p.add_argument("--max-frames", type=int, default=50, help="held-out frames used (evenly spaced)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/seg_camvid_real_corruptions.json")
    args = p.parse_args()
    f = load_camvid_frames(downsample=4, data_dir=args.data_dir)
    held = np.flatnonzero(fold_masks(f.sequences)[args.fold])
    held = held[np.linspace(0, held.size - 1, min(args.max_frames, held.size)).round().astype(int)]
    gt = fill_void(f.labels[held], CAMVID_VOID).astype(np.int64)
    cases = make_cases(list(gt), args.seed, CORRUPTIONS, (args.severity,), labels=11)  # classes 0..10 (void filled)
    preds = [c.pred.astype(np.int64) for c in cases]
    cond = [f.images[held[c.index]] for c in cases]
    dice = np.array([c.dice for c in cases])
    valid = [np.ones(c.pred.shape, bool) for c in cases]
    out = {"fold": args.fold, "frames": int(held.size), "severity": args.severity, "n_cases": len(cases),
           "kinds": list(CORRUPTIONS), "methods": {}}
    rows = []
    for name, with_image in (("gnsm_image", True), ("gnsm_mask", False)):
        det = SegmentationQC.load(os.path.join(args.cache_dir, f"qc_{'image' if with_image else 'mask'}_{args.fold}"),
                                  device="cpu")
        t0 = time.perf_counter()
        res = det.predict_maps(preds, cond=cond if with_image else None)
        seconds = time.perf_counter() - t0
        for score_name, score in ((name, res.pred_score), (name + "_map", np.array([m.mean() for m in res.anomaly_map]))):
            summary = summarize_cases(score, dice, res.anomaly_map, cases, valid)
            summary["score_seconds"] = seconds
            out["methods"][score_name] = summary
            rows.append([score_name, f"{summary['spearman']:.3f}", f"{summary['auroc_good_vs_poor']:.3f}",
                         f"{summary['voxel_auroc']['mean_per_case']:.3f}"]
                        + [f"{summary['per_kind'][k]['spearman']:.2f}" for k in CORRUPTIONS])
    print(markdown_table(["method", "rho", "AUROC good vs poor", "voxel AUROC (mean per case)"]
                         + [f"rho {k}" for k in CORRUPTIONS], rows))
    write_json(args.out, out)


if __name__ == "__main__":
    main()
