"""Table commands of ``gnsm``: ``demo``, ``fit``, ``score``, ``explain``, ``evaluate``, ``info``.

Tables are read and written by suffix (CSV, TSV, Parquet; ARFF read only), see
:mod:`gnsm.datasets.tables`.
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

from .common import (CLIError, LazyChoices, add_quiet, check_columns, check_device, check_model_dir,
                     check_out_dir, check_output_file, is_main_process, load_table, positive_int,
                     save_table, say, split_label)

__all__ = ["add_tabular_commands", "cmd_demo", "cmd_evaluate", "cmd_explain", "cmd_fit", "cmd_info",
           "cmd_score", "DEFAULT_EVAL_DETECTORS"]

DEFAULT_EVAL_DETECTORS = ("gnsm", "gnsm-paper", "frequency", "ecod", "iforest")


# ---------------------------------------------------------------------------- commands
def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from .. import __version__, ops

    print(f"gnsm {__version__}, torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
    for k, v in ops.build_info().items():
        print(f"  {k}: {v}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from ..detectors import GNSMDetector

    frame = load_table(args.input)
    X, _ = split_label(frame, args.label_col)
    check_columns(X, args.categorical, "--categorical")
    check_columns(X, args.numerical, "--numerical")
    check_device(args.device)
    check_model_dir(args.model_dir)
    params = dict(contamination=args.contamination, scoring=args.scoring, head=args.head,
                  categorical=args.categorical, numerical=args.numerical, random_state=args.seed,
                  verbose=not args.quiet, device=args.device)
    if args.steps is not None:
        params["n_steps"] = args.steps
    det = GNSMDetector(**params)
    say(args, f"gnsm fit: {len(X)} rows x {X.shape[1]} columns from {args.input}")
    det.fit(X)
    if is_main_process():
        det.save(args.model_dir)
    say(args, f"gnsm fit: saved to {args.model_dir} (fields {len(det.field_sizes_)}, numerical "
              f"{det.n_numerical_}, threshold {det.threshold_:.4g}, {det.fit_time_:.1f}s)")
    return 0


def _load(model_dir: str) -> Any:
    from ..detectors import GNSMDetector

    return GNSMDetector.load(model_dir)


def _features_only(det: Any, frame: Any, label_col: str | None) -> Any:
    X, _ = split_label(frame, label_col) if label_col else (frame, None)
    if label_col is None:
        # A label column seen at fit time was excluded there; drop it silently if it is present here.
        extra = [c for c in X.columns if c not in det.encoder_.feature_names_in_]
        if extra and all(c in frame.columns for c in extra) and len(extra) == 1 and \
                len(X.columns) - 1 == len(det.encoder_.feature_names_in_):
            X = X.drop(columns=extra)
    return X


def cmd_score(args: argparse.Namespace) -> int:
    check_output_file(args.output)
    det = _load(args.model_dir)
    frame = load_table(args.input)
    X = _features_only(det, frame, args.label_col)
    scores = det.decision_function(X)
    out = frame.copy()
    out["score"] = scores
    out["is_anomaly"] = (scores > det.threshold_).astype(int)
    save_table(out, args.output)
    say(args, f"gnsm score: {len(out)} rows, {int(out['is_anomaly'].sum())} above the threshold; "
              f"wrote {args.output}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    import pandas as pd

    if args.output:
        check_output_file(args.output)
    det = _load(args.model_dir)
    frame = load_table(args.input)
    X = _features_only(det, frame, args.label_col)
    ex = det.explain(X, top_k=args.top_k)
    ex = ex.sort_values("score", ascending=False).head(args.top)
    ex.insert(0, "row", ex.index)
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        print(ex.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.output:
        save_table(ex, args.output)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation import SEEDS, evaluate, markdown_report

    datasets = [*args.datasets, *args.data]
    if not datasets:
        raise CLIError("give dataset names (e.g. cars solar) or files with --label-col COL --anomaly-value V")
    check_out_dir(args.out)
    anomaly: Any = args.anomaly_value
    if anomaly is not None and len(anomaly) == 1:
        anomaly = anomaly[0]
    seeds = SEEDS if args.seeds is None else args.seeds
    results = evaluate(datasets, args.detectors, seeds, args.out, label_col=args.label_col,
                       anomaly_value=anomaly, name=args.name, progress=not args.quiet)
    print(markdown_report(results))
    say(args, f"gnsm evaluate: wrote {Path(args.out) / (args.name + '.json')}, .md and _roc.png")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np

    from ..datasets import load_dataset
    from ..detectors import GNSMDetector
    from ..evaluation import auroc, average_precision, split_inliers

    check_out_dir(args.out)
    out = Path(args.out)
    check_model_dir(str(out / "model"), "--out")
    ds = load_dataset("cars")
    split = split_inliers(ds.y, args.seed)
    X = ds.X
    train, val, test = (X.iloc[getattr(split, p)] for p in ("train", "val", "test"))
    y_test = ds.y[split.test]
    print(f"UCI Car Evaluation (bundled, CC BY 4.0): {len(X)} cars, normal = 'unacc', anomaly = 'vgood' "
          f"({ds.n_anomalies}); train on {len(train)} normal cars, test on {len(test)} "
          f"({int(y_test.sum())} anomalies)")
    params: dict[str, Any] = dict(random_state=args.seed, verbose=not args.quiet)
    if args.steps is not None:
        params["n_steps"] = args.steps
    det = GNSMDetector(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        det.fit(train, X_val=val)
    scores = det.decision_function(test)
    print(f"trained in {det.fit_time_:.1f}s; test AUROC {100 * auroc(y_test, scores):.1f}  "
          f"AP {100 * average_precision(y_test, scores):.1f}")
    ex = det.explain(test, top_k=2)
    ex["label"] = np.where(y_test == 1, "vgood (anomaly)", "unacc")
    top = ex.sort_values("score", ascending=False).head(args.top)
    print(f"\ntop {len(top)} anomalies and their most anomalous fields (z-score vs training):")
    for idx, row in top.iterrows():
        rec = ", ".join(f"{c}={test.loc[idx, c]}" for c in test.columns)
        print(f"  score {row['score']:8.3f}  [{row['label']}]  {rec}")
        print(f"      -> {row['field_1']}={row['value_1']} ({row['contribution_1']:+.1f}), "
              f"{row['field_2']}={row['value_2']} ({row['contribution_2']:+.1f})")
    out.mkdir(parents=True, exist_ok=True)
    png = out / "score_norm_profiles.png"
    _plot_profiles(det, test, y_test, png)
    ex.to_csv(out / "test_scores.csv")
    det.save(out / "model")
    print(f"\nwrote {png}, {out / 'test_scores.csv'} and the model in {out / 'model'}")
    return 0


def _plot_profiles(det: Any, X: Any, y: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ..core import Schedule

    prof = det.score_norm_profiles(X)  # (n, N): all N temperatures of the detector's schedule
    taus = Schedule(n=det.n_temperatures, tau_max=det.tau_max, tau_min=det.tau_min).taus().numpy()
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    for label, color, name in ((0, "tab:blue", "normal"), (1, "tab:red", "anomalous")):
        P = prof[np.asarray(y) == label]
        if len(P) == 0:
            continue
        for row in P[:40]:
            ax.plot(taus, row, color=color, alpha=0.12, lw=0.8)
        ax.plot(taus, np.median(P, axis=0), color=color, lw=2.5, label=f"{name} (median of {len(P)})")
    ax.set_xscale("log")
    ax.set_xlabel("temperature tau")
    ax.set_ylabel("score norm ||s(x, tau)||")
    ax.set_title("GNSM score-norm profiles, UCI cars (test set)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------- parsers
def add_tabular_commands(sub: Any) -> None:
    """Register the table commands on the ``gnsm`` subparsers."""
    p = sub.add_parser("demo", help="train on the bundled UCI car data and show what GNSM finds")
    p.add_argument("--out", default="gnsm-demo", help="output folder (default: ./gnsm-demo)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--top", type=positive_int, default=8, help="anomalies to list")
    p.add_argument("--steps", type=positive_int, default=None, help="training steps (default: auto)")
    add_quiet(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("fit", help="train a detector on a table of normal records")
    p.add_argument("input", help="CSV, TSV, Parquet or ARFF file")
    p.add_argument("--model-dir", required=True, help="folder to save the model in")
    p.add_argument("--label-col", default=None, help="column to exclude (e.g. a label)")
    p.add_argument("--categorical", nargs="+", default=None, help="columns to treat as categorical")
    p.add_argument("--numerical", nargs="+", default=None, help="columns to treat as numerical")
    p.add_argument("--contamination", type=float, default=0.1, help="expected anomaly fraction (threshold)")
    p.add_argument("--scoring", choices=LazyChoices("gnsm.detectors", "SCORINGS"), default="denoise",
                   metavar="MODE", help="%(choices)s (default: %(default)s)")
    p.add_argument("--head", choices=LazyChoices("gnsm.detectors", "HEADS"), default=None, metavar="HEAD",
                   help="density head: %(choices)s (default: loss for denoise, gmm for paper)")
    p.add_argument("--steps", type=positive_int, default=None, help="training steps (default: auto)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_quiet(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("score", help="score a table with a saved model")
    p.add_argument("input", help="CSV, TSV, Parquet or ARFF file")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--output", "-o", required=True,
                   help="CSV, TSV or Parquet file: the input plus score, is_anomaly")
    p.add_argument("--label-col", default=None, help="column to exclude before scoring")
    add_quiet(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("explain", help="per-field contributions of the top anomalies")
    p.add_argument("input", help="CSV, TSV, Parquet or ARFF file")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--top", type=positive_int, default=10, help="records to show")
    p.add_argument("--top-k", type=positive_int, default=3, help="fields per record")
    p.add_argument("--label-col", default=None, help="column to exclude before scoring")
    p.add_argument("--output", "-o", default=None, help="also write the table (CSV, TSV or Parquet)")
    add_quiet(p)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("evaluate", help="paper protocol: datasets x detectors x seeds -> tables and ROC plot")
    p.add_argument("datasets", nargs="*", metavar="DATASET",
                   help="registered names (cars mushrooms mushrooms_rare solar cmc chess adult) or "
                        "CSV/TSV/ARFF/Parquet files (these need --label-col and --anomaly-value)")
    p.add_argument("--data", nargs="+", default=[], metavar="DATASET", help="more datasets, as DATASET")
    p.add_argument("--label-col", default=None, help="label column of file datasets")
    p.add_argument("--anomaly-value", nargs="+", default=None,
                   help="label value(s) marking anomalies in file datasets")
    p.add_argument("--detectors", nargs="+", default=list(DEFAULT_EVAL_DETECTORS),
                   help="registered detector names (gnsm.evaluation.list_detectors())")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="split seeds (default: the protocol's 42 43 44 45 46)")
    p.add_argument("--out", default="gnsm-eval", help="output folder")
    p.add_argument("--name", default="results", help="file stem of the reports")
    add_quiet(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("info", help="build information of the compiled ops")
    p.set_defaults(func=cmd_info)
