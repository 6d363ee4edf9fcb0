"""The segmentation data of the data directory (:func:`find_data_dir`) for segmentation QC evaluations.

- CamVid label maps (``camvid_labels``): 367 train / 101 val maps, 360x480, classes 0..10 plus
  11 = unlabelled (void). :func:`load_camvid` reads them and optionally downsamples by an integer
  factor (nearest: the centre pixel of each ``factor x factor`` block) so a CPU can train on them.
- CamVid RGB frames (``camvid_images``): paired with the label maps by file name; :func:`load_camvid_frames`
  reads both (frames block-averaged by the same factor) and names the sequence of each frame (the
  file-name prefix: 0001TP, 0006R0, 0016E5).
- Spine CT label volumes (``spine_panoptica``): one reference and one real model prediction,
  512x512x17, labels {0, 26, 41-49, 60-62, 100}. :func:`load_spine` maps the labels to 0..K-1 and
  downsamples in-plane; :func:`augment_volume` makes reference-like training volumes from the single
  reference (documented there), since one volume is far too little to train on.
"""
from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from .registry import find_data_dir

__all__ = ["CAMVID_CLASSES", "CAMVID_VOID", "CamVidFrames", "load_camvid", "load_camvid_frames", "load_spine",
           "augment_volume", "read_rgb"]

CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car", "pedestrian",
                  "bicyclist", "unlabelled")
CAMVID_VOID = 11


def _data_dir(data_dir: str | PathLike | None) -> Path:
    return Path(data_dir) if data_dir is not None else find_data_dir()


def _downsample(arr: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    index = tuple(slice(f // 2, None, f) for f in factors)
    return np.ascontiguousarray(arr[index])


def load_camvid(split: str = "train", downsample: int = 1, data_dir: str | Path | None = None) -> tuple[np.ndarray, list[str]]:
    """CamVid label maps of ``split`` ("train" or "val") as uint8 ``(n, H, W)`` and their file names."""
    if split not in ("train", "val"):
        raise ValueError(f"split: expected 'train' or 'val' (the test maps are held out), got {split!r}")
    if int(downsample) < 1:
        raise ValueError(f"downsample: expected a positive integer, got {downsample}")
    from PIL import Image
    folder = _data_dir(data_dir) / "camvid_labels" / f"{split}annot"
    files = sorted(folder.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no CamVid label maps in {folder}")
    maps = []
    for f in files:
        with Image.open(f) as img:
            maps.append(_downsample(np.asarray(img), (int(downsample),) * 2))
    return np.stack(maps), [f.name for f in files]


@dataclass
class CamVidFrames:
    """Paired CamVid frames and label maps (see :func:`load_camvid_frames`)."""

    images: np.ndarray          # (n, 3, H, W) float32 in [0, 1]
    labels: np.ndarray          # (n, H, W) uint8, 11 = void
    names: list[str]            # file names, sorted (consecutive frames of a sequence are adjacent)
    splits: list[str]           # "train" / "val" per frame
    sequences: list[str]        # video sequence per frame (the file-name prefix before "_")


def read_rgb(path: str | PathLike, downsample: int = 1) -> np.ndarray:
    """An image file as ``(3, H, W)`` float32 in [0, 1] (grey and RGBA converted to RGB), averaged over
    ``downsample x downsample`` blocks (a trailing partial block is dropped)."""
    from PIL import Image
    f = int(downsample)
    if f < 1:
        raise ValueError(f"downsample: expected a positive integer, got {downsample}")
    with Image.open(path) as img:
        arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    H, W = arr.shape[0] // f, arr.shape[1] // f
    if H == 0 or W == 0:
        raise ValueError(f"{path}: image {arr.shape[:2]} is smaller than one {f} x {f} block")
    arr = arr[:H * f, :W * f].reshape(H, f, W, f, 3).mean(axis=(1, 3))
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_camvid_frames(splits: tuple[str, ...] = ("train", "val"), downsample: int = 4,
                       data_dir: str | Path | None = None) -> CamVidFrames:
    """CamVid frames with their label maps, paired by file name, for ``splits``.

    Layout of ``data_dir`` (default: :func:`find_data_dir`): ``camvid_images/<split>/*.png`` and
    ``camvid_labels/<split>annot/*.png``. A label map without its frame (or the reverse) is an error that
    names the file. Frames are block-averaged, label maps subsampled (centre pixel), by ``downsample``.
    """
    root = _data_dir(data_dir)
    images, labels, names, split_of = [], [], [], []
    for split in splits:
        maps, map_names = load_camvid(split, downsample, root)
        folder = root / "camvid_images" / split
        if not folder.is_dir():
            raise FileNotFoundError(f"no CamVid frames folder {folder} (expected camvid_images/<split>/)")
        have = {f.name for f in folder.glob("*.png")}
        missing = [n for n in map_names if n not in have]
        if missing:
            raise FileNotFoundError(f"{folder}: no frame for {len(missing)} label map(s), first {missing[0]!r}")
        extra = sorted(have - set(map_names))
        if extra:
            raise FileNotFoundError(f"{folder}: {len(extra)} frame(s) without a label map, first {extra[0]!r}")
        for m, name in zip(maps, map_names):
            img = read_rgb(folder / name, downsample)
            if img.shape[1:] != m.shape:
                raise ValueError(f"{folder / name}: frame {img.shape[1:]} and label map {m.shape} differ in size "
                                 f"after downsampling by {downsample}")
            images.append(img)
            labels.append(m)
        names += map_names
        split_of += [split] * len(map_names)
    order = sorted(range(len(names)), key=lambda i: names[i])
    return CamVidFrames(images=np.stack([images[i] for i in order]), labels=np.stack([labels[i] for i in order]),
                        names=[names[i] for i in order], splits=[split_of[i] for i in order],
                        sequences=[names[i].split("_")[0] for i in order])


def load_spine(downsample: int = 1, data_dir: str | Path | None = None) -> dict:
    """Reference and prediction label volumes, labels mapped to 0..K-1, in-plane downsampled.

    Returns a dict with ``ref``, ``pred`` (uint8 ``(X, Y, Z)``), ``labels`` (the original label value
    of each index) and ``spacing`` (mm, after downsampling).
    """
    import nibabel
    folder = _data_dir(data_dir) / "spine_panoptica"
    ref_img = nibabel.load(str(folder / "semantic_ref.nii.gz"))
    ref = np.asarray(ref_img.dataobj)
    pred = np.asarray(nibabel.load(str(folder / "semantic_pred.nii.gz")).dataobj)
    values = np.union1d(np.unique(ref), np.unique(pred))
    lut = np.zeros(int(values.max()) + 1, dtype=np.uint8)
    lut[values] = np.arange(len(values), dtype=np.uint8)
    f = (int(downsample), int(downsample), 1)
    spacing = tuple(float(s) * k for s, k in zip(ref_img.header.get_zooms(), f))
    return {"ref": _downsample(lut[ref], f), "pred": _downsample(lut[pred], f),
            "labels": [int(v) for v in values], "spacing": spacing}


def augment_volume(volume: np.ndarray, rng: np.random.Generator, max_shift: int = 6, max_rotation: float = 8.0,
                   flip_axis: int | None = None, jitter_fraction: float = 0.3) -> np.ndarray:
    """A reference-like copy of a label volume (for training on one reference).

    The augmentation (nearest-neighbour throughout, so labels stay labels):
    in-plane rotation by U(-max_rotation, max_rotation) degrees, in-plane shift by up to
    ``max_shift`` voxels (edges padded with background 0), optionally a mirror along ``flip_axis``
    with probability 1/2 (off by default: spine labels come in left / right pairs, and a mirror
    would teach the model exactly the left-right swap a prediction may make), and boundary jitter: each of a random
    ``jitter_fraction`` of the foreground labels grows by one voxel into the background, or shrinks by
    one voxel (its boundary becomes background). These are the variations between raters and
    scans; they never turn one structure into another, so a swapped or missing label stays unseen.
    """
    from scipy import ndimage

    vol = np.asarray(volume)
    angle = float(rng.uniform(-max_rotation, max_rotation))
    out = ndimage.rotate(vol, angle, axes=(0, 1), reshape=False, order=0, mode="constant", cval=0)
    shift = [int(rng.integers(-max_shift, max_shift + 1)) for _ in range(2)] + [0] * (vol.ndim - 2)
    out = ndimage.shift(out, shift, order=0, mode="constant", cval=0)
    if flip_axis is not None and rng.random() < 0.5:
        out = np.flip(out, axis=flip_axis)
    out = np.ascontiguousarray(out)
    labels = [int(v) for v in np.unique(out) if v != 0]
    structure = ndimage.generate_binary_structure(vol.ndim, 1)
    for lab in labels:
        if rng.random() >= jitter_fraction:
            continue
        region = out == lab
        if rng.random() < 0.5:
            grown = ndimage.binary_dilation(region, structure) & (out == 0)
            out[grown] = lab
        else:
            border = region & ~ndimage.binary_erosion(region, structure)
            out[border] = 0
    return out
