"""Baseline comparison on the development sets under the paper's protocol.

Runs every PyOD baseline (IForest, ECOD, COPOD, LOF, KNN, AutoEncoder, DeepSVDD) and the per-field
category-frequency score on cars, mushrooms, solar, cmc, chess and adult (plus mushrooms_rare),
5 seeds (42..46), and writes ``benchmarks/results/baselines_dev.{json,md}`` and
``baselines_dev_roc.png``.

    python benchmarks/eval_baselines.py                      # full run
    python benchmarks/eval_baselines.py --data solar cmc --seeds 42 43

Torch is limited to one thread (``--threads``): the deep baselines are small MLPs that gain nothing
from more, and on a shared 2-core machine extra threads only spin; every scikit-learn/PyOD detector
runs with ``n_jobs=1``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from gnsm.evaluation import PYOD_BASELINES, SEEDS, evaluate, markdown_report  # noqa: E402

DEV_SETS = ["cars", "mushrooms", "mushrooms_rare", "solar", "cmc", "chess", "adult"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=DEV_SETS)
    parser.add_argument("--detectors", nargs="+", default=[*PYOD_BASELINES, "frequency"])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--name", default="baselines_dev")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)

    import torch
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results = evaluate(args.data, args.detectors, args.seeds, args.out, name=args.name)
    results_time = time.perf_counter() - t0
    print(markdown_report(results))
    print(f"total {results_time:.0f}s; wrote {args.out}/{args.name}.json, .md, _roc.png",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
