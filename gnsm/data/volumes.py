"""Label maps and volumes for training segmentation-mask score models, sampled as random patches.

Sources: numpy arrays, ``.npy`` files (opened as memory maps), NIfTI files (``.nii``/``.nii.gz``,
read lazily through nibabel's array proxy) and PNG/other image label maps (PIL). Only the patch
being sampled is read, so volumes larger than memory train. :class:`PatchDataset` is a map-style
``Dataset``: item ``i`` of epoch ``e`` is a patch at a location drawn from a generator seeded by
``(seed, e, i)``, so the samples do not depend on the number of DataLoader workers or processes,
and a resumed run sees the same patches.

Labels must lie in ``[0, num_classes)``; a patch holding a larger or negative label raises a
``ValueError`` naming the volume and the position.
"""
from __future__ import annotations

import os
import zlib
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core import as_field_sizes


# What a damaged file raises while it is decoded: PIL's UnidentifiedImageError is an OSError,
# truncated image data raises OSError or SyntaxError, a cut gzip stream EOFError or zlib.error,
# a bad .npy header ValueError; nibabel has its own exception classes (:func:`_nibabel_errors`).
_READ_ERRORS = (OSError, EOFError, SyntaxError, ValueError, zlib.error)


def _nibabel_errors() -> tuple[type[BaseException], ...]:
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError, ImageDataError
    from nibabel.wrapstruct import WrapStructError

    return ImageFileError, HeaderDataError, ImageDataError, WrapStructError


def _unreadable(path: str, exc: BaseException) -> ValueError:
    return ValueError(f"{path}: cannot read the label file, it is damaged or not what its name says "
                      f"({type(exc).__name__}: {exc})")


def open_label_volume(source) -> np.ndarray:
    """A lazily readable array for a label map: a numpy array, ``.npy`` (memory map), NIfTI or image file.

    A missing file raises ``FileNotFoundError``; a damaged or truncated one a ``ValueError`` naming it
    (for NIfTI, whose data is read lazily, possibly only when a slice is read).
    """
    if isinstance(source, torch.Tensor):
        return source.cpu().numpy()
    if isinstance(source, np.ndarray):
        return source
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such label file")
    lower = path.lower()
    try:
        if lower.endswith(".npy"):
            return np.load(path, mmap_mode="r", allow_pickle=False)
        if lower.endswith(".nii") or lower.endswith(".nii.gz"):
            import nibabel

            try:
                return _NiftiArray(nibabel.load(path), path)
            except _nibabel_errors() as exc:
                raise _unreadable(path, exc) from exc
        if lower.endswith((".png", ".tif", ".tiff", ".bmp")):
            from PIL import Image

            with Image.open(path) as img:
                if img.mode not in ("L", "I", "I;16", "P", "1"):
                    raise ValueError(f"{path}: expected a single-channel label image, got mode {img.mode!r}")
                img.load()  # decode now: a truncated file fails here, not later
                return np.asarray(img)
    except _READ_ERRORS as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(f"{path}:"):
            raise
        raise _unreadable(path, exc) from exc
    raise ValueError(f"source: unsupported label file {path!r} (expected .npy, .nii, .nii.gz or .png)")


class _NiftiArray:
    """Array-like view of a NIfTI image that reads only the requested slice (nibabel array proxy)."""

    def __init__(self, img, path: str):
        self._proxy = img.dataobj
        self._path = path
        self.shape = tuple(int(s) for s in img.shape)
        self.ndim = len(self.shape)

    def __getitem__(self, index):
        try:
            return np.asarray(self._proxy[index])
        except _READ_ERRORS as exc:
            raise _unreadable(self._path, exc) from exc


def _patch_size(patch_size) -> tuple[int, ...]:
    if isinstance(patch_size, (str, bytes)) or not hasattr(patch_size, "__len__") or len(patch_size) == 0:
        raise TypeError(f"patch_size: expected a sequence of spatial sizes, got {patch_size!r}")
    out = []
    for p in patch_size:
        if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, np.integer)):
            raise TypeError(f"patch_size: expected integer sizes, got {patch_size!r}")
        if p < 1:
            raise ValueError(f"patch_size: every size must be >= 1, got {tuple(int(q) for q in patch_size)}")
        out.append(int(p))
    return tuple(out)


class PatchDataset(Dataset):
    """Random label patches ``(*patch_size)`` int64 (or ``(labels, cond)`` with conditioning volumes).

    Args:
        volumes: sources for :func:`open_label_volume` (each ``(*spatial)`` with 2 or 3 dims).
        patch_size: patch shape; volumes smaller than it are padded with ``pad_label`` (and cond with 0).
        num_classes: K; labels outside ``[0, K)`` raise ``ValueError``.
        samples_per_epoch: dataset length (default: one patch per volume).
        cond: optional conditioning sources, one per volume, ``(channels, *spatial)`` or ``(*spatial)``.
        seed: base seed of the patch locations.
        pad_label: label of the padding of volumes smaller than the patch.
        flip_axes: spatial axes along which each patch is mirrored with probability 1/2 (augmentation
            for data whose labels are mirror-symmetric in that axis, e.g. left-right in street scenes).
    """

    def __init__(self, volumes: Sequence, patch_size: Sequence[int], num_classes: int,
                 samples_per_epoch: int | None = None, cond: Sequence | None = None, seed: int = 0,
                 pad_label: int = 0, flip_axes: Sequence[int] = ()):
        if len(volumes) == 0:
            raise ValueError("volumes: expected at least one label volume")
        self.patch_size = _patch_size(patch_size)
        sizes, single = as_field_sizes(num_classes, "num_classes")
        if not single:
            raise TypeError(f"num_classes: expected one int K, got {num_classes!r}")
        self.num_classes = sizes[0]
        self.volumes = [open_label_volume(v) for v in volumes]
        for i, v in enumerate(self.volumes):
            if v.ndim != len(self.patch_size):
                raise ValueError(f"volumes[{i}]: expected {len(self.patch_size)} spatial dims (patch_size "
                                 f"{self.patch_size}), got shape {tuple(v.shape)}")
            if min(v.shape) == 0:
                raise ValueError(f"volumes[{i}]: empty volume of shape {tuple(v.shape)}")
        self.cond = None
        if cond is not None:
            if len(cond) != len(self.volumes):
                raise ValueError(f"cond: expected {len(self.volumes)} conditioning volumes, got {len(cond)}")
            self.cond = []
            for i, c in enumerate(cond):
                arr = open_label_volume(c)
                if arr.ndim == len(self.patch_size):
                    arr = arr[None] if isinstance(arr, np.ndarray) else np.asarray(arr[...])[None]
                if tuple(arr.shape[1:]) != tuple(self.volumes[i].shape):
                    raise ValueError(f"cond[{i}]: spatial shape {tuple(arr.shape[1:])} differs from the "
                                     f"volume's {tuple(self.volumes[i].shape)}")
                self.cond.append(arr)
        self.samples_per_epoch = int(samples_per_epoch) if samples_per_epoch is not None else len(self.volumes)
        if self.samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch: expected >= 1, got {self.samples_per_epoch}")
        self.seed = int(seed)
        self.pad_label = int(pad_label)
        self.flip_axes = tuple(int(a) for a in flip_axes)
        bad_axes = [a for a in self.flip_axes if not 0 <= a < len(self.patch_size)]
        if bad_axes:
            raise ValueError(f"flip_axes: expected spatial axes in [0, {len(self.patch_size)}), got {bad_axes}")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def _crop(self, arr, starts, shape, fill, lead=()):
        sl = tuple(slice(s, min(s + p, n)) for s, p, n in zip(starts, self.patch_size, shape))
        block = np.asarray(arr[tuple(slice(None) for _ in lead) + sl])
        if block.shape[len(lead):] != self.patch_size:
            pad = [(0, 0)] * len(lead) + [(0, p - b) for p, b in zip(self.patch_size, block.shape[len(lead):])]
            block = np.pad(block, pad, constant_values=fill)
        return block

    def __getitem__(self, index: int):
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        v = int(rng.integers(len(self.volumes)))
        vol = self.volumes[v]
        shape = tuple(vol.shape)
        starts = [int(rng.integers(0, max(n - p, 0) + 1)) for n, p in zip(shape, self.patch_size)]
        labels = self._crop(vol, starts, shape, self.pad_label)
        if labels.dtype.kind not in "iub":
            if not np.all(np.mod(labels, 1) == 0):
                raise ValueError(f"volumes[{v}]: expected integer labels, got non-integer values of dtype {labels.dtype}")
        bad = (labels < 0) | (labels >= self.num_classes)  # in the stored dtype: no wrap-around of huge values
        if bad.any():
            pos = tuple(int(s + i) for s, i in zip(starts, np.argwhere(bad)[0]))
            raise ValueError(f"volumes[{v}]: expected labels in [0, {self.num_classes}), found "
                             f"{labels[bad][0].item()!r} at index {pos}")
        labels = labels.astype(np.int64)
        flips = [a for a in self.flip_axes if rng.random() < 0.5]
        if flips:
            labels = np.ascontiguousarray(np.flip(labels, axis=flips))
        out = torch.from_numpy(labels)
        if self.cond is None:
            return out
        c = self._crop(self.cond[v], starts, shape, 0.0, lead=(0,))
        if flips:
            c = np.flip(c, axis=[a + 1 for a in flips])
        return out, torch.from_numpy(np.ascontiguousarray(c, dtype=np.float32))
