"""Out-of-fold segmenter predictions for the real-prediction CamVid evaluation.

Frames are split by video sequence (the file-name prefix), so a segmenter never sees a frame of
the sequence it predicts: for each fold the segmenter trains on the other sequences' frames and
ground truth and predicts the held-out sequence. Every frame then has an out-of-fold prediction.
Segmenters are cached as ``segmenter_<fold>.pt`` in a folder, so a rerun reuses them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .segmenter import load_segmenter, predict_probs, save_segmenter, train_segmenter

__all__ = ["FoldPrediction", "fill_void", "fold_masks", "predict_out_of_fold"]


@dataclass
class FoldPrediction:
    """One fold: which frames it holds out, the segmenter's probabilities for them, its training info."""

    name: str
    test: np.ndarray            # indices of the held-out frames (in frame order)
    train: np.ndarray           # indices of the training frames
    probs: np.ndarray           # (n_test, K, H, W) float32
    info: dict[str, Any]


def fold_masks(sequences: Sequence[str], folds: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """``{sequence: bool mask of its frames}`` for the held-out sequences (default: every sequence)."""
    seqs = np.asarray(sequences)
    names = sorted(set(seqs.tolist())) if folds is None else list(folds)
    unknown = [f for f in names if f not in set(seqs.tolist())]
    if unknown:
        raise ValueError(f"folds: no frames of sequence(s) {unknown}; the data holds {sorted(set(seqs.tolist()))}")
    if len(names) < 2 and folds is None:
        raise ValueError("out-of-fold evaluation needs frames of at least two sequences")
    return {f: seqs == f for f in names}


def fill_void(labels: np.ndarray, void: int) -> np.ndarray:
    """Each ``void`` pixel takes the label of the nearest non-void pixel of its map (per map): the QC
    model learns the segmenter's label space, which has no void class."""
    from scipy.ndimage import distance_transform_edt
    out = np.array(labels, copy=True)
    for m in out.reshape(-1, *labels.shape[-2:]):
        hole = m == void
        if hole.any() and not hole.all():
            _, (ii, jj) = distance_transform_edt(hole, return_indices=True)
            m[hole] = m[ii[hole], jj[hole]]
    return out


def predict_out_of_fold(images: np.ndarray, labels: np.ndarray, sequences: Sequence[str], num_classes: int,
                        void: int | None, cache_dir: str | Path | None = None, epochs: int = 40,
                        batch_size: int = 8, channels: Sequence[int] = (16, 32, 64, 128), seed: int = 0,
                        verbose: bool = False) -> list[FoldPrediction]:
    """Train (or load from ``cache_dir``) one segmenter per held-out sequence; predict its frames."""
    out = []
    for name, held in fold_masks(sequences).items():
        test, train = np.flatnonzero(held), np.flatnonzero(~held)
        path = None if cache_dir is None else Path(cache_dir) / f"segmenter_{name}.pt"
        if path is not None and path.is_file():
            model, info = load_segmenter(path)
            if info.get("train_frames") != int(train.size) or info.get("epochs") != int(epochs):
                raise ValueError(f"{path}: trained on {info.get('train_frames')} frames for {info.get('epochs')} "
                                 f"epochs, this run asks for {train.size} / {epochs}; use another --cache-dir")
            info = {**info, "loaded": True}
        else:
            if verbose:
                print(f"segmenter for fold {name}: {train.size} training frames", flush=True)
            model, info = train_segmenter(images[train], labels[train], num_classes, ignore_index=void,
                                          epochs=epochs, batch_size=batch_size, channels=channels,
                                          seed=seed, verbose=verbose)
            info = {**info, "train_frames": int(train.size), "channels": list(channels)}
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                save_segmenter(model, path, info)
        out.append(FoldPrediction(name=name, test=test, train=train, probs=predict_probs(model, images[test]),
                                  info=info))
    return out
