"""Reports of an evaluation run: markdown tables, JSON with every per-seed number, ROC curve PNG.

All functions take the dict returned by :func:`gnsm.evaluation.evaluate`
(``{"protocol", "environment", "datasets": {name: {..., "detectors": {det: summary}}}}``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .metrics import auroc, mean_roc_curve

__all__ = ["format_mean_std", "markdown_report", "markdown_table", "plot_roc_curves", "write_json"]


def format_mean_std(mean: float, std: float, scale: float = 100.0, digits: int = 1) -> str:
    """``"86.6 ± 1.2"`` (values in percent by default)."""
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def _detectors(results: Mapping[str, Any]) -> list[str]:
    names: list[str] = []
    for ds in results["datasets"].values():
        for det in ds["detectors"]:
            if det not in names:
                names.append(det)
    return names


def markdown_table(results: Mapping[str, Any], metric: str = "auroc", digits: int = 1,
                   mean_row: bool = True) -> str:
    """Rows datasets, columns detectors, cells ``mean ± std`` in percent; best mean in bold.

    ``metric``: ``"auroc"``, ``"ap"`` or ``"time"`` (mean fit + score seconds per seed).
    The last row (``mean_row``) averages the per-dataset means over the datasets where every
    detector ran.
    """
    if metric not in ("auroc", "ap", "time"):
        raise ValueError(f"metric: expected 'auroc', 'ap' or 'time', got {metric!r}")
    dets = _detectors(results)
    lines = ["| dataset | " + " | ".join(dets) + " |", "|---" * (len(dets) + 1) + "|"]
    per_det: dict[str, list[float]] = {d: [] for d in dets}
    complete = 0
    for name, ds in results["datasets"].items():
        cells, values = [], {}
        for det in dets:
            s = ds["detectors"].get(det)
            if s is None:
                cells.append("–")
                continue
            if metric == "time":
                values[det] = s["fit_time_mean"] + s["score_time_mean"]
                cells.append(f"{values[det]:.2f}")
            else:
                values[det] = s[f"{metric}_mean"]
                cells.append(format_mean_std(s[f"{metric}_mean"], s[f"{metric}_std"], digits=digits))
        if metric != "time" and values:
            best = max(values.values())
            cells = [f"**{c}**" if det in values and values[det] == best else c
                     for det, c in zip(dets, cells)]
        if len(values) == len(dets):
            complete += 1
            for det, v in values.items():
                per_det[det].append(v)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if mean_row and metric != "time" and complete > 1:
        means = {d: float(np.mean(v)) for d, v in per_det.items()}
        best = max(means.values())
        cells = [(f"**{100 * m:.{digits}f}**" if m == best else f"{100 * m:.{digits}f}")
                 for m in means.values()]
        lines.append(f"| mean ({complete} sets) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(results: Mapping[str, Any], digits: int = 1) -> str:
    """AUROC, AP and time tables with a short header stating the protocol."""
    proto = results.get("protocol", {})
    seeds = proto.get("seeds", [])
    env = results.get("environment", {})
    head = (f"Protocol: {proto.get('split', '')}; seeds {seeds}. {proto.get('metrics', '')}. "
            f"Environment: {env.get('cpu_count', '?')} CPU, pyod {env.get('pyod', '?')}, "
            f"scikit-learn {env.get('scikit-learn', '?')}.")
    parts = [head, "", "### AUROC (%)", "", markdown_table(results, "auroc", digits), "",
             "### Average precision (%)", "", markdown_table(results, "ap", digits), "",
             "### Time per seed (s, fit + score)", "", markdown_table(results, "time"), ""]
    return "\n".join(parts)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def write_json(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``results`` (numpy values converted) as indented JSON; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(results), indent=1, allow_nan=False) + "\n",
                    encoding="utf-8")
    return path


def plot_roc_curves(curves: Mapping[str, Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]]],
                    path: str | os.PathLike, ncols: int = 3) -> Path:
    """One panel per dataset, one seed-averaged ROC curve per detector (mean AUROC in the legend).

    ``curves``: dataset -> detector -> list of per-seed ``(y_test, scores)``.
    """
    # The Agg canvas directly, not pyplot: no display needed and the user's backend is untouched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("curves: expected at least one dataset")
    names = list(curves)
    ncols = min(ncols, len(names))
    nrows = int(np.ceil(len(names) / ncols))
    fig = Figure(figsize=(4.2 * ncols, 4.0 * nrows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        for det, pairs in curves[name].items():
            fpr, tpr, _ = mean_roc_curve(pairs)
            auc = np.mean([auroc(y, s) for y, s in pairs])  # mean per-seed AUROC, as in the tables
            ax.plot(fpr, tpr, lw=1.3, label=f"{det} ({100 * auc:.1f})")
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
        ax.set_title(f"{name} ({len(next(iter(curves[name].values())))} seeds)")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=7, loc="lower right")
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
