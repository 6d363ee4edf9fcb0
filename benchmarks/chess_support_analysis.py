"""Why GNSM (and every density-type detector) trails LOF on chess: the anomalies sit on the edge of the support.

chess (krkopt, "zero" vs all) enumerates legal King-Rook-vs-King positions, each exactly once, so the inlier
"distribution" is uniform over a set of positions. For each test record this script counts its Hamming-1
neighbours: the records of the training inliers that differ from it in exactly one field (one piece moved
along one coordinate). It then scores the test set, under the paper protocol (seeds 42..46), with

* ``-neighbours``: few existing one-field variants = anomalous (what LOF's k-distance sees in one-hot space);
* ``pseudo_nll``: the exact pseudo-likelihood of the ideal model of the inliers, uniform over the training
  support: -sum_j log p(x_j | x_-j) with p = 1 / (1 + number of other values of field j that give a training
  record). This is the quantity a per-field conditional denoiser such as GNSM approximates;
* optionally (``--with-gnsm``) GNSM with the package defaults, and LOF (PyOD defaults), with their Spearman
  correlation to ``pseudo_nll``.

    python benchmarks/chess_support_analysis.py --with-gnsm

Prints a table and writes ``benchmarks/results/chess_support.json``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def neighbour_counts(codes: np.ndarray, cards: np.ndarray, train_rows: np.ndarray,
                     query_rows: np.ndarray) -> np.ndarray:
    """(len(query_rows), J): for each query record and field j, how many other values of field j give a
    record present among the training rows (all fields are small, so the support is a dense lookup table)."""
    strides = np.concatenate([np.cumprod(cards[::-1])[::-1][1:], [1]]).astype(np.int64)
    present = np.zeros(int(np.prod(cards)), dtype=bool)
    present[codes[train_rows] @ strides] = True
    query = codes[query_rows].astype(np.int64)
    base = query @ strides
    out = np.zeros(query.shape, dtype=np.int64)
    for j, k in enumerate(cards):
        rest = base - query[:, j] * strides[j]
        for v in range(k):
            out[:, j] += present[rest + v * strides[j]] & (query[:, j] != v)
    return out


def main(argv: list[str] | None = None) -> int:
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from gnsm.datasets import load_dataset
    from gnsm.evaluation import split_inliers

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44, 45, 46])
    p.add_argument("--with-gnsm", action="store_true", help="also fit GNSM (defaults) and LOF per seed")
    p.add_argument("--out", default=str(HERE / "results" / "chess_support.json"))
    args = p.parse_args(argv)

    ds = load_dataset("chess")
    frame = ds.X.astype(str)
    codes = np.stack([np.unique(frame[c], return_inverse=True)[1] for c in frame.columns], 1)
    cards = codes.max(0) + 1
    y = np.asarray(ds.y)
    rows = []
    for seed in args.seeds:
        split = split_inliers(y, seed)
        counts = neighbour_counts(codes, cards, split.train, split.test)
        yt = y[split.test]
        pseudo_nll = np.log1p(counts).sum(1)
        row = {"seed": seed,
               "auroc_fewer_neighbours": 100 * roc_auc_score(yt, -counts.sum(1)),
               "auroc_pseudo_nll": 100 * roc_auc_score(yt, pseudo_nll),
               "mean_neighbours_inlier": float(counts.sum(1)[yt == 0].mean()),
               "mean_neighbours_anomaly": float(counts.sum(1)[yt == 1].mean())}
        if args.with_gnsm:
            from pyod.models.lof import LOF

            from gnsm.data import one_hot
            from gnsm.detectors.tabular import GNSMDetector
            t0 = time.perf_counter()
            det = GNSMDetector(random_state=seed, verbose=False).fit(ds.X.iloc[split.train],
                                                                       X_val=ds.X.iloc[split.val])
            s = det.decision_function(ds.X.iloc[split.test])
            row["gnsm_seconds"] = time.perf_counter() - t0
            onehot = one_hot(codes, cards)
            lof = LOF().fit(onehot[split.train]).decision_function(onehot[split.test])
            row["auroc_gnsm"] = 100 * roc_auc_score(yt, s)
            row["auroc_lof"] = 100 * roc_auc_score(yt, lof)
            row["spearman_gnsm_pseudo_nll"] = float(spearmanr(s, pseudo_nll)[0])
            row["spearman_lof_neighbours"] = float(spearmanr(lof, -counts.sum(1))[0])
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)

    keys = [k for k in rows[0] if k != "seed"]
    summary = {k: (float(np.mean([r[k] for r in rows])), float(np.std([r[k] for r in rows]))) for k in keys}
    print("\n| quantity | mean ± std over seeds |\n|---|---|")
    for k, (m, s) in summary.items():
        print(f"| {k} | {m:.2f} ± {s:.2f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": "python benchmarks/chess_support_analysis.py"
                                          + (" --with-gnsm" if args.with_gnsm else ""),
                                          "seeds": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
