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
    python benchmarks/bench_detector_scale.py --params '{"fit_score_rows": null}' --label all-rows   # a variant
    python benchmarks/bench_detector_scale.py --score-rows 1000000 --out ...   # also fit + score a 1M-row table

``--params`` passes extra GNSMDetector arguments (JSON), ``--threads`` sets ``GNSM_NUM_THREADS``. The JSON also
holds the roofline: the network's multiply-add FLOPs per record (scoring passes and training steps, counted from
the layer shapes) against the measured time, with this CPU's measured fp32 (and bf16) matrix-product rate, and the
fused relax / loss kernels' measured ns per element on this table's layout: together the floor of the run's work.

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


def _passes_flops(model, shared_film: bool) -> float:
    """Multiply-add FLOPs (2 per MAC) of one forward pass of a TabularResMLP per record, from its Linear shapes;
    the temperature embedding and FiLM projections count only when computed per record."""
    from torch import nn
    total = 0.0
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            per_record = not (name.startswith("embed") or name.endswith("film.proj"))
            if per_record or not shared_film:
                total += 2.0 * mod.in_features * mod.out_features
    return total


def roofline(det, run: dict, rows: int, fit_rows: int) -> dict:
    """FLOPs of the measured fit + score, and the time they take at the measured fp32 matmul rate."""
    import inspect

    from gnsm.models import tabular_mlp
    shared = "log_tau[:1]" in inspect.getsource(tabular_mlp.TabularResMLP.forward)
    passes = len(det._score_indices()) * int(det.n_noise_copies)
    score_pass = _passes_flops(det.model_, shared)
    train = 3.0 * _passes_flops(det.model_, False) * run["n_steps"] * int(det.train_info_["batch_size"])
    scored = rows + run["fit_scored_rows"]
    total = train + scored * passes * score_pass
    rate = matmul_rates()["fp32"] * 1e9
    # The fused relax and loss kernels touch every channel of every row once per pass; at their measured
    # rate they add a second floor next to the matrix products (training: relax + loss with its gradient).
    C = sum(det.field_sizes_)
    kern = kernel_rates(det.field_sizes_)
    score_elems = scored * passes * C
    train_elems = run["n_steps"] * int(det.train_info_["batch_size"]) * C
    kernel_s = (score_elems * (kern["relax_ns"] + kern["loss_ns"])
                + train_elems * (kern["relax_ns"] + kern["loss_grad_ns"])) * 1e-9
    measured = run["fit_s"] + run["score_s"]
    return {"flops_per_pass": score_pass, "passes_per_record": passes, "flops_per_record": passes * score_pass,
            "train_flops": train, "records_scored": scored, "total_flops": total,
            "seconds_at_matmul_rate": total / rate, "measured_s": measured,
            "fraction_of_matmul_rate": (total / rate) / measured,
            "kernel_ns_per_element": kern, "kernel_elements": score_elems + train_elems,
            "seconds_in_fused_kernels_at_their_rate": kernel_s,
            "floor_s": total / rate + kernel_s, "fraction_of_floor": (total / rate + kernel_s) / measured}


_RATES: dict = {}


def _rate_loop(fn, seconds: float = 1.0) -> float:
    """Seconds per call of ``fn`` over about ``seconds`` of repeats (after one warm-up call)."""
    fn()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        reps += 1
    return (time.perf_counter() - t0) / reps


def kernel_rates(field_sizes: list[int], rows: int = 4096) -> dict:
    """ns per element (row x channel) of the fused relax, KL loss and KL loss + gradient ops on a
    scoring-sized batch of this table's layout, with the package's thread setting."""
    import torch

    from gnsm import ops
    gen = torch.Generator().manual_seed(0)
    labels = torch.stack([torch.randint(0, k, (rows,), generator=gen) for k in field_sizes], dim=1)
    tau = torch.full((rows,), 5.0)
    y, state = ops.relax_from_labels(labels, field_sizes, tau, eps=1e-3, generator=gen)
    out = torch.randn(y.shape, generator=gen)
    out_g = out.clone().requires_grad_()
    n = rows * sum(field_sizes)

    def loss_grad():
        ops.score_matching_loss(out_g, state, field_sizes, tau, kind="kl", reduction="mean").backward()
    return {"relax_ns": _rate_loop(lambda: ops.relax_from_labels(labels, field_sizes, tau, eps=1e-3,
                                                                 generator=gen)) / n * 1e9,
            "loss_ns": _rate_loop(lambda: ops.score_matching_loss(out, state, field_sizes, tau, kind="kl",
                                                                  reduction="none")) / n * 1e9,
            "loss_grad_ns": _rate_loop(loss_grad) / n * 1e9, "rows": rows}


def matmul_rates() -> dict:
    """GFLOP/s of a (4096 x 558) @ (558 x 128) product (a scoring-sized layer: 512 records x 8 copies) in fp32
    and bf16 on this CPU."""
    import torch
    if _RATES:
        return _RATES
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(4096, 558).to(dtype)
        b = torch.randn(558, 128).to(dtype)
        a @ b
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 1.0:
            a @ b
            reps += 1
        _RATES[name] = 2 * 4096 * 558 * 128 * reps / (time.perf_counter() - t0) / 1e9
    return _RATES


def main(argv: list[str] | None = None) -> int:
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
    p.add_argument("--params", default="{}", help="extra GNSMDetector parameters as JSON")
    p.add_argument("--label", default="", help="a name for this run in the JSON")
    p.add_argument("--threads", type=int, default=None, help="GNSM_NUM_THREADS (default: the package's rule)")
    p.add_argument("--score-rows", type=int, default=0,
                   help="also fit and score a table of this many rows drawn from this one (chunked, progress bar)")
    p.add_argument("--big-params", default="{}", help="extra GNSMDetector parameters (JSON) for --score-rows")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.threads:
        import os
        os.environ["GNSM_NUM_THREADS"] = str(args.threads)
    import torch
    from sklearn.metrics import roc_auc_score

    from gnsm.detectors.tabular import GNSMDetector
    from gnsm.evaluation import make_detector
    extra = json.loads(args.params)
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
        params = {"random_state": args.seed, "n_steps": steps if steps == "auto" else int(steps), **extra}
        if args.width:
            params["width"] = args.width
        det = GNSMDetector(**params)
        t0 = time.perf_counter()
        det.fit(normal)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        scores = det.decision_function(X)
        score_s = time.perf_counter() - t0
        run = {"n_steps": int(det.train_info_["steps"]), "train_s": det.train_info_["seconds"],
               "fit_s": fit_s, "score_s": score_s, "score_records_per_s": args.rows / score_s,
               "final_train_loss": det.train_info_.get("final_train_loss"),
               "auroc_gnsm": 100 * roc_auc_score(y, scores),
               "fit_scored_rows": int(len(det.decision_scores_))}
        run["roofline"] = roofline(det, run, args.rows, len(normal))
        if args.score_rows:
            # A big table drawn (with replacement) from this one: the same distribution, any size. Fit on its
            # normal rows and score all of it, chunked, with the progress bar on and --big-params.
            pick = np.random.default_rng(args.seed + 7).integers(len(X), size=args.score_rows)
            big, ybig = X.iloc[pick].reset_index(drop=True), y[pick]
            del det
            bdet = GNSMDetector(**{**params, **json.loads(args.big_params), "verbose": True})
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            t0 = time.perf_counter()
            bdet.fit(big[ybig == 0])
            t1 = time.perf_counter()
            sbig = bdet.decision_function(big)
            run["big"] = {"rows": args.score_rows, "fit_rows": int((ybig == 0).sum()), "fit_s": t1 - t0,
                          "score_s": time.perf_counter() - t1, "params": json.loads(args.big_params),
                          "auroc_gnsm": 100 * roc_auc_score(ybig, sbig), "peak_rss_mib_before": rss0,
                          "peak_rss_mib_after": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                          "table_mib": float(big.memory_usage(deep=True).sum() / 2 ** 20)}
        runs.append(run)
    result = {
        "command": "python benchmarks/bench_detector_scale.py " + " ".join(argv if argv is not None else
                                                                           __import__("sys").argv[1:]),
        "label": args.label, "params": extra, "matmul_gflops": matmul_rates(),
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
    for r in runs:
        f = r["roofline"]
        k = f["kernel_ns_per_element"]
        print(f"roofline ({r['n_steps']} steps): {f['total_flops'] / 1e12:.2f} TFLOP at "
              f"{result['matmul_gflops']['fp32']:.0f} GFLOP/s = {f['seconds_at_matmul_rate']:.1f} s; fused kernels "
              f"{f['kernel_elements'] / 1e9:.2f} G elements at relax {k['relax_ns']:.2f} / loss {k['loss_ns']:.2f} / "
              f"loss+grad {k['loss_grad_ns']:.2f} ns = {f['seconds_in_fused_kernels_at_their_rate']:.1f} s; "
              f"floor {f['floor_s']:.1f} s of {f['measured_s']:.1f} s measured")
    print(f"peak RSS {result['peak_rss_mib']:.0f} MiB")
    out = Path(args.out) if args.out else HERE / "results" / (
        "detector_scale_cpu.json" if not args.numerical else f"detector_scale_cpu_num{args.numerical}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
