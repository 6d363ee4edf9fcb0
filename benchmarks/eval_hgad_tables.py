"""Unified multi-class evaluation of HGAD and GNSM on the registered tables with several normal classes.

The digits protocol of ``gnsm.evaluation.unified`` on categorical tables: each class of the table's
label is split 70/30 (stratified, seeded); for each class d one model is trained on the train part
of the other classes and scores their test part plus the test part of d (the anomalies). Tables
(``gnsm.datasets.CLASS_TABLES``): cars (label ``class``, 4 classes) and cmc (label
``Contraceptive_method_used``, 3 classes; the anomaly-detection label ``class_numberofchildren``
is dropped). solar, chess, mushrooms and adult do not qualify (binary labels).

Methods, all in one run:

- on a one-hot encoding of the columns (sklearn ``OneHotEncoder`` over the table's category lists):
  HGAD with the class labels, HGAD with k-means pseudo-labels, the same flow with a single-Gaussian
  prior, sklearn GaussianMixture (one component per normal class) and PyOD IForest / ECOD / KNN; these
  are the methods of ``benchmarks/eval_hgad_digits.py`` (same settings), fed one-hot rows;
- on the table itself: the per-field category-frequency baseline, ``GNSMDetector(head="hgad")``
  fitted with the class labels, and ``GNSMDetector`` with its default head.

Several seeds: seed s re-draws the 70/30 split (``random_state=s``); the models keep their own
fixed seeds. Reported: AUROC x 100 per held-out class (mean over seeds) and the mean over classes,
mean +- std over seeds.

    python benchmarks/eval_hgad_tables.py                        # the reported run
    python benchmarks/eval_hgad_tables.py --tables cars --seeds 0 --methods frequency gnsm_hgad_labels

Threads: one per process (torch, BLAS); ``--jobs 2`` runs two (split, method) pairs at a time.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_OUT = RESULTS / "hgad_tables.json"
FLOW_METHODS = ("hgad_labels", "hgad_pseudo", "flow_single", "gmm", "iforest", "ecod", "knn")
TABLE_METHODS = ("frequency", "gnsm_hgad_labels", "gnsm_hgad_pseudo", "gnsm_default")
DEFAULT_METHODS = ("hgad_labels", "hgad_pseudo", "flow_single", "gmm", "iforest", "ecod", "knn", "frequency",
                   "gnsm_hgad_labels", "gnsm_default")
# Flow size for these small tables (21-22 one-hot columns, 360-1160 training rows): half the blocks, half the
# width, twice the batch and half the epochs (30 + 20) of the digits settings, for all flow variants alike (and GNSM's HGAD head), so the
# three-seed run fits in ~25 minutes on a shared 2-core CPU. Chosen for time, not tuned on these tables.
TABLE_FLOW = {"n_blocks": 4, "hidden_dim": 128, "batch_size": 128, "stage1_epochs": 30, "stage2_epochs": 20}
LABELS = {
    "hgad_labels": "HGAD, class labels (one-hot)",
    "hgad_pseudo": "HGAD, k-means pseudo-labels (one-hot)",
    "flow_single": "same flow, single Gaussian prior (one-hot)",
    "gmm": "sklearn GaussianMixture, one comp. per class (one-hot)",
    "iforest": "PyOD IForest (one-hot)",
    "ecod": "PyOD ECOD (one-hot)",
    "knn": "PyOD KNN (one-hot)",
    "frequency": "category frequency",
    "gnsm_hgad_labels": "GNSM + HGAD head, class labels",
    "gnsm_hgad_pseudo": "GNSM + HGAD head, pseudo-labels",
    "gnsm_default": "GNSM, default head (loss)",
}


def build_methods(names: list[str], columns: list[str], encode: Any, hgad_cfg: dict[str, Any],
                  gnsm_cfg: dict[str, Any]) -> dict[str, Any]:
    """Methods on table rows: the digits benchmark's methods on one-hot rows, plus the table methods."""
    from eval_hgad_digits import build_methods as flow_methods

    from gnsm.evaluation.unified import frequency_method, on_features, on_frames

    out: dict[str, Any] = {}
    flow = [n for n in names if n in FLOW_METHODS]
    for name, method in flow_methods(flow, hgad_cfg).items():
        out[name] = on_features(encode, method)

    def gnsm(head: str | None, labels: bool):
        def run(X, y, Xt):
            from gnsm.detectors import GNSMDetector
            det = GNSMDetector(head=head, **gnsm_cfg)
            det.fit(X, y if labels else None)
            info = {"train_seconds": round(float(det.train_info_["seconds"]), 1)}
            if head == "hgad":
                info["k"] = int(det.head_.model.model.prior.n_classes)
            return det.decision_function(Xt), info
        return run

    table = {"frequency": frequency_method, "gnsm_hgad_labels": gnsm("hgad", True),
             "gnsm_hgad_pseudo": gnsm("hgad", False), "gnsm_default": gnsm(None, False)}
    for name in names:
        if name in table:
            out[name] = on_frames(columns, table[name])
    return {n: out[n] for n in names}


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results path (the .md goes next to it)")
    p.add_argument("--tables", nargs="+", default=["cars", "cmc"], choices=["cars", "cmc"])
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=FLOW_METHODS + TABLE_METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="split seeds (random_state)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="HGADDetector parameter overrides")
    p.add_argument("--gnsm-set", nargs="*", default=[], metavar="KEY=VALUE", help="GNSMDetector parameter overrides")
    p.add_argument("--threads", type=int, default=1, help="threads per process")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (one (split, method) pair each)")
    args = p.parse_args(argv)

    from threadpoolctl import threadpool_limits
    import torch

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    os.environ.setdefault("GNSM_NUM_THREADS", str(args.threads))

    from eval_hgad_digits import hgad_config

    from gnsm.evaluation import write_json
    from gnsm.datasets import CLASS_TABLES, load_class_table
    from gnsm.evaluation.unified import evaluate_unified_seeds, onehot_encoder, seeds_markdown_table, table_splits

    hgad_cfg = hgad_config({**TABLE_FLOW, **{k: parse_value(v) for k, v in (kv.split("=", 1) for kv in args.set)}})
    gnsm_cfg = {"random_state": 0, "device": "auto", "head_options": dict(TABLE_FLOW),
                **{k: parse_value(v) for k, v in (kv.split("=", 1) for kv in args.gnsm_set)}}
    t0 = time.perf_counter()
    results: dict[str, Any] = {"tables": {}}
    md = []
    for name in args.tables:
        X, y = load_class_table(name)
        classes, counts = np.unique(y, return_counts=True)
        print(f"== {name}: {X.shape[0]} rows x {X.shape[1]} columns, classes "
              + ", ".join(f"{c} ({n})" for c, n in zip(classes, counts)))
        methods = build_methods(args.methods, list(X.columns), onehot_encoder(X), hgad_cfg, gnsm_cfg)
        res = evaluate_unified_seeds(lambda s: table_splits(X, y, 0.3, random_state=s), methods, args.seeds,
                                     log=lambda m: print(f"[{name}] {m}", flush=True), n_jobs=args.jobs)
        res["table"] = {"description": CLASS_TABLES[name].description, "rows": int(X.shape[0]),
                        "columns": list(X.columns), "class_counts": {str(c): int(n) for c, n in zip(classes, counts)}}
        table = seeds_markdown_table(res["summary"])
        res["markdown"] = table
        results["tables"][name] = res
        md.append(f"### {name} (held-out class: AUROC x 100, mean over {len(args.seeds)} split seeds)\n\n{table}\n")
        print(f"\n{name}: AUROC x 100 per held-out class, mean over seeds; mean over classes, mean ± std over seeds\n")
        print(table, "\n", flush=True)

    # Mean over tables of each method's mean AUROC (and the std over seeds of the per-seed table average).
    rows = ["| method | " + " | ".join(args.tables) + " | mean |", "|---|" + "---:|" * (len(args.tables) + 1)]
    overall = {}
    for m in args.methods:
        per_table = [results["tables"][t]["summary"]["methods"][m] for t in args.tables]
        seed_means = np.mean([[np.mean(results["tables"][t]["runs"][str(s)]["methods"][m]["auroc"]) for s in args.seeds]
                              for t in args.tables], axis=0)
        overall[m] = {"mean_auroc": float(seed_means.mean()), "mean_auroc_std": float(seed_means.std())}
        cells = [f"{100 * r['mean_auroc']:.1f} ± {100 * r['mean_auroc_std']:.1f}" for r in per_table]
        cells.append(f"{100 * seed_means.mean():.1f} ± {100 * seed_means.std():.1f}")
        rows.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
    summary_table = "\n".join(rows)
    print("Mean AUROC x 100 over held-out classes (mean ± std over split seeds):\n")
    print(summary_table)

    from gnsm import __version__
    command = "python benchmarks/eval_hgad_tables.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results.update({
        "protocol": "leave-one-class-out per table; 70/30 stratified split per seed (random_state = seed); "
                    "anomalies = test part of the held-out class; training = train part of the other classes",
        "seeds": args.seeds, "methods": {m: LABELS[m] for m in args.methods},
        "features": "flow-type models, GMM, PyOD: sklearn OneHotEncoder over each table's category lists "
                    "(HGAD standardizes internally); frequency and GNSM: the table itself",
        "hgad_config": hgad_cfg, "gnsm_config": gnsm_cfg, "overall": overall, "markdown": summary_table,
        "command": command.strip(), "wall_seconds": time.perf_counter() - t0,
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "gnsm": __version__,
                        "threads": args.threads, "jobs": args.jobs, "cpu_count": os.cpu_count(),
                        "device": "cuda" if torch.cuda.is_available() else "cpu"},
    })
    path = write_json(results, args.out)
    md_path = Path(args.out).with_suffix(".md")
    md_path.write_text(
        f"# HGAD / GNSM unified evaluation on tables\n\n`{command.strip()}` "
        f"({results['wall_seconds'] / 60:.1f} min, {results['environment']['device']}, "
        f"{args.jobs} job(s) x {args.threads} thread(s))\n\n"
        f"Mean AUROC x 100 over held-out classes, mean ± std over split seeds {args.seeds}:\n\n"
        + summary_table + "\n\n" + "\n".join(md), encoding="utf-8")
    print(f"\nwrote {path} and {md_path}  ({results['wall_seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
