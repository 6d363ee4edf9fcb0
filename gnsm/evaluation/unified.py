"""Unified (multi-class) anomaly-detection protocol: one model for many normal classes.

Protocol (HGAD, issue 7): split every class once into train/test parts (stratified, seeded); then
for each class c, the "normal" data are all other classes: train on their train part, test on
their test part plus the test part of c, which is the anomaly class. Each method sees the class
labels of its training rows (it may ignore them) and never a test row's label. Each split is
scored by AUROC; the summary is the mean over splits.

Taking the anomalies from c's test part only keeps every test row out of the train parts, so
tuning on the train parts (``leave_one_class_out_splits`` on the train rows alone) never touches
test data.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from sklearn.model_selection import train_test_split

from .metrics import auroc

__all__ = ["UnifiedSplit", "stratified_train_test", "leave_one_class_out_splits", "evaluate_unified", "unified_markdown_table", "Method"]

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
