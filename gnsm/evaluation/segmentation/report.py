"""Reports of segmentation QC results: the markdown summary of an evaluation, and pictures of mask,
prediction, error and anomaly map (``gnsm evaluate-seg``, ``gnsm report-seg``).

:func:`markdown_summary` formats the dict of :func:`~gnsm.evaluation.segmentation.evaluate_camvid` or
:func:`~gnsm.evaluation.segmentation.evaluate_spine`.

:func:`write_report` takes the arrays an evaluation keeps (``gt``, ``pred``, ``anomaly_map``,
``score``, ``dice``, optional ``names``/``kind``/``severity``) and writes one PNG per case for the
``top`` most and least anomalous cases, plus a score-vs-Dice scatter plot. Volumes (3-D) are shown
as the axial slice (last axis) where the error, or else the anomaly map, is largest.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["markdown_summary", "plot_case", "plot_score_vs_dice", "pyplot", "save_figure", "write_report"]


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def markdown_summary(result: dict) -> str:
    """Markdown tables of an evaluation result (CamVid: per method and per corruption kind; spine: labels)."""
    lines = [f"# Segmentation QC: {result['dataset']}", ""]
    if result["dataset"] == "camvid":
        lines += [f"{result['n_train']} train maps, {result['n_cases']} scored cases from {result['n_val_maps']} val maps "
                  f"(shape {result['shape']}, downsample {result['downsample']}); fit {result['fit_seconds']:.0f}s", "",
                  "| method | Spearman rho(score, Dice) | AUROC good vs poor | voxel AUROC (pooled) | voxel AUROC (mean per case) |",
                  "|---|---|---|---|---|"]
        for name, m in result["methods"].items():
            v = m["voxel_auroc"]
            lines.append(f"| {name} | {_fmt(m['spearman'])} | {_fmt(m['auroc_good_vs_poor'])} | {_fmt(v['pooled'])} | "
                         f"{_fmt(v['mean_per_case'])} |")
        names = list(result["methods"])
        lines += ["", "Per corruption kind: Spearman / AUROC good vs poor / voxel AUROC", "",
                  "| kind | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for k in result["methods"][names[0]]["per_kind"]:
            cells = []
            for n in names:
                m = result["methods"][n]["per_kind"][k]
                cells.append(f"{_fmt(m['spearman'])} / {_fmt(m.get('auroc_good_vs_poor'))} / {_fmt(m['voxel_auroc'])}")
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
    else:
        lines += [f"voxel AUROC {result['voxel_auroc']:.3f} (foreground {result['voxel_auroc_foreground']:.3f}); "
                  f"failing labels {result['failing_labels']} rank {result['failing_labels_top_ranked']}", ""]
        if "prediction_flagged" in result:
            n_held = len(result["score_heldout_references"])
            lines += [f"scoring {result['scoring_used']}: prediction score {result['score_prediction']:.4g} "
                      f"(threshold {result['threshold']:.4g}) -> "
                      f"{'flagged' if result['prediction_flagged'] else 'NOT flagged'}, rank "
                      f"{result['prediction_rank_among_references']} of {n_held + 2} against the reference and "
                      f"{n_held} held-out references; held-out references flagged "
                      f"{result['heldout_flagged']} / {n_held}",
                      f"at the in-sample threshold {result['threshold_in_sample']:.4g}: prediction "
                      f"{'flagged' if result['prediction_flagged_in_sample'] else 'not flagged'}, held-out "
                      f"references flagged {result['heldout_flagged_in_sample']} / {n_held}", ""]
        if "baselines" in result:
            lines += _spine_baseline_lines(result)
        lines += ["| rank | label | Dice | mean anomaly | error fraction |", "|---|---|---|---|---|"]
        for r in result["label_ranking"]:
            lines.append(f"| {r['rank']} | {r['label']} | {r['dice']:.3f} | {r['mean_anomaly']:.3f} | "
                         f"{r['error_fraction']:.3f} |")
    return "\n".join(lines) + "\n"


def _spine_baseline_lines(result: dict) -> list[str]:
    """Free baselines beside GNSM on the spine prediction (voxel AUROC; case verdicts)."""
    base = result["baselines"]
    lines = ["Free baselines (no network) on the same cases:", "",
             "| voxel map | voxel AUROC | foreground |", "|---|---|---|",
             f"| GNSM ({result['scoring_used']}) | {_fmt(result['voxel_auroc'])} | "
             f"{_fmt(result['voxel_auroc_foreground'])} |"]
    for name, v in base["voxel"].items():
        lines.append(f"| {name} | {_fmt(v['voxel_auroc'])} | {_fmt(v['voxel_auroc_foreground'])} |")
    n_ref = len(result["score_heldout_references"]) + 1
    lines += ["", f"| case score | prediction flagged | rank of {n_ref + 1} | references flagged |",
              "|---|---|---|---|",
              f"| GNSM ({result['scoring_used']}) | {'yes' if result['prediction_flagged'] else 'no'} | "
              f"{result['prediction_rank_among_references']} | "
              f"{result['heldout_flagged'] + int(result['reference_flagged'])} / {n_ref} |"]
    for name, v in base["case"].items():
        lines.append(f"| {name} | {'yes' if v['prediction_flagged'] else 'no'} | {v['prediction_rank']} | "
                     f"{v['references_flagged']} / {n_ref} |")
    return lines + [""]


def pyplot():
    """pyplot on the non-interactive backend (reports are written on headless machines)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig: Any, path: str | Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _slice(volume: np.ndarray, index: int) -> np.ndarray:
    return volume[..., index] if volume.ndim == 3 else volume


def _pick_slice(error: np.ndarray, amap: np.ndarray) -> int:
    if amap.ndim != 3:
        return 0
    weight = error.reshape(-1, error.shape[-1]).sum(axis=0)
    if weight.max() == 0:
        weight = amap.reshape(-1, amap.shape[-1]).mean(axis=0)
    return int(np.argmax(weight))


def plot_case(gt: np.ndarray, pred: np.ndarray, amap: np.ndarray, path: str | Path, title: str = "",
              ignore_index: int | None = None, num_classes: int | None = None, image: np.ndarray | None = None) -> Path:
    """[frame |] ground truth | prediction | error (pred != gt) | anomaly map, side by side, saved as PNG
    (``image``: an optional 2-D frame ``(3, H, W)`` in [0, 1] shown first)."""
    plt = pyplot()

    error = pred != gt
    if ignore_index is not None and ignore_index >= 0:
        error &= gt != ignore_index
    z = _pick_slice(error, amap)
    K = int(num_classes or max(int(gt.max()), int(pred.max())) + 1)
    cmap = plt.get_cmap("tab20", max(K, 2))
    if image is not None and image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    panels = [] if image is None or gt.ndim != 2 else [(np.clip(np.moveaxis(image, 0, -1), 0, 1), "frame", {})]
    fig, axes = plt.subplots(1, 4 + len(panels), figsize=(4 * (4 + len(panels)), 4.2))
    panels += [(_slice(gt, z), "ground truth", dict(cmap=cmap, vmin=0, vmax=K - 1, interpolation="nearest")),
              (_slice(pred, z), "prediction", dict(cmap=cmap, vmin=0, vmax=K - 1, interpolation="nearest")),
              (_slice(error, z), f"error ({int(error.sum())} voxels)", dict(cmap="gray", vmin=0, vmax=1,
                                                                            interpolation="nearest")),
              (_slice(amap, z), "anomaly map", dict(cmap="inferno"))]
    for ax, (img, name, kw) in zip(axes, panels):
        im = ax.imshow(img.T if gt.ndim == 3 else img, **kw)
        ax.set_title(name + (f" (slice {z})" if gt.ndim == 3 else ""))
        ax.axis("off")
    fig.colorbar(im, ax=axes[-1], fraction=0.046)
    fig.suptitle(title)
    return save_figure(fig, path, dpi=90)


def plot_score_vs_dice(score: np.ndarray, dice: np.ndarray, path: str | Path, kind: np.ndarray | None = None,
                       title: str = "") -> Path:
    """Scatter of the case score against the mean Dice (colour = corruption kind when given)."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 5))
    if kind is None:
        ax.scatter(dice, score, s=6, alpha=0.5)
    else:
        for k in sorted(set(kind.tolist())):
            sel = kind == k
            ax.scatter(dice[sel], score[sel], s=6, alpha=0.5, label=str(k))
        ax.legend(markerscale=3, fontsize=8)
    ax.set_xlabel("mean Dice against ground truth")
    ax.set_ylabel("anomaly score")
    ax.set_title(title)
    return save_figure(fig, path, dpi=100)


def write_report(arrays: dict[str, Any], out_dir: str | Path, top: int = 3, prefix: str = "") -> list[Path]:
    """PNGs of the ``top`` most and least anomalous cases and the score-vs-Dice plot; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    score = np.asarray(arrays["score"], dtype=np.float64)
    dice = np.asarray(arrays["dice"], dtype=np.float64)
    names = arrays.get("names")
    kind = arrays.get("kind")
    sev = arrays.get("severity")
    ignore = arrays.get("ignore_index")
    ignore = None if ignore is None else int(ignore)
    order = np.argsort(-score, kind="stable")
    k = min(int(top), len(order))
    picks = [("most_anomalous", i, r) for r, i in enumerate(order[:k], 1)]
    picks += [("least_anomalous", i, r) for r, i in enumerate(order[::-1][:k], 1)]
    paths = []
    for label, i, rank in picks:
        parts = [f"score {score[i]:.3g}", f"mean Dice {dice[i]:.3f}"]
        if names is not None:
            parts.insert(0, str(names[i]))
        if kind is not None:
            parts.append(f"{kind[i]}" + (f" @ {float(sev[i]):.2f}" if sev is not None else ""))
        image = arrays["image"][i] if "image" in arrays else None
        paths.append(plot_case(arrays["gt"][i], arrays["pred"][i], arrays["anomaly_map"][i],
                               out / f"{prefix}{label}_{rank}.png", title=" | ".join(parts), ignore_index=ignore,
                               image=image))
    if len(score) > 1:
        paths.append(plot_score_vs_dice(score, dice, out / f"{prefix}score_vs_dice.png", kind,
                                        title="case score vs mean Dice"))
    return paths
