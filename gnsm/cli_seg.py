"""Segmentation subcommands of ``gnsm``: ``fit-seg``, ``score-seg``, ``evaluate-seg``, ``report-seg``.

Masks are given as files (``.png`` label images, ``.npy``, ``.nii``/``.nii.gz``) or folders of such
files (sorted by name). ``evaluate-seg`` runs the CamVid / spine evaluation of
:mod:`gnsm.evaluation.seg_eval` and writes ``<dataset>.json``, ``<dataset>.md``, the arrays of the
scored cases (``<dataset>_cases.npz``) and the pictures of :mod:`gnsm.evaluation.seg_report`;
``report-seg`` redraws the pictures from such an ``.npz``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

__all__ = ["add_seg_commands"]

_MASK_SUFFIXES = (".png", ".npy", ".nii", ".nii.gz", ".tif", ".tiff", ".bmp")


def _mask_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.name.lower().endswith(_MASK_SUFFIXES))
            if not found:
                raise FileNotFoundError(f"{p}: no mask files ({', '.join(_MASK_SUFFIXES)}) in this folder")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"mask file or folder {str(p)!r} not found")
    return files


def cmd_fit_seg(args: argparse.Namespace, say: Callable[..., None]) -> int:
    from gnsm.detectors import SegmentationQC

    files = _mask_files(args.masks)
    params: dict[str, Any] = dict(num_classes=args.num_classes, scoring=args.scoring,
                                  positional_prior=args.positional_prior, contamination=args.contamination,
                                  random_state=args.seed, verbose=not args.quiet, **_training_params(args))
    det = SegmentationQC(**params)
    say(f"gnsm fit-seg: {len(files)} masks")
    det.fit([str(f) for f in files])
    from gnsm.cli import is_main_process
    if is_main_process():  # under torchrun every rank trains (DDP); rank 0 writes
        det.save(args.model_dir)
    say(f"gnsm fit-seg: saved to {args.model_dir} (K={det.num_classes_}, {det.spatial_dims_}-D, "
        f"threshold {det.threshold_:.4g}, {det.fit_time_:.1f}s)")
    return 0


def cmd_score_seg(args: argparse.Namespace, say: Callable[..., None]) -> int:
    import numpy as np
    import pandas as pd

    from gnsm.detectors import SegmentationQC

    det = SegmentationQC.load(args.model_dir)
    files = _mask_files(args.masks)
    res = det.predict_maps([str(f) for f in files])
    table = pd.DataFrame({"file": [str(f) for f in files], "score": res.pred_score, "is_poor": res.pred_label,
                          "flagged_voxels": [int(m.sum()) for m in res.pred_mask]})
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    if args.maps_dir:
        maps = Path(args.maps_dir)
        maps.mkdir(parents=True, exist_ok=True)
        for f, m in zip(files, res.anomaly_map):
            stem = f.name[:-7] if f.name.lower().endswith(".nii.gz") else f.stem
            np.save(maps / f"{stem}_anomaly.npy", m)
    say(f"gnsm score-seg: {len(files)} cases, {int(res.pred_label.sum())} flagged; wrote {out}")
    return 0


def _markdown(result: dict) -> str:
    lines = [f"# Segmentation QC: {result['dataset']}", ""]
    if result["dataset"] == "camvid":
        lines += [f"{result['n_train']} train maps, {result['n_cases']} scored cases from {result['n_val_maps']} val maps "
                  f"(shape {result['shape']}, downsample {result['downsample']}); fit {result['fit_seconds']:.0f}s", "",
                  "| method | Spearman rho(score, Dice) | AUROC good vs poor | voxel AUROC (pooled) | voxel AUROC (mean per case) |",
                  "|---|---|---|---|---|"]
        fmt = (lambda v: "-" if v is None else f"{v:.3f}")
        for name, m in result["methods"].items():
            v = m["voxel_auroc"]
            lines.append(f"| {name} | {fmt(m['spearman'])} | {fmt(m['auroc_good_vs_poor'])} | {fmt(v['pooled'])} | "
                         f"{fmt(v['mean_per_case'])} |")
        names = list(result["methods"])
        lines += ["", "Per corruption kind: Spearman / AUROC good vs poor / voxel AUROC", "",
                  "| kind | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for k in result["methods"][names[0]]["per_kind"]:
            cells = []
            for n in names:
                m = result["methods"][n]["per_kind"][k]
                cells.append(f"{fmt(m['spearman'])} / {fmt(m.get('auroc_good_vs_poor'))} / {fmt(m['voxel_auroc'])}")
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
    else:
        lines += [f"voxel AUROC {result['voxel_auroc']:.3f} (foreground {result['voxel_auroc_foreground']:.3f}); "
                  f"failing labels {result['failing_labels']} rank {result['failing_labels_top_ranked']}", "",
                  "| rank | label | Dice | mean anomaly | error fraction |", "|---|---|---|---|---|"]
        for r in result["label_ranking"]:
            lines.append(f"| {r['rank']} | {r['label']} | {r['dice']:.3f} | {r['mean_anomaly']:.3f} | "
                         f"{r['error_fraction']:.3f} |")
    return "\n".join(lines) + "\n"


def cmd_evaluate_seg(args: argparse.Namespace, say: Callable[..., None]) -> int:
    import numpy as np

    from gnsm.evaluation import seg_eval
    from gnsm.evaluation.seg_report import write_report

    params = _training_params(args)
    priors = {"off": (False,), "on": (True,), "both": (False, True)}[args.positional_prior]
    if args.dataset == "camvid":
        extra = {"severities": tuple(args.severities)} if args.severities else {}
        result = seg_eval.evaluate_camvid(downsample=args.downsample or 6, seed=args.seed, detector_params=params,
                                          scorings=args.scoring, positional_priors=priors,
                                          model_dir=args.model_dir, verbose=not args.quiet, **extra)
    else:
        if len(priors) > 1 or len(args.scoring) > 1:
            raise ValueError("evaluate-seg spine: one --scoring and --positional-prior off or on at a time")
        params["scoring"] = args.scoring[0]
        params["positional_prior"] = priors[0]
        result = seg_eval.evaluate_spine(downsample=args.downsample or 4, seed=args.seed, detector_params=params,
                                         model_dir=args.model_dir, verbose=not args.quiet)
    arrays = result.pop("_arrays")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.dataset}.json").write_text(json.dumps(result, indent=1))
    text = _markdown(result)
    (out / f"{args.dataset}.md").write_text(text)
    np.savez_compressed(out / f"{args.dataset}_cases.npz", **arrays)
    write_report(arrays, out / "figures", top=args.top, prefix=f"{args.dataset}_")
    print(text)
    say(f"gnsm evaluate-seg: wrote {out / (args.dataset + '.json')}, .md, _cases.npz and figures/")
    return 0


def cmd_report_seg(args: argparse.Namespace, say: Callable[..., None]) -> int:
    import numpy as np

    from gnsm.evaluation.seg_report import write_report

    path = Path(args.cases)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (write one with gnsm evaluate-seg)")
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    missing = [k for k in ("gt", "pred", "anomaly_map", "score", "dice") if k not in arrays]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}")
    paths = write_report(arrays, args.out, top=args.top)
    say(f"gnsm report-seg: wrote {len(paths)} pictures to {args.out}")
    return 0


def _add_training_args(p: argparse.ArgumentParser, steps: int | None) -> None:
    """The network / training options fit-seg and evaluate-seg share (read back by ``_training_params``)."""
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--patch-size", type=int, nargs="+", default=None)
    p.add_argument("--channels", type=int, nargs="+", default=None, help="UNet widths per level")
    p.add_argument("--flip-axes", type=int, nargs="+", default=None, help="axes of random mirroring")
    p.add_argument("--coord-channels", action="store_true", help="feed normalized coordinates to the UNet")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 2e-3)")
    p.add_argument("--device", default="auto")


def _training_params(args: argparse.Namespace) -> dict[str, Any]:
    """SegmentationQC arguments from the options of ``_add_training_args`` (unset ones keep the defaults)."""
    params: dict[str, Any] = {"device": args.device}
    if args.steps:
        params["n_steps"] = args.steps
    for name in ("patch_size", "channels", "flip_axes"):
        if getattr(args, name):
            params[name] = tuple(getattr(args, name))
    if args.coord_channels:
        params["coord_channels"] = True
    if args.lr:
        params["lr"] = args.lr
    return params


def add_seg_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None],
                     wrap: Callable[[Callable], Callable]) -> None:
    """Register the segmentation subcommands on the ``gnsm`` subparsers."""
    p = sub.add_parser("fit-seg", help="train SegmentationQC on good masks / label volumes")
    p.add_argument("masks", nargs="+", help="mask files or folders (.png, .npy, .nii, .nii.gz)")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--num-classes", type=int, default=None, help="K (default: max label + 1)")
    p.add_argument("--scoring", choices=["denoise", "paper"], default="denoise")
    p.add_argument("--positional-prior", action="store_true",
                   help="add the per-position label-frequency channel (aligned data)")
    _add_training_args(p, steps=2000)
    p.add_argument("--contamination", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    common(p)
    p.set_defaults(func=wrap(cmd_fit_seg))

    p = sub.add_parser("score-seg", help="score predicted masks with a saved SegmentationQC")
    p.add_argument("masks", nargs="+", help="mask files or folders")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--output", "-o", required=True, help="CSV: file, score, is_poor, flagged_voxels")
    p.add_argument("--maps-dir", default=None, help="also save each anomaly map as <name>_anomaly.npy")
    common(p)
    p.set_defaults(func=wrap(cmd_score_seg))

    p = sub.add_parser("evaluate-seg", help="segmentation QC evaluation on CamVid or the spine volume")
    p.add_argument("dataset", choices=["camvid", "spine"])
    p.add_argument("--out", default="gnsm-eval-seg")
    p.add_argument("--downsample", type=int, default=None, help="factor (default: 6 camvid, 4 spine in-plane)")
    _add_training_args(p, steps=None)
    p.add_argument("--scoring", choices=["denoise", "paper"], nargs="+", default=["denoise"],
                   help="scoring modes to compare with one trained network (camvid)")
    p.add_argument("--positional-prior", choices=["off", "on", "both"], default="off",
                   help="score without / with the per-position label-frequency channel; both: side by side "
                        "(camvid)")
    p.add_argument("--model-dir", default=None, help="reuse the detector saved here, or save it here")
    p.add_argument("--severities", type=float, nargs="+", default=None, help="corruption severities (camvid)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top", type=int, default=3, help="most / least anomalous cases to draw")
    common(p)
    p.set_defaults(func=wrap(cmd_evaluate_seg))

    p = sub.add_parser("report-seg", help="pictures of mask, prediction, error and anomaly map")
    p.add_argument("cases", help="<dataset>_cases.npz written by evaluate-seg")
    p.add_argument("--out", required=True)
    p.add_argument("--top", type=int, default=3)
    common(p)
    p.set_defaults(func=wrap(cmd_report_seg))
