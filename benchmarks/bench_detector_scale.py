"""Wall time of GNSMDetector with its defaults on a large table: does ~50k rows x 50 fields fit and score in
minutes on a 2-core CPU?

The table is synthetic, with structure a detector can learn: each normal record draws a latent cluster (8),
and each categorical field (cardinalities cycling through 2..20) draws its category from a cluster-specific
distribution; numerical columns are cluster means plus noise. Anomalies (1 %) draw every field from another,
random cluster, so each field alone looks normal and only the combination is rare. The detector fits on the
normal records and scores the whole table; the per-field category-frequency score runs beside it as a sanity
check of the task's difficulty. Times are wall-clock seconds on this machine with the package's own thread
settings (``gnsm.threads``).

    python benchmarks/bench_detector_scale.py                      # 50k x 50 categorical
    python benchmarks/bench_detector_scale.py --numerical 10       # 50k x (40 categorical + 10 numerical)
    python benchmarks/bench_detector_scale.py --rows 5000 --n-steps 600 1200 2000 3000 --baselines knn ecod iforest \
        --out benchmarks/results/detector_steps_5k.json           # how many steps a wide table needs

Prints a table and writes ``benchmarks/results/detector_scale_cpu.json`` (or ``--out``).
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def synthetic_table(rows: int, fields: int, numerical: int, anomaly_fraction: float, seed: int,
                    clusters: int = 8) -> tuple[pd.DataFrame, np.ndarray]:
    """A clustered categorical (+ numerical) table and its 0/1 anomaly labels (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n_cat = fields - numerical
    cards = [2 + j % 19 for j in range(n_cat)]
    y = (rng.random(rows) < anomaly_fraction).astype(int)
    cluster = rng.integers(clusters, size=rows)
    columns = {}
    for j, k in enumerate(cards):
        # Dirichlet(0.3) makes each cluster prefer a few categories of the field.
        probs = rng.dirichlet(np.full(k, 0.3), size=clusters)
        own = np.where(y == 1, rng.integers(clusters, size=rows), cluster)
        u = rng.random(rows)[:, None]
        codes = (u > np.cumsum(probs[own], axis=1)).sum(1).clip(0, k - 1)
        columns[f"c{j}"] = pd.Categorical.from_codes(codes, categories=[f"v{i}" for i in range(k)])
    for j in range(numerical):
        means = rng.normal(0, 2, size=clusters)
        own = np.where(y == 1, rng.integers(clusters, size=rows), cluster)
        columns[f"x{j}"] = means[own] + rng.normal(0, 1, size=rows)
    return pd.DataFrame(columns), y


def _onehot(X: pd.DataFrame, normal: np.ndarray) -> np.ndarray:
    """PyOD input as the evaluation protocol builds it: one-hot codes beside standardized numerical columns,
    encoder fitted on the normal rows."""
    from gnsm.data import TabularEncoder, one_hot
    encoder = TabularEncoder(unseen="unknown").fit(X[normal])
    encoded = encoder.transform(X)
    return np.hstack([one_hot(encoded.codes, encoder.field_sizes), encoded.numerical]).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    import torch
    from sklearn.metrics import roc_auc_score

    from gnsm.detectors.tabular import GNSMDetector
    from gnsm.evaluation import make_detector

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--fields", type=int, default=50, help="total columns")
    p.add_argument("--numerical", type=int, default=0, help="how many of the columns are numerical")
    p.add_argument("--anomaly-fraction", type=float, default=0.01)
    p.add_argument("--n-steps", nargs="+", default=["auto"],
                   help="GNSMDetector n_steps; several values run one after another (a sweep)")
    p.add_argument("--width", type=int, default=None, help="network width (default: the package default)")
    p.add_argument("--baselines", nargs="*", default=[],
                   help="PyOD baselines of gnsm.evaluation to run beside it on the one-hot table (knn ecod ...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if not 0 <= args.numerical < args.fields:
        p.error("--numerical must leave at least one categorical column")

    X, y = synthetic_table(args.rows, args.fields, args.numerical, args.anomaly_fraction, args.seed)
    normal = X[y == 0]
    freq = make_detector("frequency", seed=args.seed).fit(normal)
    baselines = {"frequency": 100 * roc_auc_score(y, freq.decision_function(X))}
    if args.baselines:
        onehot = _onehot(X, y == 0)
        for name in args.baselines:
            model = make_detector(name, seed=args.seed).fit(onehot[y == 0])
            baselines[name] = 100 * roc_auc_score(y, model.decision_function(onehot))
    runs = []
    for steps in args.n_steps:
        params = {"random_state": args.seed, "n_steps": steps if steps == "auto" else int(steps)}
        if args.width:
            params["width"] = args.width
        det = GNSMDetector(**params)
        t0 = time.perf_counter()
        det.fit(normal)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        scores = det.decision_function(X)
        score_s = time.perf_counter() - t0
        runs.append({"n_steps": int(det.train_info_["steps"]), "train_s": det.train_info_["seconds"],
                     "fit_s": fit_s, "score_s": score_s, "score_records_per_s": args.rows / score_s,
                     "final_train_loss": det.train_info_.get("final_train_loss"),
                     "auroc_gnsm": 100 * roc_auc_score(y, scores)})
    result = {
        "command": "python benchmarks/bench_detector_scale.py " + " ".join(argv if argv is not None else
                                                                           __import__("sys").argv[1:]),
        "rows": args.rows, "fit_rows": int(len(normal)), "columns": args.fields,
        "categorical": args.fields - args.numerical, "numerical": args.numerical, "width": args.width,
        "anomalies": int(y.sum()), "runs": runs, "auroc_baselines": baselines,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
    }
    print("| rows | columns (cat + num) | steps | fit s | score s | AUROC gnsm | "
          + " | ".join(f"AUROC {b}" for b in baselines) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(baselines))
    for r in runs:
        print(f"| {args.rows} | {result['categorical']} + {result['numerical']} | {r['n_steps']} | "
              f"{r['fit_s']:.1f} | {r['score_s']:.1f} | {r['auroc_gnsm']:.1f} | "
              + " | ".join(f"{v:.1f}" for v in baselines.values()) + " |")
    print(f"peak RSS {result['peak_rss_mib']:.0f} MiB")
    out = Path(args.out) if args.out else HERE / "results" / (
        "detector_scale_cpu.json" if not args.numerical else f"detector_scale_cpu_num{args.numerical}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
