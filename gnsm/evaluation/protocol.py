"""The paper's evaluation protocol and a runner for any set of detectors (``gnsm evaluate``).

Protocol, per seed in 42..46:

1. Split the inliers 80/10/10: the inlier row indices (ascending) are permuted with
   ``numpy.random.RandomState(seed).permutation``; the first ``floor(0.8 n)`` are train, the next
   ``floor(0.1 n)`` validation, the rest test. Every anomaly goes to the test set.
2. Fit a :class:`~gnsm.data.TabularEncoder` on the train inliers (``unseen="unknown"``, so a
   category first met in val/test lands in the reserved slot of its field).
3. Give each detector its declared input (``input_kind``: ``"onehot"``, ``"codes"`` or
   ``"frame"``, see :mod:`gnsm.evaluation.baselines`), fit it on train (and val, when its ``fit``
   takes ``X_val``), score the test set, and record AUROC, AP, fit time and score time.

Results are mean +- std (ddof=0) over seeds. :func:`evaluate` runs datasets x detectors and writes
the JSON, markdown and ROC PNG reports; the ``gnsm evaluate`` command (:mod:`gnsm.cli.tabular`) calls it.
"""
from __future__ import annotations

import inspect
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..data import TabularEncoder, one_hot
from ..datasets import Dataset, load_dataset
from . import metrics
from .baselines import (INPUT_KINDS, PYOD_BASELINES, DetectorSpec, call_factory,
                        get_detector_spec, warm_up_pyod)

__all__ = [
    "SEEDS",
    "ProtocolResult",
    "Split",
    "evaluate",
    "run_protocol",
    "split_inliers",
]

SEEDS = (42, 43, 44, 45, 46)
DEFAULT_DETECTORS = (*PYOD_BASELINES, "frequency")


@dataclass(frozen=True)
class Split:
    """Row indices (into the dataset) of one protocol split; ``test`` holds every anomaly."""

    seed: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_inliers(y: np.ndarray, seed: int,
                  fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> Split:
    """The protocol split for one seed (see the module docstring for the exact recipe)."""
    y = np.asarray(y)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions: expected three non-negative shares summing to 1, got {fractions}")
    inliers = np.flatnonzero(y == 0)
    anomalies = np.flatnonzero(y == 1)
    if len(inliers) == 0:
        raise ValueError("y: no inliers (label 0) to split")
    perm = inliers[np.random.RandomState(seed).permutation(len(inliers))]
    n_train = int(np.floor(fractions[0] * len(inliers)))
    n_val = int(np.floor(fractions[1] * len(inliers)))
    train = np.sort(perm[:n_train])
    val = np.sort(perm[n_train:n_train + n_val])
    test = np.sort(np.concatenate([perm[n_train + n_val:], anomalies]))
    return Split(seed, train, val, test)


@dataclass
class ProtocolResult:
    """Per-seed records of one dataset; ``scores`` keeps (y_test, scores) for ROC plots."""

    dataset: str
    dataset_info: dict
    seeds: list[int]
    splits: list[dict] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    input_kinds: dict[str, str] = field(default_factory=dict)
    scores: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def summary(self) -> dict[str, dict]:
        """Per detector: mean/std of AUROC and AP, mean fit/score time, and the per-seed rows."""
        out: dict[str, dict] = {}
        for det in self.input_kinds:
            rows = [r for r in self.records if r["detector"] == det]
            auc_m, auc_s = metrics.mean_std(r["auroc"] for r in rows)
            ap_m, ap_s = metrics.mean_std(r["ap"] for r in rows)
            out[det] = {
                "input_kind": self.input_kinds[det],
                "auroc_mean": auc_m, "auroc_std": auc_s, "ap_mean": ap_m, "ap_std": ap_s,
                "fit_time_mean": float(np.mean([r["fit_time"] for r in rows])),
                "score_time_mean": float(np.mean([r["score_time"] for r in rows])),
                "per_seed": [{k: r[k] for k in ("seed", "auroc", "ap", "fit_time", "score_time")}
                             for r in rows],
            }
        return out

    def to_dict(self) -> dict:
        """JSON-serializable view (no scores)."""
        return {"dataset": self.dataset, **self.dataset_info, "seeds": list(self.seeds),
                "splits": self.splits, "detectors": self.summary()}


def _dataset_info(dataset: Dataset) -> dict:
    return {"source": dataset.source, "n_rows": int(len(dataset.y)),
            "n_inliers": dataset.n_inliers, "n_anomalies": dataset.n_anomalies,
            "categorical": [str(c) for c in dataset.categorical],
            "numerical": [str(c) for c in dataset.numerical]}


class _SeedInputs:
    """Lazily built inputs of one split, per input kind (encoder fitted on train inliers)."""

    def __init__(self, dataset: Dataset, split: Split, X: pd.DataFrame) -> None:
        self.frames = {part: X.iloc[getattr(split, part)].reset_index(drop=True)
                       for part in ("train", "val", "test")}
        self.encoder = TabularEncoder(categorical=dataset.categorical, numerical=dataset.numerical,
                                      unseen="unknown")
        with warnings.catch_warnings():
            # Encoder warnings (e.g. under constant='drop') would repeat on every seed; once per dataset is enough.
            warnings.simplefilter("ignore", UserWarning)
            self.encoder.fit(self.frames["train"])
        self._cache: dict[str, dict[str, Any]] = {}

    def get(self, kind: str) -> dict[str, Any]:
        if kind not in self._cache:
            if kind == "frame":
                self._cache[kind] = self.frames
            else:
                encoded = {p: self.encoder.transform(f) for p, f in self.frames.items()}
                if kind == "codes":
                    self._cache[kind] = encoded
                else:
                    sizes = self.encoder.field_sizes
                    self._cache[kind] = {
                        p: np.hstack([one_hot(e.codes, sizes), e.numerical]).astype(np.float32)
                        for p, e in encoded.items()}
        return self._cache[kind]

    def unseen_rows(self, y_test: np.ndarray) -> dict[str, int]:
        """Test rows with at least one category unseen in training, by label."""
        codes = self.get("codes")["test"].codes
        unknown = np.asarray(self.encoder.field_sizes) - 1
        has = (codes == unknown[None, :]).any(axis=1) if codes.shape[1] else np.zeros(len(codes), bool)
        return {"inliers": int((has & (y_test == 0)).sum()),
                "anomalies": int((has & (y_test == 1)).sum())}


def _typed_frame(dataset: Dataset) -> pd.DataFrame:
    """``dataset.X`` with numeric-dtype categorical columns cast to ``category``.

    Frame-input detectors type columns by dtype; the cast makes them agree with the dataset's
    declared typing (e.g. integer-coded categoricals named in ``load_dataset(categorical=...)``).
    """
    X = dataset.X
    cast = [c for c in dataset.categorical
            if pd.api.types.is_numeric_dtype(X[c].dtype) and not pd.api.types.is_bool_dtype(X[c].dtype)]
    return X.astype({c: "category" for c in cast}) if cast else X


def _fit(detector: Any, X_train: Any, X_val: Any) -> None:
    """``fit(X_train, X_val=X_val)`` when the detector's fit takes ``X_val`` (by name or through
    ``**fit_params``, the detector base's contract), else ``fit(X_train)``."""
    try:
        params = inspect.signature(detector.fit).parameters
    except (TypeError, ValueError):
        params = {}
    if "X_val" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        detector.fit(X_train, X_val=X_val)
    else:
        detector.fit(X_train)


def _resolve(factory: Any) -> DetectorSpec | Callable[..., Any]:
    return get_detector_spec(factory) if isinstance(factory, str) else factory


def run_protocol(
    dataset: Dataset,
    detectors: Mapping[str, Callable[..., Any] | DetectorSpec | str],
    seeds: Sequence[int] = SEEDS,
    encoding: str = "onehot",
    progress: bool = False,
) -> ProtocolResult:
    """Run the protocol (module docstring) on ``dataset`` for every detector and seed.

    Args:
        dataset: a :class:`~gnsm.datasets.Dataset` (see :func:`~gnsm.datasets.load_dataset`).
        detectors: display name -> factory (``factory()`` or ``factory(seed=...)``), a
            :class:`DetectorSpec`, or a registered detector name.
        seeds: split seeds (the paper: 42..46).
        encoding: input kind for detectors that declare none (no ``input_kind`` attribute).
        progress: show a tqdm bar over seeds x detectors.

    Returns:
        A :class:`ProtocolResult`; ``.to_dict()`` is the JSON form.
    """
    if encoding not in INPUT_KINDS:
        raise ValueError(f"encoding: expected one of {list(INPUT_KINDS)}, got {encoding!r}")
    if not detectors:
        raise ValueError("detectors: expected at least one detector")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds: expected at least one seed")
    if dataset.n_anomalies == 0:
        raise ValueError(f"dataset: {dataset.name!r} has no anomalies to evaluate on")
    resolved = {name: _resolve(f) for name, f in detectors.items()}
    result = ProtocolResult(dataset.name, _dataset_info(dataset), seeds)

    from tqdm.auto import tqdm
    bar = tqdm(total=len(seeds) * len(resolved), disable=not progress,
               desc=dataset.name, leave=False)
    X = _typed_frame(dataset)
    for seed in seeds:
        split = split_inliers(dataset.y, seed)
        inputs = _SeedInputs(dataset, split, X)
        y_test = dataset.y[split.test]
        result.splits.append({
            "seed": seed, "n_train": int(len(split.train)), "n_val": int(len(split.val)),
            "n_test_inliers": int((y_test == 0).sum()), "n_test_anomalies": int(y_test.sum()),
            "field_sizes": inputs.encoder.field_sizes,
            "dropped_columns": [str(c) for c in inputs.encoder.dropped_columns_],
            "test_rows_with_unseen": inputs.unseen_rows(y_test),
        })
        for name, spec in resolved.items():
            bar.set_postfix_str(f"seed {seed} {name}")
            factory = spec.factory if isinstance(spec, DetectorSpec) else spec
            detector = call_factory(factory, seed)
            kind = getattr(detector, "input_kind", None) or (
                spec.input_kind if isinstance(spec, DetectorSpec) else encoding)
            if kind not in INPUT_KINDS:
                raise ValueError(f"detector {name!r}: input_kind must be one of "
                                 f"{list(INPUT_KINDS)}, got {kind!r}")
            data = inputs.get(kind)
            t0 = time.perf_counter()
            _fit(detector, data["train"], data["val"])
            t1 = time.perf_counter()
            scores = np.asarray(detector.decision_function(data["test"]), dtype=np.float64).ravel()
            t2 = time.perf_counter()
            y_checked, scores = metrics.check_scores(y_test, scores, name=f"{name} scores")
            result.input_kinds[name] = kind
            result.records.append({
                "detector": name, "seed": seed,
                "auroc": metrics.auroc(y_checked, scores),
                "ap": metrics.average_precision(y_checked, scores),
                "fit_time": t1 - t0, "score_time": t2 - t1,
            })
            result.scores[(name, seed)] = (y_test, scores)
            bar.update(1)
    bar.close()
    return result


def _environment() -> dict:
    import sklearn
    info = {"python": platform.python_version(), "numpy": np.__version__,
            "pandas": pd.__version__, "scikit-learn": sklearn.__version__,
            "platform": platform.platform(), "cpu_count": os.cpu_count()}
    if hasattr(os, "getloadavg"):  # timings on a shared machine mean little without it
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    try:
        import pyod
        info["pyod"] = pyod.__version__
    except ImportError:
        pass
    try:
        import torch
        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def evaluate(
    datasets: Sequence[str | Dataset],
    detectors: Sequence[str] = DEFAULT_DETECTORS,
    seeds: Sequence[int] = SEEDS,
    out_dir: str | os.PathLike | None = None,
    *,
    label_col: str | None = None,
    anomaly_value: Any = None,
    name: str = "results",
    progress: bool = True,
) -> dict:
    """Run the protocol for datasets x registered detectors and write the reports.

    Args:
        datasets: registered names, file paths (then ``label_col`` / ``anomaly_value`` apply),
            or :class:`~gnsm.datasets.Dataset` objects.
        detectors: registered detector names (:func:`~gnsm.evaluation.list_detectors`).
        seeds: split seeds.
        out_dir: if given, writes ``{name}.json``, ``{name}.md`` and ``{name}_roc.png`` there.
        name: file stem of the reports.
        progress: print one line per dataset and show progress bars.

    Returns:
        ``{"protocol": ..., "environment": ..., "datasets": {name: ProtocolResult.to_dict()}}``.
    """
    from . import report

    if not datasets:
        raise ValueError("datasets: expected at least one dataset name or path")
    specs = {d: get_detector_spec(d) for d in detectors}  # unknown names fail before any work
    if not specs:
        raise ValueError("detectors: expected at least one detector name")
    results: dict[str, Any] = {
        "protocol": {
            "seeds": [int(s) for s in seeds],
            "split": "inliers: RandomState(seed).permutation, floor 80% train / floor 10% val / "
                     "rest test; all anomalies in test",
            "encoder": "TabularEncoder fitted on train inliers, unseen='unknown', "
                       "missing='category'",
            "metrics": "sklearn roc_auc_score / average_precision_score on the test set; "
                       "mean and std (ddof=0) over seeds",
            "detectors": {d: s.description for d, s in specs.items()},
        },
        "environment": _environment(),
        "datasets": {},
    }
    # Load everything first so a bad path or label fails before any detector runs.
    loaded = [entry if isinstance(entry, Dataset) else
              load_dataset(entry, label_col=label_col, anomaly_value=anomaly_value)
              for entry in datasets]
    if "autoencoder" in specs:
        warm_up_pyod()  # fit times should not include numba's one-time compilation
    curves: dict[str, dict[str, list]] = {}
    for dataset in loaded:
        t0 = time.perf_counter()
        res = run_protocol(dataset, specs, seeds=seeds, progress=progress)
        results["datasets"][dataset.name] = res.to_dict()
        curves[dataset.name] = {d: [res.scores[(d, s)] for s in res.seeds] for d in specs}
        if progress:
            summary = res.summary()
            best = max(summary, key=lambda d: summary[d]["auroc_mean"])
            print(f"{dataset.name}: {len(res.seeds)} seeds x {len(specs)} detectors in "
                  f"{time.perf_counter() - t0:.1f}s; best AUROC {best} "
                  f"{100 * summary[best]['auroc_mean']:.1f}", file=sys.stderr, flush=True)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        report.write_json(results, out / f"{name}.json")
        (out / f"{name}.md").write_text(report.markdown_report(results), encoding="utf-8")
        report.plot_roc_curves(curves, out / f"{name}_roc.png")
    return results

