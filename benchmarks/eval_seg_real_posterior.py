"""The class-posterior readout of the image-conditioned QC of ``gnsm evaluate-seg camvid-real``: instead of
the denoising error, the posterior p(label | noisy mask, image) that the trained network implies
(``gnsm.core.posterior.class_posterior``, docs/design.md 1.9), read at the predicted label.

For each fold's cached QC models (image and mask only) and each scoring level, the prediction is noised as in
scoring (2 copies) and the network's output inverted for p(c | y); the map is -log p(predicted label | y),
averaged over copies and levels. (The prior the network brings from the context, p(c | y) Z_c^K normalized,
is not read: the noisy label's own likelihood is so peaked that the network's float32 output leaves the
posterior of the classes it rules out, and with them that normalization, undetermined.) Case score = the
map's mean. Same metrics, folds and block-bootstrap intervals as the command, with the segmenter's entropy as the
reference, and the AUROC of telling the predictions from the held-out ground truth (0.5 = chance, below it
the truth looks worse).

    python benchmarks/eval_seg_real_posterior.py --cache-dir CACHE [--data-dir DIR] \
        [--out benchmarks/results/seg_camvid_real_posterior.json]

CACHE is the --cache-dir of a finished ``gnsm evaluate-seg camvid-real`` run (segmenters and QC models).
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import camvid_real_folds, camvid_real_parser, write_json  # noqa: E402

from gnsm import ops  # noqa: E402
from gnsm.core.posterior import class_posterior  # noqa: E402
from gnsm.datasets import CAMVID_VOID  # noqa: E402
from gnsm.detectors import SegmentationQC  # noqa: E402
from gnsm.evaluation.segmentation.bootstrap import fold_metrics, per_frame_auroc, pooled_with_intervals  # noqa: E402
from gnsm.evaluation.segmentation.folds import fill_void  # noqa: E402
from gnsm.evaluation.segmentation.overlap import dice_iou  # noqa: E402



@torch.no_grad()
def posterior_maps(det: SegmentationQC, labels: np.ndarray, images: np.ndarray | None, copies: int = 2,
                   batch: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """-log p(label | y) of ``labels`` (n, H, W) under the network's posterior, averaged over copies and levels."""
    K = det.num_classes_
    taus = det._schedule().taus()
    levels = det._score_indices()
    _, conds = det._cases(list(labels), None if images is None else list(images), "X", "cond")
    gen = torch.Generator().manual_seed(seed)
    out = np.zeros(labels.shape, dtype=np.float64)
    for b0 in range(0, len(labels), batch):
        lab = torch.from_numpy(labels[b0:b0 + batch].astype(np.int64))
        cond = None if conds is None else torch.from_numpy(np.stack(conds[b0:b0 + batch]))
        idx = lab[:, None]
        for level in levels:
            tau = taus[level].expand(lab.shape[0]).contiguous()
            eps = det._level_eps(level)
            for _ in range(copies):
                y, _state = ops.relax_from_labels(lab, K, tau, eps=eps, generator=gen)
                post = class_posterior(det.model_(y, tau.log(), cond).float(), y, tau, eps)
                out[b0:b0 + batch] -= post.gather(1, idx).clamp_min(1e-12).log()[:, 0].numpy()
    return (out / (copies * len(levels))).astype(np.float32)


def main() -> None:
    p = camvid_real_parser(__doc__.splitlines()[0], "benchmarks/results/seg_camvid_real_posterior.json")
    p.add_argument("--n-boot", type=int, default=1000)
    args = p.parse_args()
    from sklearn.metrics import roc_auc_score
    f, folds = camvid_real_folds(args)
    fold_data, per_fold = [], {}
    for fo in folds:
        te = fo.test
        hard = fo.probs.argmax(1).astype(np.int64)
        gt = f.labels[te]
        dice = np.array([dice_iou(g, q, labels=12, ignore_index=CAMVID_VOID)[0] for g, q in zip(gt, hard)])
        valid = gt != CAMVID_VOID
        err = (hard != gt) & valid
        ent = -(fo.probs * np.log(np.clip(fo.probs, 1e-12, 1))).sum(1)
        scores = {"entropy": ent.mean((1, 2))}
        pixel = {"entropy": per_frame_auroc(list(ent), list(err), list(valid))}
        info = {"n_test": int(te.size)}
        for kind in ("image", "mask"):
            det = SegmentationQC.load(os.path.join(args.cache_dir, f"qc_{kind}_{fo.name}"), device="cpu")
            images = f.images[te] if kind == "image" else None
            t0 = time.perf_counter()
            maps = posterior_maps(det, hard, images)
            seconds = time.perf_counter() - t0
            g = posterior_maps(det, fill_void(gt, CAMVID_VOID).astype(np.int64), images).mean((1, 2))
            name = f"gnsm_{kind}_posterior"
            scores[name] = maps.mean((1, 2))
            pixel[name] = per_frame_auroc(list(maps), list(err), list(valid))
            info[name] = {"auroc_prediction_vs_ground_truth": float(roc_auc_score(
                np.r_[np.ones(len(g)), np.zeros(len(g))], np.r_[scores[name], g])),
                "mean_on_predictions": float(scores[name].mean()), "mean_on_ground_truth": float(g.mean())}
            info[f"gnsm_{kind}_frames_per_s"] = float(len(hard) / seconds)
        fold_data.append({"dice": dice, "scores": scores, "pixel": pixel})
        per_fold[fo.name] = info
        print(fo.name, {k: round(v["auroc_prediction_vs_ground_truth"], 3) for k, v in info.items()
                        if isinstance(v, dict)}, flush=True)
    methods = list(fold_data[0]["scores"])
    pooled = pooled_with_intervals(fold_data, methods, "entropy", n_boot=args.n_boot)
    per_fold_metrics = {name: {m: fold_metrics(fd["scores"][m], fd["dice"], fd["pixel"][m]) for m in methods}
                        for name, fd in zip(per_fold, fold_data)}
    print(f"{'method':32s} {'rho':>7s} {'worstQ':>7s} {'pixel':>7s}   diff rho vs entropy")
    for m in methods:
        v = pooled[m]
        d = v.get("diff_vs_ref", {}).get("spearman")
        print(f"{m:32s} {v['spearman']:+7.3f} {v['auroc_worst_quarter']:7.3f} {v['pixel_auroc']:7.3f}   "
              + ("-" if d is None else f"{d[0]:+.3f} [{d[1]:+.2f}, {d[2]:+.2f}]"))
    write_json(args.out, {
        "command": "python benchmarks/eval_seg_real_posterior.py --cache-dir CACHE",
        "pooled": pooled, "folds": per_fold,
        "per_fold_metrics": per_fold_metrics})


if __name__ == "__main__":
    main()
