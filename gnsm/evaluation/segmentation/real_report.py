"""Markdown table and figures of the real-prediction CamVid evaluation (:mod:`.real`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .report import pyplot, save_figure, write_report

__all__ = ["markdown_real", "write_real_figures"]

_LABELS = {"spearman": "Spearman rho(score, Dice)", "auroc_worst_quarter": "AUROC worst quarter",
           "pixel_auroc": "pixel AUROC (mean per frame)"}


def _cell(entry: dict, key: str) -> str:
    v, ci = entry.get(key), entry.get(key + "_ci")
    if v is None or not np.isfinite(v):
        return "-"
    return f"{v:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{v:.3f}"


def _diff(entry: dict, key: str) -> str:
    d = entry.get("diff_vs_ref", {}).get(key)
    if d is None:
        return "-"
    return f"{d[0]:+.3f} [{d[1]:+.2f}, {d[2]:+.2f}]"


def markdown_real(result: dict) -> str:
    """The pooled table (frame-weighted over folds, block-bootstrap 95 % intervals), per-fold rows and notes."""
    ref = result["bootstrap"]["reference"]
    lines = [f"# CamVid, real segmenter predictions, out of fold by sequence ({result['n_frames']} frames, "
             f"{result['shape'][0]}x{result['shape'][1]})", "",
             f"Frame-weighted means over folds; [95 % moving-block bootstrap, blocks of "
             f"{result['bootstrap']['block']} frames]; diff = method - {ref} (paired).", "",
             "| method | " + " | ".join(_LABELS.values()) + " | diff rho | diff AUROC worst quarter | diff pixel AUROC |",
             "|---" * 7 + "|"]
    for m, e in result["pooled_over_folds"].items():
        lines.append(f"| {m} | " + " | ".join(_cell(e, k) for k in _LABELS) + " | "
                     + " | ".join(_diff(e, k) for k in _LABELS) + " |")
    lines += ["", "Per fold (held-out sequence): segmenter mIoU, mean Dice, rho / AUROC worst quarter / pixel AUROC:", "",
              "| fold | frames | segmenter mIoU | mean Dice | method | rho | AUROC worst quarter | pixel AUROC |",
              "|---|---|---|---|---|---|---|---|"]
    for f in result["folds"]:
        for m in ("gnsm_image", "gnsm_image_map", "gnsm_mask", "gnsm_mask_map", "gnsm_image+entropy", "entropy",
                  "positional_prior"):
            r = result["per_fold"][f["fold"]][m]
            lines.append(f"| {f['fold']} | {f['n_test']} | {f['segmenter']['miou']:.3f} | {f['mean_dice']:.3f} | {m} | "
                         + " | ".join("-" if not np.isfinite(r[k]) else f"{r[k]:.3f}" for k in _LABELS) + " |")
    lines += ["", "Ceiling (image QC scoring the held-out ground truth): mean case score on ground truth vs on "
              "predictions, AUROC of telling them apart:", ""]
    for f in result["folds"]:
        c = f["ceiling"]
        lines.append(f"- {f['fold']}: {c['score_on_ground_truth_mean']:.3g} vs {c['score_on_predictions_mean']:.3g}, "
                     f"AUROC {c['auroc_prediction_vs_ground_truth']:.3f}")
    fps = [f["scoring_frames_per_s"] for f in result["folds"]]
    lines += ["", "Scoring throughput (frames / s, this machine): " + ", ".join(
        f"{k} {np.mean([x[k] for x in fps]):.1f}" for k in fps[0]), ""]
    lines.append("Pooled over all frames (context only; each fold has its own segmenter): rho " + ", ".join(
        f"{m} {v:.3f}" for m, v in result["pooled_cases_context"].items()))
    return "\n".join(lines) + "\n"


def write_real_figures(arrays: dict[str, Any], out_dir: str | Path, top: int = 3) -> list[Path]:
    """Score vs Dice per method, pixel ROC curves per method, and the most / least anomalous frames
    (frame, ground truth, prediction, error, GNSM anomaly map)."""
    plt = pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    methods = [k[len("score__"):] for k in arrays if k.startswith("score__")]
    folds = arrays["fold"]
    dice = np.asarray(arrays["dice"], float)
    cols = 3
    rows = -(-len(methods) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax, m in zip(axes.ravel(), methods):
        for f in sorted(set(folds.tolist())):
            sel = folds == f
            s = np.asarray(arrays[f"score__{m}"], float)[sel]
            ax.scatter(dice[sel], (s - s.mean()) / max(s.std(), 1e-12), s=6, alpha=0.6, label=f)
        ax.set_title(m, fontsize=10)
        ax.set_xlabel("mean Dice")
        ax.set_ylabel("score (standardized per fold)")
    for ax in axes.ravel()[len(methods):]:
        ax.axis("off")
    axes.ravel()[0].legend(markerscale=3, fontsize=8)
    paths = [save_figure(fig, out / "camvid-real_score_vs_dice.png", dpi=90)]
    fig, ax = plt.subplots(figsize=(6, 5))
    for k in arrays:
        if k.startswith("roc__"):
            fpr, tpr = arrays[k]
            ax.plot(fpr, tpr, label=k[len("roc__"):])
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate (correct pixels)")
    ax.set_ylabel("true positive rate (wrong pixels)")
    ax.set_title("pixel ROC, mean over frames")
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out / "camvid-real_pixel_roc.png", dpi=100))
    cases = {k: arrays[k] for k in ("gt", "pred", "anomaly_map", "dice", "names", "image", "ignore_index")}
    score = np.asarray(arrays["score"], float).copy()  # fold models differ in scale: rank on per-fold z-scores
    for f in set(folds.tolist()):
        sel = folds == f
        score[sel] = (score[sel] - score[sel].mean()) / max(score[sel].std(), 1e-12)
    cases["score"] = score
    paths += write_report(cases, out, top=top, prefix="camvid-real_")
    return paths
