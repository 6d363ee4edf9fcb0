"""Shared benchmark helpers: timing with warm-up and device sync, peak memory, a label per run and
JSON output that records the device and versions so runs on different machines can be compared."""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], device: torch.device, warmup: int = 2, repeats: int = 5,
            min_time: float = 0.0) -> dict:
    """Median and min wall time (ms) of fn over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    start_all = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start_all) < min_time:
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "runs": len(times)}


def peak_memory(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes allocated on a CUDA device during fn, above what was allocated before (None on CPU)."""
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    sync(device)
    return torch.cuda.max_memory_allocated(device) - base


def environment(device: torch.device) -> dict:
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["device_name"] = platform.processor() or platform.machine()
        info["cpu_count"] = os.cpu_count()
    return info


def write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return "-" if v is None else str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def camvid_real_parser(description: str, out: str) -> argparse.ArgumentParser:
    """The options of the scripts that reuse the models of a ``gnsm evaluate-seg camvid-real --cache-dir`` run."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--cache-dir", required=True, help="the --cache-dir of a gnsm evaluate-seg camvid-real run")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--downsample", type=int, default=4)
    p.add_argument("--seg-epochs", type=int, default=40)
    p.add_argument("--out", default=out)
    return p


def camvid_real_folds(args: argparse.Namespace):
    """The CamVid frames and the out-of-fold segmenters' predictions (from the cache, else trained into it)."""
    from gnsm.datasets import CAMVID_VOID, load_camvid_frames
    from gnsm.evaluation.segmentation.folds import predict_out_of_fold
    from gnsm.evaluation.segmentation.real import NUM_CLASSES
    frames = load_camvid_frames(downsample=args.downsample, data_dir=args.data_dir)
    folds = predict_out_of_fold(frames.images, frames.labels, frames.sequences, NUM_CLASSES, CAMVID_VOID,
                                cache_dir=args.cache_dir, epochs=args.seg_epochs)
    return frames, folds
