"""The ``gnsm`` command: ``demo``, ``fit``, ``score``, ``evaluate``, ``explain``, ``info``, and the
segmentation commands of :mod:`gnsm.cli_seg` (``fit-seg``, ``score-seg``, ``evaluate-seg``, ``report-seg``).

Every subcommand reads CSV or Parquet (by file suffix) and writes CSV or Parquet. Bad input (missing
file, unknown or absent column, a table with no categorical column, an empty table) prints
``gnsm: error: ...`` on stderr and exits with status 2; ``--quiet`` hides progress bars.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "build_parser"]

DEMO_ENV_STEPS = "GNSM_DEMO_STEPS"  # lets tests run the demo with a tiny training budget


class CLIError(Exception):
    """A user error reported as ``gnsm: error: ...`` with exit status 2."""


# ---------------------------------------------------------------------------- tables
def read_table(path: str) -> "Any":
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"input file {path!r} not found")
    name = p.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            frame = pd.read_parquet(p)
        elif name.endswith((".csv", ".csv.gz", ".txt")):
            frame = pd.read_csv(p)
        elif name.endswith(".tsv"):
            frame = pd.read_csv(p, sep="\t")
        else:
            raise CLIError(f"{path}: unsupported file type; expected .csv, .tsv or .parquet")
    except pd.errors.EmptyDataError:
        raise CLIError(f"{path}: the table is empty (no header and no rows)") from None
    if frame.shape[0] == 0:
        raise CLIError(f"{path}: the table is empty (0 rows)")
    return frame


def write_table(frame: "Any", path: str) -> None:
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    if p.name.lower().endswith((".parquet", ".pq")):
        frame.to_parquet(p)
    else:
        frame.to_csv(p, index=False)


def _split_label(frame: "Any", label_col: str | None, required: bool = False):
    if label_col is None:
        if required:
            raise CLIError("--label-col is required here")
        return frame, None
    if label_col not in frame.columns:
        raise CLIError(f"--label-col: column {label_col!r} is not in the table (columns: {list(frame.columns)})")
    return frame.drop(columns=[label_col]), frame[label_col]


def _check_columns(frame: "Any", names: Sequence[str] | None, flag: str) -> None:
    missing = [c for c in (names or []) if c not in frame.columns]
    if missing:
        raise CLIError(f"{flag}: unknown column(s) {missing} (columns: {list(frame.columns)})")


def _say(args: argparse.Namespace, *msg: Any) -> None:
    if not getattr(args, "quiet", False):
        print(*msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- subcommands
def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from gnsm import __version__, ops

    print(f"gnsm {__version__}, torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
    for k, v in ops.build_info().items():
        print(f"  {k}: {v}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from gnsm.detectors.tabular import GNSMDetector

    frame = read_table(args.input)
    X, _ = _split_label(frame, args.label_col)
    _check_columns(X, args.categorical, "--categorical")
    _check_columns(X, args.numerical, "--numerical")
    params = dict(contamination=args.contamination, scoring=args.scoring, head=args.head,
                  categorical=args.categorical, numerical=args.numerical, random_state=args.seed,
                  verbose=not args.quiet, device=args.device)
    if args.steps is not None:
        params["n_steps"] = args.steps
    det = GNSMDetector(**params)
    _say(args, f"gnsm fit: {len(X)} rows x {X.shape[1]} columns from {args.input}")
    det.fit(X)
    if is_main_process():
        det.save(args.model_dir)
    _say(args, f"gnsm fit: saved to {args.model_dir} (fields {len(det.field_sizes_)}, numerical "
               f"{det.n_numerical_}, threshold {det.threshold_:.4g}, {det.fit_time_:.1f}s)")
    return 0


def _load(model_dir: str):
    from gnsm.detectors.tabular import GNSMDetector

    return GNSMDetector.load(model_dir)


def _features_only(det: Any, frame: Any, label_col: str | None):
    X, _ = _split_label(frame, label_col) if label_col else (frame, None)
    if label_col is None:
        # A label column seen at fit time was excluded there; drop it silently if it is present here.
        extra = [c for c in X.columns if c not in det.encoder_.feature_names_in_]
        if extra and all(c in frame.columns for c in extra) and len(extra) == 1 and \
                len(X.columns) - 1 == len(det.encoder_.feature_names_in_):
            X = X.drop(columns=extra)
    return X


def cmd_score(args: argparse.Namespace) -> int:
    det = _load(args.model_dir)
    frame = read_table(args.input)
    X = _features_only(det, frame, args.label_col)
    scores = det.decision_function(X)
    out = frame.copy()
    out["score"] = scores
    out["is_anomaly"] = (scores > det.threshold_).astype(int)
    write_table(out, args.output)
    _say(args, f"gnsm score: {len(out)} rows, {int(out['is_anomaly'].sum())} above the threshold; "
               f"wrote {args.output}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    import pandas as pd

    det = _load(args.model_dir)
    frame = read_table(args.input)
    X = _features_only(det, frame, args.label_col)
    ex = det.explain(X, top_k=args.top_k)
    ex = ex.sort_values("score", ascending=False).head(args.top)
    ex.insert(0, "row", ex.index)
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        print(ex.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.output:
        write_table(ex, args.output)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from gnsm.evaluation import evaluate, markdown_report
    from gnsm.evaluation import gnsm_entry  # noqa: F401  (registers "gnsm" and "gnsm-paper")

    datasets = list(args.datasets or [])
    if args.data:
        if not Path(args.data).is_file():
            raise FileNotFoundError(f"--data: file {args.data!r} not found")
        if args.label_col is None or args.anomaly_value is None:
            raise CLIError("--data needs --label-col and --anomaly-value")
        datasets.append(args.data)
    if not datasets:
        raise CLIError("give dataset names (e.g. cars solar) or --data FILE --label-col COL --anomaly-value V")
    anomaly: Any = args.anomaly_value
    if anomaly is not None and len(anomaly) == 1:
        anomaly = anomaly[0]
    results = evaluate(datasets, args.detectors, args.seeds, args.out, label_col=args.label_col,
                       anomaly_value=anomaly, name=args.name, progress=not args.quiet)
    print(markdown_report(results))
    _say(args, f"gnsm evaluate: wrote {Path(args.out) / (args.name + '.json')}, .md and _roc.png")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np

    from gnsm.datasets import load_dataset
    from gnsm.detectors.tabular import GNSMDetector
    from gnsm.evaluation import auroc, average_precision, split_inliers

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = args.steps or (int(os.environ[DEMO_ENV_STEPS]) if os.environ.get(DEMO_ENV_STEPS) else None)
    ds = load_dataset("cars")
    split = split_inliers(ds.y, args.seed)
    X = ds.X
    train, val, test = (X.iloc[getattr(split, p)] for p in ("train", "val", "test"))
    y_test = ds.y[split.test]
    print(f"UCI Car Evaluation (bundled, CC BY 4.0): {len(X)} cars, normal = 'unacc', anomaly = 'vgood' "
          f"({ds.n_anomalies}); train on {len(train)} normal cars, test on {len(test)} "
          f"({int(y_test.sum())} anomalies)")
    params: dict[str, Any] = dict(random_state=args.seed, verbose=not args.quiet)
    if steps:
        params["n_steps"] = steps
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

    prof = det.score_norm_profiles(X)
    taus = det._schedule().taus().numpy()
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


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gnsm", description="Gumbel Noise Score Matching anomaly detection "
                                     "for categorical / mixed tables and segmentation masks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or messages")

    p = sub.add_parser("demo", help="train on the bundled UCI car data and show what GNSM finds")
    p.add_argument("--out", default="gnsm-demo", help="output folder (default: ./gnsm-demo)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--top", type=int, default=8, help="anomalies to list")
    p.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)
    common(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("fit", help="train a detector on a table of normal records")
    p.add_argument("input", help="CSV or Parquet file")
    p.add_argument("--model-dir", required=True, help="folder to save the model in")
    p.add_argument("--label-col", default=None, help="column to exclude (e.g. a label)")
    p.add_argument("--categorical", nargs="+", default=None, help="columns to treat as categorical")
    p.add_argument("--numerical", nargs="+", default=None, help="columns to treat as numerical")
    p.add_argument("--contamination", type=float, default=0.1, help="expected anomaly fraction (threshold)")
    p.add_argument("--scoring", choices=["denoise", "paper"], default="denoise")
    p.add_argument("--head", choices=["gmm", "kde", "knn", "hgad"], default=None)
    p.add_argument("--steps", type=int, default=None, help="training steps (default: auto)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    common(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("score", help="score a table with a saved model")
    p.add_argument("input", help="CSV or Parquet file")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--output", "-o", required=True, help="CSV or Parquet file: the input plus score, is_anomaly")
    p.add_argument("--label-col", default=None, help="column to exclude before scoring")
    common(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("explain", help="per-field contributions of the top anomalies")
    p.add_argument("input", help="CSV or Parquet file")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--top", type=int, default=10, help="records to show")
    p.add_argument("--top-k", type=int, default=3, help="fields per record")
    p.add_argument("--label-col", default=None, help="column to exclude before scoring")
    p.add_argument("--output", "-o", default=None, help="also write the table (CSV or Parquet)")
    common(p)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("evaluate", help="paper protocol: datasets x detectors x seeds -> tables and ROC plot")
    p.add_argument("datasets", nargs="*", help="registered names (cars mushrooms solar cmc chess adult)")
    p.add_argument("--data", default=None, help="a CSV/ARFF/Parquet file to evaluate on")
    p.add_argument("--label-col", default=None)
    p.add_argument("--anomaly-value", nargs="+", default=None)
    p.add_argument("--detectors", nargs="+", default=["gnsm", "gnsm-paper", "frequency", "ecod", "iforest"])
    p.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44, 45, 46])
    p.add_argument("--out", default="gnsm-eval", help="output folder")
    p.add_argument("--name", default="results", help="file stem of the reports")
    common(p)
    p.set_defaults(func=cmd_evaluate)

    from gnsm.cli_seg import add_seg_commands

    def wrap(fn):
        return lambda args: fn(args, lambda *msg: _say(args, *msg))

    add_seg_commands(sub, common, wrap)

    p = sub.add_parser("info", help="build information of the compiled ops")
    p.set_defaults(func=cmd_info)
    return parser


def is_main_process() -> bool:
    """False on the ranks > 0 of a ``torchrun`` launch (they train, but do not write or print)."""
    import torch.distributed as dist
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:  # torchrun --nproc-per-node N -m gnsm fit ... : DDP training, rank 0 saves
        from gnsm.training import init_distributed
        rank, _ = init_distributed()
        if rank > 0:
            args.quiet = True
    try:
        return int(args.func(args) or 0)
    except CLIError as err:
        print(f"gnsm: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, KeyError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"gnsm: error: {msg}", file=sys.stderr)
        return 2
    finally:
        if distributed:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
