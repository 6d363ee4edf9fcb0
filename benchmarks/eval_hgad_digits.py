"""Unified multi-class evaluation of HGAD on scikit-learn's digits.

For each digit d: train one model on the train part of the other nine digits, score their test
part plus the test part of d (the anomalies); 10 splits, AUROC each (``gnsm.evaluation.unified``).
Methods, all in one run: HGAD with the digit labels, HGAD with k-means pseudo-labels (k by
silhouette), the same flow with a single-Gaussian prior, sklearn GaussianMixture (one component per
normal class, full covariance), and PyOD IForest / ECOD / KNN (defaults). HGAD standardizes its
input internally; the baselines get the raw pixel values.

    python benchmarks/eval_hgad_digits.py                       # the reported run
    python benchmarks/eval_hgad_digits.py --validation          # same protocol inside the train part (tuning)
    python benchmarks/eval_hgad_digits.py --methods hgad_labels flow_single --set lr=5e-4

Threads are limited to one per library: on a 2-core machine the small matrices of this benchmark
run faster single-threaded than with two threads fighting other work.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "hgad_digits.json"
ALL_METHODS = ("hgad_labels", "hgad_labels_nll", "hgad_pseudo", "hgad_pseudo_nll", "flow_single", "gmm", "iforest", "ecod", "knn")


def hgad_config(overrides: dict[str, Any]) -> dict[str, Any]:
    """HGADDetector settings shared by the three flow variants (the detector defaults + overrides)."""
    return {"random_state": 0, "device": "auto", **overrides}


def build_methods(names: list[str], cfg: dict[str, Any]) -> dict[str, Any]:
    from sklearn.mixture import GaussianMixture

    from gnsm.detectors import HGADDetector

    def hgad_labels(X, y, Xt):
        return HGADDetector(**cfg).fit(X, y).decision_function(Xt)

    def hgad_labels_nll(X, y, Xt):
        # The same model scored by the mixture NLL alone (no class-entropy term).
        return HGADDetector(**{**cfg, "score_entropy_weight": 0.0}).fit(X, y).decision_function(Xt)

    def hgad_pseudo(X, y, Xt):
        det = HGADDetector(**{**cfg, "n_classes": "auto"}).fit(X)
        return det.decision_function(Xt), {"k": int(det.n_classes_)}

    def hgad_pseudo_nll(X, y, Xt):
        det = HGADDetector(**{**cfg, "n_classes": "auto", "score_entropy_weight": 0.0}).fit(X)
        return det.decision_function(Xt), {"k": int(det.n_classes_)}

    def flow_single(X, y, Xt):
        # Same flow and training length, one N(0, I) prior: the NLL alone for all epochs.
        params = HGADDetector(**cfg).get_params()
        epochs = params["stage1_epochs"] + params["stage2_epochs"]
        det = HGADDetector(**{**cfg, "n_classes": 1, "n_intra_centers": 1, "stage1_epochs": epochs,
                              "stage2_epochs": 0})
        return det.fit(X).decision_function(Xt)

    def gmm(X, y, Xt):
        model = GaussianMixture(n_components=len(np.unique(y)), covariance_type="full", random_state=0)
        return -model.fit(X).score_samples(Xt)

    def pyod(cls_name):
        def run(X, y, Xt):
            import pyod.models.ecod as ecod
            import pyod.models.iforest as iforest
            import pyod.models.knn as knn
            cls = {"iforest": lambda: iforest.IForest(random_state=0), "ecod": ecod.ECOD, "knn": knn.KNN}[cls_name]
            return cls().fit(X).decision_function(Xt)
        return run

    table = {"hgad_labels": hgad_labels, "hgad_labels_nll": hgad_labels_nll, "hgad_pseudo": hgad_pseudo,
             "hgad_pseudo_nll": hgad_pseudo_nll, "flow_single": flow_single, "gmm": gmm,
             "iforest": pyod("iforest"), "ecod": pyod("ecod"), "knn": pyod("knn")}
    return {n: table[n] for n in names}


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results path")
    p.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=ALL_METHODS)
    p.add_argument("--digits", nargs="+", type=int, default=list(range(10)), help="held-out digits to run")
    p.add_argument("--validation", action="store_true",
                   help="tuning mode: run the protocol on the train part only (split again 70/30)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="HGADDetector parameter overrides")
    p.add_argument("--threads", type=int, default=1, help="threads per process")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (one (split, method) pair each)")
    args = p.parse_args(argv)

    from threadpoolctl import threadpool_limits
    import torch

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    from sklearn.datasets import load_digits

    from gnsm.evaluation import write_json
    from gnsm.evaluation.unified import (evaluate_unified, leave_one_class_out_splits, stratified_train_test,
                                         unified_markdown_table)

    X, y = load_digits(return_X_y=True)
    if args.validation:
        # The train part of all ten digits (no test row), split again with another seed.
        train_rows, _ = stratified_train_test(y, 0.3, random_state=0)
        splits = leave_one_class_out_splits(X[train_rows], y[train_rows], 0.3, random_state=1, classes=args.digits)
    else:
        splits = leave_one_class_out_splits(X, y, 0.3, random_state=0, classes=args.digits)

    overrides = dict(kv.split("=", 1) for kv in args.set)
    cfg = hgad_config({k: parse_value(v) for k, v in overrides.items()})
    t0 = time.perf_counter()
    results = evaluate_unified(splits, build_methods(args.methods, cfg), log=print, n_jobs=args.jobs)
    table = unified_markdown_table(results)
    print(f"\nAUROC x 100 per held-out digit ({'validation: train part only' if args.validation else 'test'}):\n")
    print(table)

    from gnsm import __version__
    results.update({
        "dataset": "sklearn load_digits (1797 x 64)",
        "protocol": "leave-one-digit-out; 70/30 stratified split (random_state=0); anomalies = test part of the held-out digit"
                    + ("; VALIDATION: train part re-split 70/30 (random_state=1)" if args.validation else ""),
        "hgad_config": cfg,
        "markdown": table,
        "command": "python benchmarks/eval_hgad_digits.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "wall_seconds": time.perf_counter() - t0,
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "gnsm": __version__,
                        "threads": args.threads, "jobs": args.jobs, "cpu_count": os.cpu_count(),
                        "device": "cuda" if torch.cuda.is_available() else "cpu"},
    })
    path = write_json(results, args.out)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
