"""Unified (multi-class) anomaly-detection protocol: one model for many normal classes.

Protocol (the unified setting of HGAD): split every class once into train/test parts (stratified, seeded); then
for each class c, the "normal" data are all other classes: train on their train part, test on
their test part plus the test part of c, which is the anomaly class. Each method sees the class
labels of its training rows (it may ignore them) and never a test row's label. Each split is
scored by AUROC; the summary is the mean over splits.

Taking the anomalies from c's test part only keeps every test row out of the train parts, so
tuning on the train parts (``leave_one_class_out_splits`` on the train rows alone) never touches
test data.

The same protocol runs on tables whose label has several normal classes
(:func:`gnsm.datasets.load_class_table`, then ``table_splits``): rows are categorical records (object arrays, columns as in
the table), and ``onehot_encoder`` / ``on_features`` / ``on_frames`` turn a method on feature
vectors or on DataFrames into a method on those rows. ``evaluate_unified_seeds`` repeats a protocol
over seeds and ``summarize_seeds`` / ``seeds_markdown_table`` report mean +- std over the seeds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from sklearn.model_selection import train_test_split

from .baselines import CategoryFrequency
from .metrics import auroc

__all__ = ["UnifiedSplit", "stratified_train_test", "leave_one_class_out_splits", "evaluate_unified", "unified_markdown_table",
           "Method", "table_splits", "onehot_encoder", "on_features", "on_frames", "frequency_method",
           "evaluate_unified_seeds", "summarize_seeds", "seeds_markdown_table"]

# (X_train, class labels of X_train, X_test) -> anomaly scores of X_test (higher = more anomalous),
# or (scores, info) with a JSON-friendly dict of facts about the fit (kept per split).
Method = Callable[[np.ndarray, np.ndarray, np.ndarray], Any]


@dataclass
class UnifiedSplit:
    """One leave-one-class-out split; ``is_anomaly`` is 1 for rows of ``held_out``."""

    held_out: Any
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    is_anomaly: np.ndarray


def stratified_train_test(y: np.ndarray, test_size: float = 0.3, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) row indices of a seeded split stratified by class."""
    tr, te = train_test_split(np.arange(len(y)), test_size=test_size, stratify=y, random_state=random_state)
    return np.sort(tr), np.sort(te)


def leave_one_class_out_splits(X: np.ndarray, y: np.ndarray, test_size: float = 0.3,
                               random_state: int = 0, classes: Sequence[Any] | None = None) -> list[UnifiedSplit]:
    """One ``UnifiedSplit`` per class in ``classes`` (default: all classes of ``y``, sorted)."""
    X, y = np.asarray(X), np.asarray(y)
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"y: expected {X.shape[0]} labels, got {y.shape[0]}")
    tr, te = stratified_train_test(y, test_size, random_state)
    splits = []
    for c in (np.unique(y) if classes is None else classes):
        keep = tr[y[tr] != c]
        splits.append(UnifiedSplit(held_out=c.item() if isinstance(c, np.generic) else c,
                                   X_train=X[keep], y_train=y[keep], X_test=X[te], y_test=y[te],
                                   is_anomaly=(y[te] == c).astype(np.int64)))
    return splits


# Read by forked workers of ``evaluate_unified``: closures cannot be pickled, but fork copies them.
_JOBS: tuple[Sequence[UnifiedSplit], Mapping[str, Method]] | None = None


def _run_one(task: tuple[int, str]) -> tuple[float, float, dict | None]:
    i, name = task
    splits, methods = _JOBS  # type: ignore[misc]
    split = splits[i]
    t0 = time.perf_counter()
    out = methods[name](split.X_train, split.y_train, split.X_test)
    scores, info = out if isinstance(out, tuple) else (out, None)
    seconds = time.perf_counter() - t0
    return auroc(split.is_anomaly, np.asarray(scores, dtype=np.float64)), seconds, info


def evaluate_unified(splits: Sequence[UnifiedSplit], methods: Mapping[str, Method],
                     log: Callable[[str], None] | None = None, n_jobs: int = 1) -> dict[str, Any]:
    """Run every method on every split; returns per-split AUROC, seconds (and info), and the mean AUROC.

    ``n_jobs > 1`` runs (split, method) pairs in forked worker processes (Linux); the methods must
    then limit their own threads. Results do not depend on ``n_jobs``.
    """
    global _JOBS
    tasks = [(i, name) for i in range(len(splits)) for name in methods]
    out: dict[str, Any] = {"held_out": [s.held_out for s in splits], "methods": {}}
    for name in methods:
        out["methods"][name] = {"auroc": [], "seconds": []}
    _JOBS = (splits, methods)
    pool = None
    try:
        if n_jobs > 1:
            import multiprocessing as mp
            pool = mp.get_context("fork").Pool(n_jobs)
            values = pool.imap(_run_one, tasks)  # in task order, as they finish
        else:
            values = map(_run_one, tasks)
        for (i, name), (value, seconds, info) in zip(tasks, values):
            rec = out["methods"][name]
            rec["auroc"].append(value)
            rec["seconds"].append(seconds)
            if info is not None:
                rec.setdefault("info", []).append(info)
            if log is not None:
                log(f"held out {splits[i].held_out}: {name:<18} AUROC {100 * value:6.2f}  ({seconds:.1f}s)")
    finally:
        _JOBS = None
        if pool is not None:
            pool.terminate()
    for rec in out["methods"].values():
        rec["mean_auroc"] = float(np.mean(rec["auroc"]))
        rec["total_seconds"] = float(np.sum(rec["seconds"]))
    return out


def unified_markdown_table(results: Mapping[str, Any], digits: int = 1) -> str:
    """Markdown table: one row per method, AUROC x 100 per held-out class, then the mean."""
    held = results["held_out"]
    head = "| method | " + " | ".join(str(h) for h in held) + " | mean |"
    rule = "|---|" + "---:|" * (len(held) + 1)
    rows = [head, rule]
    for name, rec in results["methods"].items():
        cells = [f"{100 * v:.{digits}f}" for v in rec["auroc"]] + [f"**{100 * rec['mean_auroc']:.{digits}f}**"]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------- tables with several normal classes
def table_splits(X: Any, y: np.ndarray, test_size: float = 0.3, random_state: int = 0,
                 classes: Sequence[Any] | None = None) -> list[UnifiedSplit]:
    """``leave_one_class_out_splits`` on a table: rows become an object array (column order of X)."""
    values = X.to_numpy(dtype=object) if hasattr(X, "to_numpy") else np.asarray(X, dtype=object)
    return leave_one_class_out_splits(values, y, test_size, random_state, classes)


def onehot_encoder(X: Any) -> Callable[[np.ndarray], np.ndarray]:
    """A fixed sklearn ``OneHotEncoder`` over the categories of every column of ``X`` (the table's schema).

    Fitted on the whole table's category lists, never on labels: a category a training part never
    contains still has its own column (constant 0 in training), as the reserved unseen slot of
    ``gnsm.data.TabularEncoder`` does. Returns ``encode(rows) -> float64 (n, sum K_j)``.
    """
    from sklearn.preprocessing import OneHotEncoder

    values = X.to_numpy(dtype=object) if hasattr(X, "to_numpy") else np.asarray(X, dtype=object)
    cats = [sorted(set(values[:, j].tolist())) for j in range(values.shape[1])]
    enc = OneHotEncoder(categories=cats, handle_unknown="ignore", sparse_output=False, dtype=np.float64)
    enc.fit(values[:1])

    def encode(rows: np.ndarray) -> np.ndarray:
        return enc.transform(np.asarray(rows, dtype=object))
    return encode


def on_features(encode: Callable[[np.ndarray], np.ndarray], method: Method) -> Method:
    """The method run on ``encode(rows)`` instead of the rows (labels passed through)."""
    def run(X: np.ndarray, y: np.ndarray, Xt: np.ndarray) -> Any:
        return method(encode(X), y, encode(Xt))
    return run


def on_frames(columns: Sequence[Any], method: Method) -> Method:
    """The method run on pandas DataFrames with ``columns`` (for detectors that read a table)."""
    import pandas as pd

    def run(X: np.ndarray, y: np.ndarray, Xt: np.ndarray) -> Any:
        return method(pd.DataFrame(X, columns=list(columns)), y, pd.DataFrame(Xt, columns=list(columns)))
    return run


def frequency_method(X: Any, y: np.ndarray, Xt: Any) -> np.ndarray:
    """The per-field category-frequency baseline (:class:`~gnsm.evaluation.baselines.CategoryFrequency`) on frames."""
    return CategoryFrequency().fit(X).decision_function(Xt)


def evaluate_unified_seeds(make_splits: Callable[[int], Sequence[UnifiedSplit]], methods: Mapping[str, Method],
                           seeds: Sequence[int], log: Callable[[str], None] | None = None,
                           n_jobs: int = 1) -> dict[str, Any]:
    """``evaluate_unified`` once per seed (``make_splits(seed)``); returns ``{"seeds", "runs", "summary"}``.

    The seed only changes the train/test split; methods that take a seed get it from their own
    settings (a fixed seed keeps the comparison about the split).
    """
    runs = {}
    for seed in seeds:
        if log is not None:
            log(f"-- seed {seed}")
        runs[str(seed)] = evaluate_unified(make_splits(seed), methods, log=log, n_jobs=n_jobs)
    return {"seeds": list(seeds), "runs": runs, "summary": summarize_seeds(runs)}


def summarize_seeds(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean +- std over seeds (ddof=0) of each method's per-class AUROC and of its mean over classes."""
    first = next(iter(runs.values()))
    held = list(first["held_out"])
    out: dict[str, Any] = {"held_out": held, "methods": {}}
    for name in first["methods"]:
        per_seed = np.array([r["methods"][name]["auroc"] for r in runs.values()], dtype=np.float64)  # (S, C)
        means = per_seed.mean(axis=1)
        out["methods"][name] = {
            "auroc_mean": per_seed.mean(axis=0).tolist(), "auroc_std": per_seed.std(axis=0).tolist(),
            "mean_auroc": float(means.mean()), "mean_auroc_std": float(means.std()),
            "seconds_per_fit": float(np.mean([np.mean(r["methods"][name]["seconds"]) for r in runs.values()])),
        }
    return out


def seeds_markdown_table(summary: Mapping[str, Any], digits: int = 1) -> str:
    """Markdown: one row per method, mean AUROC x 100 per held-out class, then mean +- std over seeds."""
    held = summary["held_out"]
    rows = ["| method | " + " | ".join(str(h) for h in held) + " | mean ± std |", "|---|" + "---:|" * (len(held) + 1)]
    best = max(rec["mean_auroc"] for rec in summary["methods"].values())
    for name, rec in summary["methods"].items():
        cells = [f"{100 * v:.{digits}f}" for v in rec["auroc_mean"]]
        m = f"{100 * rec['mean_auroc']:.{digits}f} ± {100 * rec['mean_auroc_std']:.{digits}f}"
        cells.append(f"**{m}**" if rec["mean_auroc"] == best else m)
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
