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

from .common import (CLIError, LazyChoices, add_quiet, check_creatable, check_device, check_model_dir,
                     check_out_dir, check_output_file, is_main_process, positive_int, save_table, say)

__all__ = ["add_seg_commands", "cmd_evaluate_seg", "cmd_fit_seg", "cmd_report_seg", "cmd_score_seg"]

_MASK_SUFFIXES = (".png", ".npy", ".nii", ".nii.gz", ".tif", ".tiff", ".bmp")
_SCORINGS = LazyChoices("gnsm.detectors", "SEG_SCORINGS")
_CASE_SCORES = LazyChoices("gnsm.detectors", "CASE_SCORES")


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


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy")


def _stem(path: Path) -> str:
    name = path.name
    return name[:-7] if name.lower().endswith(".nii.gz") else path.stem


def _image_files(paths: list[str], masks: list[Path]) -> list[Path]:
    """The image of each mask, paired by file name without its suffix (``--images`` folders or files)."""
    found: dict[str, Path] = {}
    for p in map(Path, paths):
        if p.is_dir():
            files = [f for f in sorted(p.iterdir()) if f.name.lower().endswith(_IMAGE_SUFFIXES)]
        elif p.is_file():
            files = [p]
        else:
            raise FileNotFoundError(f"image file or folder {str(p)!r} not found")
        for f in files:
            if _stem(f) in found:
                raise ValueError(f"--images: two images named {_stem(f)!r}: {found[_stem(f)]} and {f}")
            found[_stem(f)] = f
    missing = [m for m in masks if _stem(m) not in found]
    if missing:
        raise FileNotFoundError(f"--images: no image named {_stem(missing[0])!r} for mask {missing[0]} "
                                f"({len(missing)} of {len(masks)} masks have no image)")
    return [found[_stem(m)] for m in masks]


def _read_images(files: list[Path], masks: list[Path]) -> list:
    """Images as (C, H, W) float32: PNG / JPEG / TIFF / BMP as RGB in [0, 1], ``.npy`` as stored ((H, W) or
    (C, H, W)); an image whose size differs from its mask's is an error naming both files."""
    import numpy as np

    from ..data import open_label_volume
    from ..datasets import read_rgb
    out = []
    for f, m in zip(files, masks):
        arr = np.load(f, allow_pickle=False) if f.suffix.lower() == ".npy" else read_rgb(f)
        arr = arr[None] if arr.ndim == 2 else arr
        shape = tuple(open_label_volume(m).shape)
        if tuple(arr.shape[1:]) != shape[-(arr.ndim - 1):]:
            raise ValueError(f"--images: image {f} is {tuple(arr.shape[1:])}, its mask {m} is {shape}")
        out.append(arr.astype(np.float32, copy=False))
    return out


def cmd_fit_seg(args: argparse.Namespace) -> int:
    from ..detectors import SegmentationQC

    files = _mask_files(args.masks)
    check_device(args.device)
    check_model_dir(args.model_dir)
    params: dict[str, Any] = dict(num_classes=args.num_classes, scoring=args.scoring, case_score=args.case_score,
                                  positional_prior=args.positional_prior, contamination=args.contamination,
                                  random_state=args.seed, verbose=not args.quiet, **_training_params(args))
    cond = None
    if args.images:
        cond = _read_images(_image_files(args.images, files), files)
        params["cond_channels"] = int(cond[0].shape[0])
    det = SegmentationQC(**params)
    say(args, f"gnsm fit-seg: {len(files)} masks" + (f" with {len(cond)} images" if cond else ""))
    det.fit([str(f) for f in files], cond=cond)
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
    cond = None
    if int(det.cond_channels):
        if not args.images:
            raise CLIError(f"score-seg: the model in {args.model_dir} was trained with images "
                           f"({det.cond_channels} channels); pass --images")
        cond = _read_images(_image_files(args.images, files), files)
    elif args.images:
        raise CLIError(f"score-seg: the model in {args.model_dir} was trained without images; drop --images")
    res = det.predict_maps([str(f) for f in files], cond=cond)
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
    if args.dataset == "camvid-real":
        return _evaluate_camvid_real(args, params)
    params["case_score"] = args.case_score
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


def _evaluate_camvid_real(args: argparse.Namespace, params: dict[str, Any]) -> int:
    """``evaluate-seg camvid-real``: QC of a real segmenter's out-of-fold predictions (with the frames)."""
    import numpy as np

    from ..evaluation.segmentation.real import evaluate_camvid_real
    from ..evaluation.segmentation.real_report import markdown_real, write_real_figures

    if args.scoring != ["auto"] or args.positional_prior != "off" or args.severities or args.case_score != "head":
        raise CLIError("evaluate-seg camvid-real: --scoring, --positional-prior, --case-score and --severities do "
                       "not apply (it reports both case readouts)")
    cache = args.cache_dir if args.cache_dir is not None else args.model_dir
    if cache is not None:
        check_creatable(Path(cache), "--cache-dir", "cache folder")
    result = evaluate_camvid_real(data_dir=args.data_dir, downsample=args.downsample or 4,
                                  seg_epochs=args.seg_epochs, qc_params=params, cache_dir=cache, seed=args.seed,
                                  n_boot=args.n_boot, verbose=not args.quiet)
    arrays = result.pop("_arrays")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "camvid-real.json").write_text(json.dumps(result, indent=1))
    text = markdown_real(result)
    (out / "camvid-real.md").write_text(text)
    write_real_figures(arrays, out / "figures", top=args.top)
    arrays["image"] = np.round(arrays["image"] * 255).astype(np.uint8)
    np.savez_compressed(out / "camvid-real_cases.npz", **arrays)
    print(text)
    say(args, f"gnsm evaluate-seg: wrote {out / 'camvid-real.json'}, .md, _cases.npz and figures/")
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
    p.add_argument("--eps-max", type=float, default=None,
                   help="one-hot clip of the noisiest level (rising from 0.01; with images: 0.3 recommended)")
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
    if args.eps_max is not None:
        params["eps_max"] = args.eps_max
    if args.lr:
        params["lr"] = args.lr
    return params


def add_seg_commands(sub: Any) -> None:
    """Register the segmentation commands on the ``gnsm`` subparsers."""
    p = sub.add_parser("fit-seg", help="train SegmentationQC on good masks / label volumes")
    p.add_argument("masks", nargs="+", help="mask files or folders (.png, .npy, .nii, .nii.gz)")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--images", nargs="+", default=None,
                   help="image files or folders, paired with the masks by file name (the image conditions the "
                        "model: PNG / JPEG / TIFF read as RGB in [0, 1], .npy as (C, H, W))")
    p.add_argument("--num-classes", type=positive_int, default=None, help="K (default: max label + 1)")
    p.add_argument("--scoring", choices=_SCORINGS, default="auto", metavar="MODE",
                   help="%(choices)s (default: %(default)s: denoise for 2-D masks, paper for 3-D volumes)")
    p.add_argument("--case-score", choices=_CASE_SCORES, default="head", metavar="SCORE",
                   help="head: the density head's NLL of the case features (default); map_mean: the mean of the "
                        "anomaly map")
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
    p.add_argument("--images", nargs="+", default=None,
                   help="image files or folders paired with the masks by name (models trained with images)")
    add_quiet(p)
    p.set_defaults(func=cmd_score_seg)

    p = sub.add_parser("evaluate-seg", help="segmentation QC evaluation on CamVid or the spine volume")
    p.add_argument("dataset", choices=["camvid", "camvid-real", "spine"],
                   help="camvid: seeded corruptions of the val maps; camvid-real: a real segmenter's out-of-fold "
                        "predictions with the frames; spine: the 3-D volume")
    p.add_argument("--data-dir", default=None,
                   help="folder with camvid_images/<split>/ and camvid_labels/<split>annot/ (camvid-real; default: "
                        "GNSM_DATA_DIR or the nearest shared/data)")
    p.add_argument("--cache-dir", default=None,
                   help="camvid-real: keep / reuse the segmenters and QC models here (default: --model-dir)")
    p.add_argument("--seg-epochs", type=positive_int, default=40, help="camvid-real: segmenter training epochs")
    p.add_argument("--n-boot", type=positive_int, default=1000, help="camvid-real: bootstrap resamples")
    p.add_argument("--out", default="gnsm-eval-seg")
    p.add_argument("--downsample", type=positive_int, default=None,
                   help="factor (default: 6 camvid, 4 spine in-plane)")
    _add_training_args(p, steps=None)
    p.add_argument("--scoring", choices=_SCORINGS, nargs="+", default=["auto"], metavar="MODE",
                   help="scoring modes (%(choices)s; default auto: denoise in 2-D, paper in 3-D) to compare with "
                        "one trained network (camvid)")
    p.add_argument("--positional-prior", choices=["off", "on", "both"], default="off",
                   help="score without / with the per-position label-frequency channel; both: side by side "
                        "(camvid)")
    p.add_argument("--case-score", choices=_CASE_SCORES, default="head", metavar="SCORE",
                   help="the detector's case score (head or map_mean; camvid also reports map_mean beside head)")
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
