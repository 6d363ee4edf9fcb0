"""Per-level view of the image-conditioned QC of ``gnsm evaluate-seg camvid-real``: for each fold's cached
QC model, each scoring level's raw denoising error (no standardization, no density head) as a case score
(mean over the frame) and as a pixel map, on the held-out predictions and on the held-out ground truth.

It answers why the case score does not beat the segmenter's entropy: if the model gives the true masks a
higher error than the predictions, it measures how much detail a mask holds, not whether it is right.

    python benchmarks/eval_seg_real_levels.py --cache-dir CACHE [--data-dir DIR] \
        [--out benchmarks/results/seg_camvid_real_levels.json]

CACHE is the --cache-dir of a finished ``gnsm evaluate-seg camvid-real`` run (segmenters and QC models).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import camvid_real_folds, camvid_real_parser, write_json  # noqa: E402

from gnsm.datasets import CAMVID_VOID  # noqa: E402
from gnsm.detectors import SegmentationQC  # noqa: E402
from gnsm.evaluation.segmentation.bootstrap import per_frame_auroc  # noqa: E402
from gnsm.evaluation.segmentation.folds import fill_void  # noqa: E402
from gnsm.evaluation.segmentation.overlap import dice_iou  # noqa: E402


def main() -> None:
    p = camvid_real_parser(__doc__.splitlines()[0], "benchmarks/results/seg_camvid_real_levels.json")
    args = p.parse_args()
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score
    f, folds = camvid_real_folds(args)
    out = {}
    for fo in folds:
        te = fo.test
        det = SegmentationQC.load(os.path.join(args.cache_dir, f"qc_image_{fo.name}"), device="cpu")
        hard = fo.probs.argmax(1).astype(np.int64)
        gt = f.labels[te]
        dice = np.array([dice_iou(g, q, labels=12, ignore_index=CAMVID_VOID)[0] for g, q in zip(gt, hard)])
        cond = list(f.images[te])
        fm = np.stack(det.feature_maps(list(hard), cond=cond))
        gtm = np.stack(det.feature_maps(list(fill_void(gt, CAMVID_VOID).astype(np.int64)), cond=cond))
        valid = gt != CAMVID_VOID
        err = (hard != gt) & valid
        ent = -(fo.probs * np.log(np.clip(fo.probs, 1e-12, 1))).sum(1)
        rows = {"entropy": {"rho": float(spearmanr(ent.mean((1, 2)), dice).statistic),
                            "pixel_auroc": float(np.nanmean(per_frame_auroc(list(ent), list(err), list(valid))))}}
        for c, level in enumerate(det._score_indices()):
            case = fm[:, c].mean((1, 2))
            gt_case = gtm[:, c].mean((1, 2))
            rows[f"level_{level}"] = {
                "eps": det._level_eps(level), "tau": float(det._schedule().taus()[level]),
                "rho": float(spearmanr(case, dice).statistic),
                "pixel_auroc": float(np.nanmean(per_frame_auroc(list(fm[:, c]), list(err), list(valid)))),
                "mean_error_on_predictions": float(case.mean()), "mean_error_on_ground_truth": float(gt_case.mean()),
                "auroc_prediction_vs_ground_truth": float(roc_auc_score(
                    np.r_[np.ones(len(case)), np.zeros(len(gt_case))], np.r_[case, gt_case]))}
        out[fo.name] = {"n_test": int(te.size), "rows": rows}
        print(fo.name, json.dumps(rows, indent=1), flush=True)
    write_json(args.out, {"command": "python benchmarks/eval_seg_real_levels.py --cache-dir CACHE", "folds": out})


if __name__ == "__main__":
    main()
