"""QC of a real segmenter's predictions on CamVid, out of fold by video sequence (``evaluate-seg camvid-real``).

Protocol (docs/segmentation.md, "Real predictions"): frames of ``train`` + ``val`` are grouped by
sequence; for each held-out sequence a segmenter (:mod:`.segmenter`) and the QC models train on the
other sequences' frames and ground truth, and the held-out frames' predictions are scored. Methods, all
on the same cases:

- ``gnsm_image``: :class:`~gnsm.detectors.SegmentationQC` conditioned on the frame, scoring (frame,
  hard predicted mask); ``gnsm_image_soft``: the same model on the soft probabilities;
  ``gnsm_image_map``: its case score taken as the mean of the anomaly map instead of the density head;
- ``gnsm_mask``: the mask-only SegmentationQC (no image); ``gnsm_mask_map``: its anomaly map's mean;
- ``gnsm_image+entropy``: reads the segmenter's probabilities too: the mean of the fold ranks of
  ``gnsm_image`` and ``entropy`` (maps: the mean of the two maps standardized over the fold);
- the segmenter's own uncertainty: ``entropy`` (mean softmax entropy; map: entropy per pixel),
  ``one_minus_max_p`` (mean 1 - max p; map: 1 - max p), ``frac_max_p_below_0.5`` (no map);
- ``positional_prior``: mean -log p(label | position) under the training masks' label frequencies.

Dice per frame: mean over the classes present in the label or the prediction, void excluded. Ceiling:
the image QC also scores the held-out ground truth, so its score on true masks is reported next to its
score on predictions (``ceiling``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...datasets import CAMVID_VOID, load_camvid_frames
from ..metrics import mean_roc_curve
from .bootstrap import fold_metrics, per_frame_auroc, pooled_with_intervals
from .eval import PositionalFrequency, fit_or_load
from .folds import fill_void, predict_out_of_fold
from .overlap import dice_iou

__all__ = ["evaluate_camvid_real", "REAL_METHODS", "QC_DEFAULTS"]

NUM_CLASSES = 11  # CamVid classes without void; the segmenter and the QC models share this label space
REAL_METHODS = ("gnsm_image", "gnsm_image_soft", "gnsm_image_map", "gnsm_mask", "gnsm_mask_map", "gnsm_image+entropy",
                "entropy", "one_minus_max_p", "frac_max_p_below_0.5", "positional_prior")
_REFERENCE = "entropy"
#: SegmentationQC settings of the evaluation (both QC models; the mask-only one has no image channels)
QC_DEFAULTS: dict[str, Any] = {"num_classes": NUM_CLASSES, "coord_channels": True, "flip_axes": (1,),
                               "channels": (16, 32, 64), "patch_size": (64, 64), "n_steps": 1000, "batch_size": 8,
                               "eps_max": 0.3, "scoring": "denoise"}


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)


def _zscore(maps: np.ndarray) -> np.ndarray:
    return (maps - maps.mean()) / max(float(maps.std()), 1e-12)


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata
    return rankdata(x) / len(x)


def _fit_qc(params: dict, masks: np.ndarray, cond: np.ndarray | None, cache: Path | None, name: str) -> tuple[Any, float]:
    model_dir = None if cache is None else str(cache / name)
    det, seconds = fit_or_load(params, list(masks), model_dir, **({} if cond is None else {"cond": list(cond)}))
    stale = {k: v for k, v in params.items() if k not in ("verbose", "device")
             and _plain(det.get_params()[k]) != _plain(v)}
    if stale:
        raise ValueError(f"{model_dir}: the cached QC model was trained with other settings ({sorted(stale)}); "
                         "use another --cache-dir")
    return det, seconds


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, (tuple, list)) else v


def _score_qc(det: Any, cases: list, cond: np.ndarray | None) -> tuple[np.ndarray, list[np.ndarray], float]:
    t0 = time.perf_counter()
    res = det.predict_maps(cases, cond=None if cond is None else list(cond))
    return res.pred_score, res.anomaly_map, time.perf_counter() - t0


def _segmenter_quality(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    ok = gt != CAMVID_VOID
    ious = []
    for c in range(NUM_CLASSES):
        g, p = (gt == c) & ok, (pred == c) & ok
        union = (g | p).sum()
        if union:
            ious.append((g & p).sum() / union)
    return {"miou": float(np.mean(ious)), "pixel_accuracy": float((gt == pred)[ok].mean())}


def evaluate_camvid_real(data_dir: str | Path | None = None, downsample: int = 4, seg_epochs: int = 40,
                         qc_params: dict | None = None, cache_dir: str | Path | None = None, seed: int = 0,
                         n_boot: int = 1000, block: int = 10, verbose: bool = False) -> dict[str, Any]:
    """Run the protocol of the module docstring; returns the result dict (``_arrays``: what the figures need)."""
    t_start = time.perf_counter()
    frames = load_camvid_frames(("train", "val"), downsample, data_dir)
    cache = None if cache_dir is None else Path(cache_dir)
    params = {**QC_DEFAULTS, "random_state": seed, "verbose": verbose, **(qc_params or {})}
    t0 = time.perf_counter()
    folds = predict_out_of_fold(frames.images, frames.labels, frames.sequences, NUM_CLASSES, CAMVID_VOID,
                                cache_dir=cache, epochs=seg_epochs, seed=seed, verbose=verbose)
    seg_seconds = time.perf_counter() - t0
    fold_data, fold_info = [], []
    n = len(frames.names)
    keep = {k: [None] * n for k in ("pred", "amap", "dice", "entropy_map", "fold")}
    method_scores = {m: np.zeros(n) for m in REAL_METHODS}
    roc_pairs: dict[str, list] = {m: [] for m in REAL_METHODS}
    for fold in folds:
        tr, te = fold.train, fold.test
        images, gt = frames.images, frames.labels
        train_masks = fill_void(gt[tr], CAMVID_VOID)
        probs = fold.probs
        hard = probs.argmax(axis=1).astype(np.int64)
        valid = gt[te] != CAMVID_VOID
        errors = (hard != gt[te]) & valid
        dice = np.array([dice_iou(g, p, labels=NUM_CLASSES + 1, ignore_index=CAMVID_VOID)[0]
                         for g, p in zip(gt[te], hard)])
        if verbose:
            print(f"fold {fold.name}: QC models on {tr.size} frames, scoring {te.size}", flush=True)
        qc_img, fit_img = _fit_qc({**params, "cond_channels": 3}, train_masks, images[tr], cache,
                                  f"qc_image_{fold.name}")
        qc_mask, fit_mask = _fit_qc({**params, "cond_channels": 0}, train_masks, None, cache, f"qc_mask_{fold.name}")
        s_img, m_img, t_img = _score_qc(qc_img, list(hard), images[te])
        s_soft, m_soft, t_soft = _score_qc(qc_img, list(probs), images[te])
        s_mask, m_mask, t_mask = _score_qc(qc_mask, list(hard), None)
        s_gt, m_gt, _ = _score_qc(qc_img, list(fill_void(gt[te], CAMVID_VOID).astype(np.int64)), images[te])
        ent = _entropy(probs)
        one_minus = 1.0 - probs.max(axis=1)
        prior = PositionalFrequency(NUM_CLASSES).fit(train_masks)
        m_prior = np.stack([prior.anomaly_map(p) for p in hard])
        m_img_arr, m_mask_arr = np.stack(m_img), np.stack(m_mask)
        m_combo = 0.5 * (_zscore(m_img_arr) + _zscore(ent))
        scores = {"gnsm_image": s_img, "gnsm_image_soft": s_soft, "gnsm_image_map": m_img_arr.mean(axis=(1, 2)),
                  "gnsm_mask": s_mask, "gnsm_mask_map": m_mask_arr.mean(axis=(1, 2)),
                  "gnsm_image+entropy": 0.5 * (_ranks(s_img) + _ranks(ent.mean(axis=(1, 2)))),
                  "entropy": ent.mean(axis=(1, 2)), "one_minus_max_p": one_minus.mean(axis=(1, 2)),
                  "frac_max_p_below_0.5": (probs.max(axis=1) < 0.5).mean(axis=(1, 2)),
                  "positional_prior": m_prior.mean(axis=(1, 2))}
        maps = {"gnsm_image": m_img_arr, "gnsm_image_soft": np.stack(m_soft), "gnsm_image_map": m_img_arr,
                "gnsm_mask": m_mask_arr, "gnsm_mask_map": m_mask_arr, "gnsm_image+entropy": m_combo, "entropy": ent,
                "one_minus_max_p": one_minus, "positional_prior": m_prior}
        pixel = {k: per_frame_auroc(list(v), list(errors), list(valid)) for k, v in maps.items()}
        for k, v in maps.items():
            roc_pairs[k] += [(e[ok], m[ok]) for e, m, ok in zip(errors, v, valid) if 0 < e[ok].sum() < ok.sum()]
        fold_data.append({"dice": dice, "scores": scores, "pixel": pixel})
        gt_scores = np.asarray(s_gt)
        fold_info.append({
            "fold": fold.name, "n_train": int(tr.size), "n_test": int(te.size),
            "segmenter": {**_segmenter_quality(gt[te], hard), **fold.info}, "mean_dice": float(dice.mean()),
            "qc_fit_seconds": {"image": fit_img, "mask": fit_mask},
            "qc_train_info": {"image": qc_img.train_info_, "mask": qc_mask.train_info_},
            "scoring_frames_per_s": {"image_hard": te.size / t_img, "image_soft": te.size / t_soft,
                                     "mask": te.size / t_mask},
            "ceiling": {"score_on_ground_truth_mean": float(gt_scores.mean()),
                        "score_on_predictions_mean": float(np.mean(s_img)),
                        "auroc_prediction_vs_ground_truth": _auroc_pair(np.asarray(s_img), gt_scores),
                        "map_mean_on_ground_truth": float(np.mean([m.mean() for m in m_gt])),
                        "map_mean_on_predictions": float(m_img_arr.mean())}})
        for j, i in enumerate(te):
            keep["pred"][i], keep["amap"][i], keep["fold"][i] = hard[j], m_img_arr[j], fold.name
            keep["dice"][i], keep["entropy_map"][i] = dice[j], ent[j]
        for m in REAL_METHODS:
            method_scores[m][te] = scores[m]
    per_fold = {info["fold"]: {m: fold_metrics(f["scores"][m], f["dice"], f["pixel"].get(m)) for m in REAL_METHODS}
                for info, f in zip(fold_info, fold_data)}
    pooled = pooled_with_intervals(fold_data, REAL_METHODS, _REFERENCE, n_boot=n_boot, block=block, seed=seed)
    context = _pooled_context(fold_data)
    qc_public = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items() if k != "verbose"}
    return {
        "dataset": "camvid-real", "downsample": int(downsample), "shape": list(frames.labels.shape[1:]),
        "n_frames": n, "seed": int(seed), "segmenter_epochs": int(seg_epochs), "qc_params": qc_public,
        "bootstrap": {"n_boot": int(n_boot), "block": int(block), "level": 0.95, "reference": _REFERENCE},
        "folds": fold_info, "per_fold": per_fold, "pooled_over_folds": pooled, "pooled_cases_context": context,
        "segmenter_seconds": seg_seconds, "total_seconds": time.perf_counter() - t_start,
        "_arrays": {"names": np.array(frames.names), "image": frames.images, "gt": frames.labels,
                    "pred": np.stack(keep["pred"]), "anomaly_map": np.stack(keep["amap"]),
                    "entropy_map": np.stack(keep["entropy_map"]), "score": method_scores["gnsm_image"],
                    "dice": np.array(keep["dice"], float), "ignore_index": np.int64(CAMVID_VOID),
                    "fold": np.array(keep["fold"]), **{f"score__{m}": v for m, v in method_scores.items()},
                    **{f"roc__{m}": np.stack(mean_roc_curve(pairs)[:2]) for m, pairs in roc_pairs.items() if pairs}},
    }


def _auroc_pair(pos: np.ndarray, neg: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]))


def _pooled_context(fold_data: Sequence[dict]) -> dict[str, float]:
    """Spearman rho over all frames pooled across folds (context only: each fold has its own segmenter)."""
    from scipy.stats import spearmanr
    dice = np.concatenate([f["dice"] for f in fold_data])
    out = {}
    for m in REAL_METHODS:
        s = np.concatenate([f["scores"][m] for f in fold_data])
        out[m] = float(spearmanr(s, dice).statistic) if np.ptp(s) > 0 and np.ptp(dice) > 0 else float("nan")
    return out
