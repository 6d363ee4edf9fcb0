"""Throughput of scoring one label volume at 20 temperatures (SegmentationQC's ``paper`` scoring):
per temperature, the clean relaxed input log_softmax(a / tau), a tau-conditioned UNet, and the
per-voxel score norms, with gnsm's fused norm op vs the plain-PyTorch reference (eager and
torch.compile), side by side in one run. Also the norms alone (network output fixed), which is what
the op replaces.

    python benchmarks/bench_seg_scoring.py                      # (1, 8, 64^3) on CPU, (1, 8, 256^3) on a GPU
    python benchmarks/bench_seg_scoring.py --size 128 --channels 16 32 64 --out results.json

Prints a markdown table and writes JSON (ms, voxels/s, peak CUDA memory).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import environment, markdown_table, peak_memory, time_fn, write_json  # noqa: E402

import gnsm.ops as ops  # noqa: E402
from gnsm.ops import reference as ref  # noqa: E402
from gnsm.models import UNet  # noqa: E402
from gnsm.core.schedule import Schedule  # noqa: E402

EPS = 1e-5


def clean_input(labels: torch.Tensor, K: int, tau: torch.Tensor) -> torch.Tensor:
    a = ref.logits_from_labels(labels.unsqueeze(1), [K], EPS)
    return torch.log_softmax(a / tau.view(-1, *[1] * (a.dim() - 1)), dim=1)


def ref_norm_maps(outputs, K, taus):
    return [ref.score_norms(o, t, [K])[1] for o, t in zip(outputs, taus)]


def gnsm_norm_maps(outputs, K, taus):
    return [ops.score_norms(o, K, t)[1] for o, t in zip(outputs, taus)]


def score_volume(net, labels, K, taus, norms_fn, dtype):
    """The 20-temperature per-voxel norm maps (20, *spatial) of one volume."""
    maps = []
    for tau in taus:
        y = clean_input(labels, K, tau)
        with torch.autocast(labels.device.type, dtype=dtype, enabled=dtype is not None):
            out = net(y, tau.log())
        maps.append(norms_fn([out.float()], K, [tau])[0])
    return torch.cat(maps)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=None, help="volume side (default 256 on GPU, 64 on CPU)")
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/seg_scoring_<device>.json)")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = args.size or (256 if device.type == "cuda" else 64)
    K = args.classes
    torch.manual_seed(0)
    labels = torch.randint(0, K, (1, size, size, size), device=device, dtype=torch.uint8)
    taus = [t.view(1).to(device) for t in Schedule().taus()]
    net = UNet(K, spatial_dims=3, channels=tuple(args.channels)).to(device).eval()
    amp = torch.bfloat16 if device.type == "cuda" else None
    voxels = size ** 3
    results: dict = {"size": size, "classes": K, "channels": args.channels, "temperatures": len(taus),
                     "env": environment(device), "rows": {}}

    outputs = [torch.randn(1, K, size, size, size, device=device) for _ in range(2)]
    out_taus = [taus[0], taus[-1]]
    rows = []
    with torch.no_grad():
        cases = {
            "norms only (x20)": (lambda fn: (lambda: [fn(outputs, K, out_taus) for _ in range(10)]),
                                 ref_norm_maps, gnsm_norm_maps),
            "UNet + norms, 20 temps": (lambda fn: (lambda: score_volume(net, labels, K, taus, fn, amp)),
                                       ref_norm_maps, gnsm_norm_maps),
        }
        for name, (make, ref_fn, gnsm_fn) in cases.items():
            res = {}
            res["eager"] = time_fn(make(ref_fn), device, warmup=1, repeats=args.repeats)
            res["eager"]["peak_bytes"] = peak_memory(make(ref_fn), device)
            if not args.no_compile:
                compiled = torch.compile(ref_fn, dynamic=False)
                res["compiled"] = time_fn(make(compiled), device, warmup=2, repeats=args.repeats)
                res["compiled"]["peak_bytes"] = peak_memory(make(compiled), device)
            res["gnsm"] = time_fn(make(gnsm_fn), device, warmup=1, repeats=args.repeats)
            res["gnsm"]["peak_bytes"] = peak_memory(make(gnsm_fn), device)
            for k in ("eager", "compiled"):
                if k in res:
                    res[f"speedup_vs_{k}"] = res[k]["median_ms"] / res["gnsm"]["median_ms"]
            res["gnsm_voxels_per_s"] = 20 * voxels / (res["gnsm"]["median_ms"] / 1e3)
            results["rows"][name] = res
            mib = (lambda b: None if b is None else b / 2 ** 20)
            rows.append([name, res["eager"]["median_ms"], res.get("compiled", {}).get("median_ms"),
                         res["gnsm"]["median_ms"], res["speedup_vs_eager"], res.get("speedup_vs_compiled"),
                         res["gnsm_voxels_per_s"] / 1e6, mib(res["eager"]["peak_bytes"]),
                         mib(res["gnsm"]["peak_bytes"])])
    headers = ["case", "eager ms", "compiled ms", "gnsm ms", "x eager", "x compiled", "gnsm Mvoxel-temps/s",
               "eager peak MiB", "gnsm peak MiB"]
    print(f"scoring (1, {K}, {size}^3) at 20 temperatures on {results['env']['device_name']}")
    print(markdown_table(headers, rows))
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"seg_scoring_{device.type}.json")
    write_json(out, results)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
