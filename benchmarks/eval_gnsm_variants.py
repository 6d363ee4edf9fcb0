"""GNSM scoring variants side by side under the paper protocol (seeds 42..46), to choose defaults.

Each variant is GNSMDetector with a few parameters changed (``ens3*``: three networks with
different seeds, decision scores averaged). Prints AUROC mean +- std per dataset and variant and
writes ``benchmarks/results/<name>.json``:

    python benchmarks/eval_gnsm_variants.py --datasets solar cmc chess cars \
        --variants c4t10 ens3 steps1500 c8t20 --name gnsm_variants
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


class Ensemble:
    """``k`` GNSMDetectors (seeds ``seed * 100 + i``); the decision score is their mean."""

    input_kind = "frame"

    def __init__(self, seed: int, k: int = 3, **params) -> None:
        from gnsm.detectors.tabular import GNSMDetector
        self.members = [GNSMDetector(random_state=seed * 100 + i, **params) for i in range(k)]

    def fit(self, X, X_val=None) -> "Ensemble":
        for m in self.members:
            m.fit(X, X_val=X_val)
        return self

    def decision_function(self, X) -> np.ndarray:
        return np.mean([m.decision_function(X) for m in self.members], axis=0)


def _single(**params):
    """The registry's GNSM factory (``make_gnsm(seed, **params)``) with ``params`` bound."""
    from gnsm.evaluation import make_gnsm
    return functools.partial(make_gnsm, **params)


# cXtY: X noised copies per record and temperature, Y scoring temperatures (of the 20 trained)
VARIANTS = {
    "c4t10": _single(n_noise_copies=4, n_score_temperatures=10),
    "c8t10": _single(n_noise_copies=8, n_score_temperatures=10),
    "c8t20": _single(n_noise_copies=8, n_score_temperatures=20),
    "c16t20": _single(n_noise_copies=16, n_score_temperatures=20),
    "steps1500": _single(n_noise_copies=4, n_score_temperatures=10, n_steps=1500),
    "ens3": lambda seed: Ensemble(seed, 3, n_noise_copies=4, n_score_temperatures=10),
    "ens3c8": lambda seed: Ensemble(seed, 3, n_noise_copies=8, n_score_temperatures=20),
}


def main(argv: list[str] | None = None) -> int:
    from gnsm.evaluation import evaluate
    from gnsm.evaluation import register_detector

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["solar", "cmc", "chess", "cars"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44, 45, 46])
    p.add_argument("--name", default="gnsm_variants")
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args(argv)

    for v in args.variants:
        register_detector(f"gnsm-{v}", VARIANTS[v], "frame", replace=True)
    t0 = time.perf_counter()
    res = evaluate(args.datasets, [f"gnsm-{v}" for v in args.variants], args.seeds, None, progress=False)
    table = {ds: {d.removeprefix("gnsm-"): {"auroc_mean": 100 * r["auroc_mean"], "auroc_std": 100 * r["auroc_std"],
                                          "seconds_per_seed": r["fit_time_mean"] + r["score_time_mean"]}
                  for d, r in dres["detectors"].items()}
             for ds, dres in res["datasets"].items()}
    lines = ["| dataset | " + " | ".join(args.variants) + " |", "|---" * (len(args.variants) + 1) + "|"]
    for ds, row in table.items():
        lines.append(f"| {ds} | " + " | ".join(f"{row[v]['auroc_mean']:.1f} ± {row[v]['auroc_std']:.1f}"
                                                for v in args.variants) + " |")
    means = {v: float(np.mean([row[v]["auroc_mean"] for row in table.values()])) for v in args.variants}
    lines.append("| mean | " + " | ".join(f"{means[v]:.1f}" for v in args.variants) + " |")
    print("\n".join(lines))
    out = Path(args.out) / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(sys.argv), "seeds": args.seeds, "auroc": table,
                               "wall_seconds": time.perf_counter() - t0}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
