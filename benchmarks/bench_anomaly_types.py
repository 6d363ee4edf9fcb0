"""Anomaly types built for a tabular detector: GNSM against every baseline of ``gnsm evaluate``, one test table per
type.

One training table of normal records, with structure to learn: each record draws a latent cluster (8) and every
structured categorical field (cardinalities cycling through 2..20) draws its category from a cluster-specific
Dirichlet(0.3) distribution; numerical columns are cluster means plus unit noise. Some fields also hold rare
values (each seen in about 0.02 % of the normal records, well under 0.1 % of the training rows), and two columns
are constant (``status`` = ``ok``, ``source`` = ``main``). The detectors fit on it once; each anomaly type then has
its own test table: fresh normal records plus 1 % anomalies of that type, built from normal records:

* ``combination``: every structured field drawn from an independent random cluster (each value is common, only the
  combination is rare; the frequency score is near chance by construction);
* ``rare_value``: one field of a normal record takes one of its rare values;
* ``constant``: one constant column takes another value (``failed`` / ``backup``);
* ``unseen``: one field takes a value never seen in training;
* ``numerical``: one numerical column goes out of the training range (training max + 1..3 training stds, or
  min - ...), the categories stay typical;
* ``mixture``: each anomaly of a type drawn at random from the five above.

Detectors: GNSMDetector with the package defaults (and the same fit scored with ``rarity_weight`` 0, the denoising
error alone), the per-field category-frequency score, and PyOD's ECOD, COPOD, IForest and KNN on the one-hot
encoding (encoder fitted on the training rows), as ``gnsm evaluate`` registers them.

    python benchmarks/bench_anomaly_types.py                 # 30,000 training rows, 30 columns
    python benchmarks/bench_anomaly_types.py --quick         # 4,000 training rows, 20 columns: a few minutes

Prints AUROC and AP tables and writes ``benchmarks/results/anomaly_types.json`` (``anomaly_types_quick.json``).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import write_json  # noqa: E402

TYPES = ("combination", "rare_value", "constant", "unseen", "numerical", "mixture")
BASELINES = ("ecod", "copod", "iforest", "knn")
CONSTANT = {"status": ("ok", "failed"), "source": ("main", "backup")}


class Generator:
    """The normal-record model and the anomaly makers (see the module docstring)."""

    def __init__(self, n_fields: int, n_numerical: int, n_rare_fields: int, seed: int, clusters: int = 8,
                 rare_rate: float = 2e-4) -> None:
        rng = np.random.default_rng(seed)
        self.clusters = clusters
        self.cards = [2 + j % 19 for j in range(n_fields)]
        self.probs = [rng.dirichlet(np.full(k, 0.3), size=clusters) for k in self.cards]
        self.means = rng.normal(0, 2, size=(n_numerical, clusters))
        self.rare_fields = list(range(0, n_fields, max(1, n_fields // max(n_rare_fields, 1))))[:n_rare_fields]
        self.rare_rate = rare_rate
        self.n_numerical = n_numerical

    def normal(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        cluster = rng.integers(self.clusters, size=n)
        return self._records(n, rng, lambda: cluster)

    def _records(self, n: int, rng: np.random.Generator, own) -> pd.DataFrame:
        cols: dict[str, np.ndarray] = {}
        for j, k in enumerate(self.cards):
            c = own()
            u = rng.random(n)[:, None]
            codes = (u > np.cumsum(self.probs[j][c], axis=1)).sum(1).clip(0, k - 1)
            vals = np.asarray([f"v{i}" for i in range(k)], dtype=object)[codes]
            if j in self.rare_fields:  # rare values occur among normal records too, just rarely
                hit = rng.random(n) < self.rare_rate
                vals[hit] = rng.choice([f"r{j}a", f"r{j}b"], size=int(hit.sum()))
            cols[f"c{j}"] = vals
        for name, (value, _) in CONSTANT.items():
            cols[name] = np.full(n, value, dtype=object)
        for d in range(self.n_numerical):
            cols[f"x{d}"] = self.means[d][own()] + rng.normal(0, 1, size=n)
        return pd.DataFrame(cols)

    def anomalies(self, kind: str, n: int, rng: np.random.Generator, train: pd.DataFrame) -> pd.DataFrame:
        if kind == "mixture":
            kinds = rng.choice(TYPES[:-1], size=n)
            parts = [self.anomalies(k, int((kinds == k).sum()), rng, train) for k in TYPES[:-1]]
            return pd.concat(parts, ignore_index=True)
        if kind == "combination":
            return self._records(n, rng, lambda: rng.integers(self.clusters, size=n))
        X = self.normal(n, rng)
        if n == 0:
            return X
        rows = np.arange(n)
        if kind == "rare_value":
            fields = rng.choice(self.rare_fields, size=n)
            for j in set(fields.tolist()):
                m = fields == j
                X.loc[m, f"c{j}"] = rng.choice([f"r{j}a", f"r{j}b"], size=int(m.sum()))
        elif kind == "constant":
            names = rng.choice(list(CONSTANT), size=n)
            for name in CONSTANT:
                X.loc[names == name, name] = CONSTANT[name][1]
        elif kind == "unseen":
            fields = rng.integers(len(self.cards), size=n)
            for j in set(fields.tolist()):
                X.loc[fields == j, f"c{j}"] = "never-seen"
        elif kind == "numerical":
            d = rng.integers(self.n_numerical, size=n)
            for k in set(d.tolist()):
                col = f"x{k}"
                lo, hi, sd = train[col].min(), train[col].max(), train[col].std()
                m = rows[d == k]
                up = rng.random(len(m)) < 0.5
                out = rng.uniform(1, 3, size=len(m)) * sd
                X.loc[m, col] = np.where(up, hi + out, lo - out)
        else:
            raise ValueError(f"kind: unknown anomaly type {kind!r}")
        return X


def _onehot(encoder, X: pd.DataFrame) -> np.ndarray:
    from gnsm.data import one_hot
    e = encoder.transform(X)
    return np.hstack([one_hot(e.codes, encoder.field_sizes), e.numerical]).astype(np.float32)


def add_table_args(p: argparse.ArgumentParser) -> None:
    """The options that define the tables (shared with ``anomaly_types_ceiling.py``)."""
    p.add_argument("--quick", action="store_true", help="4,000 training rows, 20 columns, 2,000 test rows per type")
    p.add_argument("--train-rows", type=int, default=None)
    p.add_argument("--test-rows", type=int, default=None, help="normal test rows per type")
    p.add_argument("--fields", type=int, default=None, help="structured categorical fields")
    p.add_argument("--numerical", type=int, default=3)
    p.add_argument("--rare-fields", type=int, default=5)
    p.add_argument("--anomaly-fraction", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)


def make_tables(args: argparse.Namespace) -> tuple[Generator, pd.DataFrame, dict[str, tuple[pd.DataFrame, np.ndarray]]]:
    """The generator, the training table and one (test table, anomaly labels) per type, from the table options."""
    train_rows = args.train_rows or (4000 if args.quick else 30_000)
    test_rows = args.test_rows or (2000 if args.quick else 10_000)
    fields = args.fields or (15 if args.quick else 25)
    gen = Generator(fields, args.numerical, args.rare_fields, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    train = gen.normal(train_rows, rng)
    n_anom = max(1, int(round(args.anomaly_fraction * test_rows)))
    tests = {}
    for kind in TYPES:
        X = pd.concat([gen.normal(test_rows, rng), gen.anomalies(kind, n_anom, rng, train)], ignore_index=True)
        tests[kind] = (X, np.r_[np.zeros(test_rows), np.ones(n_anom)].astype(int))
    return gen, train, tests


def baseline_scores(train: pd.DataFrame, tests: dict[str, tuple[pd.DataFrame, np.ndarray]], baselines: list[str],
                    seed: int, times: dict[str, float]) -> dict[str, dict[str, np.ndarray]]:
    """Scores of the frequency score (on the table) and of the PyOD ``baselines`` (on the one-hot encoding, encoder
    fitted on the training rows) for every test table, as ``gnsm evaluate`` registers them; fit + score seconds go
    into ``times``."""
    from gnsm.data import TabularEncoder
    from gnsm.evaluation import make_detector

    scores: dict[str, dict[str, np.ndarray]] = {k: {} for k in tests}
    t0 = time.perf_counter()
    freq = make_detector("frequency", seed=seed).fit(train)
    for kind, (X, _) in tests.items():
        scores[kind]["frequency"] = freq.decision_function(X)
    times["frequency"] = time.perf_counter() - t0
    encoder = TabularEncoder(unseen="unknown").fit(train)
    onehot_train = _onehot(encoder, train)
    onehot = {k: _onehot(encoder, X) for k, (X, _) in tests.items()}
    for name in baselines:
        t0 = time.perf_counter()
        model = make_detector(name, seed=seed).fit(onehot_train)
        for kind in tests:
            scores[kind][name] = model.decision_function(onehot[kind])
        times[name] = time.perf_counter() - t0
    return scores


def print_tables(table: dict[str, dict[str, dict[str, float]]], first: str) -> None:
    """The AUROC and AP tables (rows: scorers, columns: the types in ``table``), as markdown."""
    kinds = list(table)
    for metric in ("auroc", "ap"):
        print(f"\n{metric.upper()} %")
        print(f"| {first} | " + " | ".join(kinds) + " |")
        print("|---|" + "---|" * len(kinds))
        for name in table[kinds[0]]:
            print(f"| {name} | " + " | ".join(f"{table[k][name][metric]:.1f}" for k in kinds) + " |")


def best_baselines(table: dict[str, dict[str, dict[str, float]]], is_baseline) -> dict:
    """Per type and metric, the best scorer among those ``is_baseline(name)`` accepts: {"detector", "value"}."""
    out = {}
    for kind, per in table.items():
        out[kind] = {}
        for m in ("auroc", "ap"):
            value, name = max((v[m], n) for n, v in per.items() if is_baseline(n))
            out[kind][m] = {"detector": name, "value": value}
    return out


def main(argv: list[str] | None = None) -> int:
    import torch
    from sklearn.metrics import average_precision_score, roc_auc_score

    from gnsm.detectors import GNSMDetector

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_table_args(p)
    p.add_argument("--baselines", nargs="*", default=list(BASELINES))
    p.add_argument("--rarity-weights", nargs="*", type=float, default=[0.0, 0.5, 2.0],
                   help="extra GNSM rows: the same fit scored with these rarity_weight values")
    p.add_argument("--n-steps", default="auto", help="GNSMDetector n_steps (default: the package's 'auto')")
    p.add_argument("--params", default="{}", help="extra GNSMDetector parameters as JSON (a variant of the defaults)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    gen, train, tests = make_tables(args)
    train_rows, fields = len(train), len(gen.cards)
    test_rows = int((tests[TYPES[0]][1] == 0).sum())
    n_anom = int(tests[TYPES[0]][1].sum())
    rare_share = float(train[[f"c{j}" for j in gen.rare_fields]].apply(lambda s: s.str.startswith("r")).any(axis=1).mean())

    scores: dict[str, dict[str, np.ndarray]] = {k: {} for k in TYPES}
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    steps = args.n_steps if args.n_steps == "auto" else int(args.n_steps)
    det = GNSMDetector(**{"random_state": args.seed, "n_steps": steps, **json.loads(args.params)}).fit(train)
    times["gnsm fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for kind, (X, _) in tests.items():
        s = det.decision_function(X)
        scores[kind]["gnsm"] = s
        base = s - det._rarity_term(*det._encode(X))  # the denoising error alone, same fit and noise
        rarity = det.rarity(X).sum(axis=1) * len(det._score_indices())
        for w in args.rarity_weights:
            scores[kind][f"gnsm rarity_weight={w:g}"] = base + w * rarity
    times["gnsm score"] = time.perf_counter() - t0
    for kind, per in baseline_scores(train, tests, args.baselines, args.seed, times).items():
        scores[kind].update(per)

    table = {kind: {name: {"auroc": 100 * roc_auc_score(tests[kind][1], s),
                           "ap": 100 * average_precision_score(tests[kind][1], s)}
                    for name, s in per.items()} for kind, per in scores.items()}
    print_tables(table, "detector")
    best = best_baselines(table, lambda name: not name.startswith("gnsm"))
    print("\nbest baseline per type (AUROC / AP): " + ", ".join(
        f"{k} {best[k]['auroc']['detector']} {best[k]['auroc']['value']:.1f} / "
        f"{best[k]['ap']['detector']} {best[k]['ap']['value']:.1f}" for k in TYPES))
    print("times s: " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))
    result = {
        "command": "python benchmarks/bench_anomaly_types.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "train_rows": train_rows, "test_normal_rows": test_rows, "anomalies_per_type": n_anom,
        "structured_fields": fields, "numerical": args.numerical, "constant_columns": list(CONSTANT),
        "rare_fields": [f"c{j}" for j in gen.rare_fields], "train_rows_with_a_rare_value": rare_share,
        "gnsm_params": json.loads(args.params), "gnsm_steps": int(det.train_info_["steps"]), "results": table, "seconds": times,
        "best_baseline": best,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
    }
    write_json(args.out or str(HERE / "results" / ("anomaly_types_quick.json" if args.quick else "anomaly_types.json")),
               result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
