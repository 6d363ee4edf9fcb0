"""Segmentation commands of ``gnsm``: ``fit-seg``, ``score-seg``, ``evaluate-seg``, ``report-seg``.

Masks are given as files (``.png`` label images, ``.npy``, ``.nii``/``.nii.gz``) or folders of such
files (sorted by name). ``evaluate-seg`` runs the CamVid / spine evaluation of
:mod:`gnsm.evaluation.segmentation` and writes ``<dataset>.json``, ``<dataset>.md``, the arrays of the
scored cases (``<dataset>_cases.npz``) and the pictures of ``figures/``; ``report-seg`` redraws the
pictures from such an ``.npz``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .common import (CLIError, LazyChoices, add_quiet, check_device, check_model_dir, check_out_dir,
                     check_output_file, is_main_process, positive_int, save_table, say)

__all__ = ["add_seg_commands", "cmd_evaluate_seg", "cmd_fit_seg", "cmd_report_seg", "cmd_score_seg"]

_MASK_SUFFIXES = (".png", ".npy", ".nii", ".nii.gz", ".tif", ".tiff", ".bmp")
_SCORINGS = LazyChoices("gnsm.detectors", "SCORINGS")


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


def cmd_fit_seg(args: argparse.Namespace) -> int:
    from ..detectors import SegmentationQC

    files = _mask_files(args.masks)
    check_device(args.device)
    check_model_dir(args.model_dir)
    params: dict[str, Any] = dict(num_classes=args.num_classes, scoring=args.scoring,
                                  positional_prior=args.positional_prior, contamination=args.contamination,
                                  random_state=args.seed, verbose=not args.quiet, **_training_params(args))
    det = SegmentationQC(**params)
    say(args, f"gnsm fit-seg: {len(files)} masks")
    det.fit([str(f) for f in files])
    if is_main_process():  # under torchrun every rank trains (DDP); rank 0 writes
        det.save(args.model_dir)
    say(args, f"gnsm fit-seg: saved to {args.model_dir} (K={det.num_classes_}, {det.spatial_dims_}-D, "
              f"threshold {det.threshold_:.4g}, {det.fit_time_:.1f}s)")
    return 0


def cmd_score_seg(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from ..detectors import SegmentationQC

    check_output_file(args.output)
    if args.maps_dir:
        check_out_dir(args.maps_dir, "--maps-dir")
    files = _mask_files(args.masks)
    det = SegmentationQC.load(args.model_dir)
    res = det.predict_maps([str(f) for f in files])
    table = pd.DataFrame({"file": [str(f) for f in files], "score": res.pred_score, "is_poor": res.pred_label,
                          "flagged_voxels": [int(m.sum()) for m in res.pred_mask]})
    save_table(table, args.output)
    if args.maps_dir:
        maps = Path(args.maps_dir)
        maps.mkdir(parents=True, exist_ok=True)
        for f, m in zip(files, res.anomaly_map):
            stem = f.name[:-7] if f.name.lower().endswith(".nii.gz") else f.stem
            np.save(maps / f"{stem}_anomaly.npy", m)
    say(args, f"gnsm score-seg: {len(files)} cases, {int(res.pred_label.sum())} flagged; wrote {args.output}")
    return 0


def cmd_evaluate_seg(args: argparse.Namespace) -> int:
    import numpy as np

    from ..evaluation.segmentation import evaluate_camvid, evaluate_spine, markdown_summary, write_report

    params = _training_params(args)
    check_device(args.device)
    check_out_dir(args.out)
    if args.model_dir is not None:
        check_model_dir(args.model_dir)
    priors = {"off": (False,), "on": (True,), "both": (False, True)}[args.positional_prior]
    if args.dataset == "camvid":
        extra = {"severities": tuple(args.severities)} if args.severities else {}
        result = evaluate_camvid(downsample=args.downsample or 6, seed=args.seed, detector_params=params,
                                 scorings=args.scoring, positional_priors=priors,
                                 model_dir=args.model_dir, verbose=not args.quiet, **extra)
    else:
        if len(priors) > 1 or len(args.scoring) > 1:
            raise CLIError("evaluate-seg spine: one --scoring and --positional-prior off or on at a time")
        params["scoring"] = args.scoring[0]
        params["positional_prior"] = priors[0]
        result = evaluate_spine(downsample=args.downsample or 4, seed=args.seed, detector_params=params,
                                model_dir=args.model_dir, verbose=not args.quiet)
    arrays = result.pop("_arrays")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.dataset}.json").write_text(json.dumps(result, indent=1))
    text = markdown_summary(result)
    (out / f"{args.dataset}.md").write_text(text)
    np.savez_compressed(out / f"{args.dataset}_cases.npz", **arrays)
    write_report(arrays, out / "figures", top=args.top, prefix=f"{args.dataset}_")
    print(text)
    say(args, f"gnsm evaluate-seg: wrote {out / (args.dataset + '.json')}, .md, _cases.npz and figures/")
    return 0


def cmd_report_seg(args: argparse.Namespace) -> int:
    import numpy as np

    from ..evaluation.segmentation import write_report

    path = Path(args.cases)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (write one with gnsm evaluate-seg)")
    check_out_dir(args.out)
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    missing = [k for k in ("gt", "pred", "anomaly_map", "score", "dice") if k not in arrays]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}")
    paths = write_report(arrays, args.out, top=args.top)
    say(args, f"gnsm report-seg: wrote {len(paths)} pictures to {args.out}")
    return 0


# ---------------------------------------------------------------------------- parsers
def _add_training_args(p: argparse.ArgumentParser, steps: int | None) -> None:
    """The network / training options fit-seg and evaluate-seg share (read back by ``_training_params``)."""
    p.add_argument("--steps", type=positive_int, default=steps)
    p.add_argument("--patch-size", type=positive_int, nargs="+", default=None)
    p.add_argument("--channels", type=positive_int, nargs="+", default=None, help="UNet widths per level")
    p.add_argument("--flip-axes", type=int, nargs="+", default=None, help="axes of random mirroring")
    p.add_argument("--coord-channels", action="store_true", help="feed normalized coordinates to the UNet")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 2e-3)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")


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


def add_seg_commands(sub: Any) -> None:
    """Register the segmentation commands on the ``gnsm`` subparsers."""
    p = sub.add_parser("fit-seg", help="train SegmentationQC on good masks / label volumes")
    p.add_argument("masks", nargs="+", help="mask files or folders (.png, .npy, .nii, .nii.gz)")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--num-classes", type=positive_int, default=None, help="K (default: max label + 1)")
    p.add_argument("--scoring", choices=_SCORINGS, default="denoise", metavar="MODE",
                   help="%(choices)s (default: %(default)s)")
    p.add_argument("--positional-prior", action="store_true",
                   help="add the per-position label-frequency channel (aligned data)")
    _add_training_args(p, steps=2000)
    p.add_argument("--contamination", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    add_quiet(p)
    p.set_defaults(func=cmd_fit_seg)

    p = sub.add_parser("score-seg", help="score predicted masks with a saved SegmentationQC")
    p.add_argument("masks", nargs="+", help="mask files or folders")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--output", "-o", required=True,
                   help="CSV, TSV or Parquet file: file, score, is_poor, flagged_voxels")
    p.add_argument("--maps-dir", default=None, help="also save each anomaly map as <name>_anomaly.npy")
    add_quiet(p)
    p.set_defaults(func=cmd_score_seg)

    p = sub.add_parser("evaluate-seg", help="segmentation QC evaluation on CamVid or the spine volume")
    p.add_argument("dataset", choices=["camvid", "spine"])
    p.add_argument("--out", default="gnsm-eval-seg")
    p.add_argument("--downsample", type=positive_int, default=None,
                   help="factor (default: 6 camvid, 4 spine in-plane)")
    _add_training_args(p, steps=None)
    p.add_argument("--scoring", choices=_SCORINGS, nargs="+", default=["denoise"], metavar="MODE",
                   help="scoring modes (%(choices)s) to compare with one trained network (camvid)")
    p.add_argument("--positional-prior", choices=["off", "on", "both"], default="off",
                   help="score without / with the per-position label-frequency channel; both: side by side "
                        "(camvid)")
    p.add_argument("--model-dir", default=None, help="reuse the detector saved here, or save it here")
    p.add_argument("--severities", type=float, nargs="+", default=None, help="corruption severities (camvid)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top", type=positive_int, default=3, help="most / least anomalous cases to draw")
    add_quiet(p)
    p.set_defaults(func=cmd_evaluate_seg)

    p = sub.add_parser("report-seg", help="pictures of mask, prediction, error and anomaly map")
    p.add_argument("cases", help="<dataset>_cases.npz written by evaluate-seg")
    p.add_argument("--out", required=True)
    p.add_argument("--top", type=positive_int, default=3)
    add_quiet(p)
    p.set_defaults(func=cmd_report_seg)
