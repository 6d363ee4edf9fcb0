"""Does a marginal (rarity) term help GNSM's denoising score? One fit per dataset and seed, every variant scored
from the same fit.

For each dataset and seed of the paper protocol (inliers 80/10/10, all anomalies in test) GNSMDetector is fitted
with ``rarity_weight=0`` (the denoising error alone) and the test records get: the denoising score, and per field
the count-based surprise ``-log p_j(x_j)`` with Laplace smoothing ``(count + 1) / (n + K_j)`` from the training
rows. The variants combine them without anomaly labels:

* ``denoise``: the denoising score alone (the ``rarity_weight=0`` detector);
* ``frequency``: ``sum_j -log p_j(x_j)`` alone (the frequency baseline, categorical part);
* ``rarity wW``: ``denoise + W * T * sum_j rarity_j``, the detector's own rarity term (``GNSMDetector.rarity``:
  ``max(0, log((c + 1) / (count_j(x_j) + 1)))``, c = 0.1 % of the training rows, so only values seen in at most
  0.1 % of the training rows count) with T the number of scoring temperatures: what ``rarity_weight=W`` scores;
* ``excess wW``: ``denoise + W * T * sum_j max(0, -log p_j(x_j) - H_j)`` with ``H_j`` the field's entropy under
  the same smoothed marginal (every value rarer than the field's typical one counts);
* ``surprise wW``: ``denoise + W * T * sum_j -log p_j(x_j)``.

    python benchmarks/eval_rarity.py --datasets solar cmc cars mushrooms chess adult

Prints AUROC / AP tables and writes ``benchmarks/results/rarity_dev.json`` (or ``--out``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WEIGHTS = (0.25, 1.0)
RARITY_WEIGHTS = (0.5, 1.0, 2.0)


def marginal_terms(codes_train: np.ndarray, field_sizes: list[int], codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(surprise, excess) per record and field: ``-log p_j(x_j)`` and ``max(0, -log p_j(x_j) - H_j)``."""
    n = codes_train.shape[0]
    surprise = np.zeros(codes.shape, dtype=np.float64)
    excess = np.zeros(codes.shape, dtype=np.float64)
    for j, k in enumerate(field_sizes):
        counts = np.bincount(codes_train[:, j], minlength=k).astype(np.float64)
        p = (counts + 1.0) / (n + k)
        nll = -np.log(p)
        h = float((p * nll).sum())
        surprise[:, j] = nll[codes[:, j]]
        excess[:, j] = np.maximum(nll[codes[:, j]] - h, 0.0)
    return surprise, excess


def variant_scores(denoise: np.ndarray, surprise: np.ndarray, excess: np.ndarray, rarity: np.ndarray,
                   T: int) -> dict[str, np.ndarray]:
    out = {"denoise": denoise, "frequency": surprise.sum(1)}
    for w in RARITY_WEIGHTS:
        out[f"rarity w{w:g}"] = denoise + w * T * rarity.sum(1)
    for w in WEIGHTS:
        out[f"excess w{w:g}"] = denoise + w * T * excess.sum(1)
        out[f"surprise w{w:g}"] = denoise + w * T * surprise.sum(1)
    return out


def main(argv: list[str] | None = None) -> int:
    from sklearn.metrics import average_precision_score, roc_auc_score

    from gnsm.datasets import load_dataset
    from gnsm.detectors import GNSMDetector
    from gnsm.evaluation.protocol import _typed_frame, split_inliers

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["solar", "cmc", "cars", "mushrooms", "chess", "adult"])
    p.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44, 45, 46])
    p.add_argument("--out", default=str(HERE / "results" / "rarity_dev.json"))
    p.add_argument("--arrays", default=None, help="also save the per-seed score parts here (.npz, for analysis)")
    args = p.parse_args(argv)

    out_path = Path(args.out)
    result: dict = {"command": "python benchmarks/eval_rarity.py " + " ".join(sys.argv[1:] if argv is None else argv),
                    "seeds": args.seeds, "datasets": {}}
    for name in args.datasets:
        ds = load_dataset(name)
        X = _typed_frame(ds)
        per_variant: dict[str, dict[str, list[float]]] = {}
        arrays: dict[str, np.ndarray] = {}
        t0 = time.perf_counter()
        for seed in args.seeds:
            split = split_inliers(ds.y, seed)
            train = X.iloc[split.train].reset_index(drop=True)
            val = X.iloc[split.val].reset_index(drop=True)
            test = X.iloc[split.test].reset_index(drop=True)
            y = ds.y[split.test]
            det = GNSMDetector(random_state=seed, rarity_weight=0.0).fit(train, X_val=val)
            denoise = det.decision_function(test)
            enc = det.encoder_
            surprise, excess = marginal_terms(enc.transform(train).codes, enc.field_sizes, enc.transform(test).codes)
            T = len(det._score_indices())
            tr_codes = enc.transform(train).codes
            tr_surprise, tr_excess = marginal_terms(tr_codes, enc.field_sizes, tr_codes)
            arrays.update({f"{seed}_y": y, f"{seed}_denoise": denoise, f"{seed}_surprise": surprise,
                           f"{seed}_excess": excess, f"{seed}_train_denoise": det.decision_scores_,
                           f"{seed}_train_surprise": tr_surprise, f"{seed}_train_excess": tr_excess,
                           f"{seed}_T": np.asarray(T)})
            rarity = det.rarity(test)
            arrays[f"{seed}_rarity"] = rarity
            for v, s in variant_scores(denoise, surprise, excess, rarity, T).items():
                rec = per_variant.setdefault(v, {"auroc": [], "ap": []})
                rec["auroc"].append(100 * roc_auc_score(y, s))
                rec["ap"].append(100 * average_precision_score(y, s))
        result["datasets"][name] = {
            "seconds": time.perf_counter() - t0,
            "variants": {v: {"auroc_mean": float(np.mean(r["auroc"])), "auroc_std": float(np.std(r["auroc"])),
                             "ap_mean": float(np.mean(r["ap"])), "ap_std": float(np.std(r["ap"])), **r}
                         for v, r in per_variant.items()}}
        print(f"{name}: " + ", ".join(f"{v} {r['auroc_mean']:.1f}/{r['ap_mean']:.1f}"
                                      for v, r in result["datasets"][name]["variants"].items()), flush=True)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=1))
        if args.arrays:
            Path(args.arrays).mkdir(parents=True, exist_ok=True)
            np.savez(Path(args.arrays) / f"{name}.npz", **arrays)
    names = list(result["datasets"])
    variants = list(next(iter(result["datasets"].values()))["variants"])
    print("| variant | " + " | ".join(names) + " | mean AUROC | mean AP |")
    print("|---|" + "---|" * (len(names) + 2))
    for v in variants:
        a = [result["datasets"][n]["variants"][v]["auroc_mean"] for n in names]
        ap = [result["datasets"][n]["variants"][v]["ap_mean"] for n in names]
        print(f"| {v} | " + " | ".join(f"{x:.1f} / {y:.1f}" for x, y in zip(a, ap))
              + f" | {np.mean(a):.2f} | {np.mean(ap):.2f} |")
    result["mean"] = {v: {"auroc": float(np.mean([result["datasets"][n]["variants"][v]["auroc_mean"] for n in names])),
                          "ap": float(np.mean([result["datasets"][n]["variants"][v]["ap_mean"] for n in names]))}
                      for v in variants}
    out_path.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
