"""Sliding-window scoring of one large label volume: time and peak memory on this machine.

A SegmentationQC (default: the package's settings; for a volume ``scoring="auto"`` is the paper
scoring, the score norms at all 20 temperatures; UNet 32-64-128; patch and window 64^3, 50 % overlap,
triangular blending) is trained briefly on
smooth synthetic 64^3 label volumes (the network's quality does not change the cost), then scores one
``(1, S, S, S)`` volume (default S = 256, K = 8). Peak memory is the process's peak resident set size
(``ru_maxrss``) read before and after scoring, so the increase is what scoring the volume needed.

    python benchmarks/bench_seg_large_volume.py                      # S = 256
    python benchmarks/bench_seg_large_volume.py --size 128 --out results.json
    python benchmarks/bench_seg_large_volume.py --channels 8 16 32 --scoring denoise --n-score-temperatures 1 \
        --n-noise-copies 1
    python benchmarks/bench_seg_large_volume.py --channels 8 16 32 --n-temperatures 4 \
        --out benchmarks/results/seg_large_volume_paper_cpu.json

Prints a markdown table and writes JSON.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import environment, markdown_table, write_json  # noqa: E402

import torch  # noqa: E402

from gnsm.detectors import SegmentationQC  # noqa: E402


def smooth_labels(shape: tuple[int, ...], K: int, seed: int) -> np.ndarray:
    """Label volume of K smooth regions: argmax of K low-frequency random fields (upsampled noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn((1, K, *[max(n // 16, 2) for n in shape]), generator=g)
    fine = torch.nn.functional.interpolate(coarse, size=shape, mode="trilinear", align_corners=False)
    return fine.argmax(dim=1)[0].numpy().astype(np.uint8)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--scoring", choices=["auto", "denoise", "paper"], default="auto")
    p.add_argument("--n-temperatures", type=int, default=20, help="schedule length (paper scores every level)")
    p.add_argument("--n-score-temperatures", type=int, default=5)
    p.add_argument("--n-noise-copies", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/seg_large_volume_cpu.json")
    args = p.parse_args()
    K, S = args.classes, args.size
    train = [smooth_labels((64, 64, 64), K, seed=i) for i in range(4)]
    det = SegmentationQC(num_classes=K, n_steps=args.steps, batch_size=2, channels=tuple(args.channels),
                         scoring=args.scoring, n_temperatures=args.n_temperatures,
                         n_score_temperatures=args.n_score_temperatures, n_noise_copies=args.n_noise_copies,
                         device="cpu", random_state=0)
    t0 = time.perf_counter()
    det.fit(train)
    fit_s = time.perf_counter() - t0
    volume = smooth_labels((S, S, S), K, seed=100)
    before = rss_mib()
    t0 = time.perf_counter()
    res = det.predict_maps([volume])
    score_s = time.perf_counter() - t0
    after = rss_mib()
    voxels = S ** 3
    row = {"size": S, "classes": K, "voxels": voxels, "window": list(det._window(volume.shape)),
           "score_seconds": score_s, "voxels_per_s": voxels / score_s, "peak_rss_mib_before": before,
           "peak_rss_mib_after": after, "peak_rss_increase_mib": after - before,
           "volume_bytes_uint8": int(volume.nbytes), "anomaly_map_finite": bool(np.isfinite(res.anomaly_map[0]).all()),
           "fit_seconds": fit_s, "threads": torch.get_num_threads(), "scoring_used": det.scoring_,
           "feature_channels": len(det.score_temperatures_)}
    print(markdown_table(["volume", "window", "score s", "voxels/s", "peak RSS MiB (before -> after)"],
                         [[f"(1, {S}, {S}, {S}), K={K}", "x".join(map(str, row["window"])), f"{score_s:.1f}",
                           f"{row['voxels_per_s']:.3g}", f"{before:.0f} -> {after:.0f}"]]))
    write_json(args.out, {"environment": environment(torch.device("cpu")), "detector": det.get_params(),
                          "results": [row]})


if __name__ == "__main__":
    main()
