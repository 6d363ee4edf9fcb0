"""Benchmark of gnsm's fused ops against the plain-PyTorch reference, eager and under torch.compile,
side by side in one run: (a) relax alone, (b) relax + loss forward + backward (the network is
excluded: its output is a leaf tensor), (c) score norms at 20 temperatures.

    python benchmarks/bench_ops.py                      # CPU shapes on CPU, the large volume shapes (GPU_CASES) on a GPU
    python benchmarks/bench_ops.py --out results.json --no-compile

Prints a markdown table and writes JSON (times in ms, ratios, achieved bandwidth on GPU).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import environment, markdown_table, peak_memory, sync, time_fn, write_json  # noqa: E402

import gnsm.ops as ops  # noqa: E402
from gnsm.ops import reference as ref  # noqa: E402
from gnsm.core.schedule import Schedule  # noqa: E402

TABULAR_FIELDS = [12, 4, 8, 3, 3, 3, 2, 10, 5, 3]
CPU_CASES = [("tabular", 100_000, TABULAR_FIELDS, None), ("volume", 2, [8], (64, 64, 64))]
GPU_CASES = [
    ("volume", 2, [4], (128, 128, 128)),
    ("volume", 2, [8], (160, 160, 160)),
    ("volume", 1, [16], (192, 192, 192)),
    ("volume", 1, [117], (128, 128, 128)),
    ("tabular", 1_000_000, TABULAR_FIELDS, None),
]


def make_case(kind, batch, fields, spatial, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    if kind == "tabular":
        labels = torch.stack([torch.randint(0, k, (batch,), generator=gen) for k in fields], 1).to(torch.uint8)
    else:
        labels = torch.randint(0, fields[0], (batch, 1, *spatial), generator=gen).to(torch.uint8)
    tau = Schedule().taus()[torch.randint(0, 20, (batch,), generator=gen)]
    return labels.to(device), tau.to(device)


# ---- the reference pipeline (what a user writes without gnsm) ----------------------------------

def ref_relax(labels, fields, tau):
    g = ref.sample_gumbel((labels.shape[0], sum(fields), *labels.shape[2:]), device=labels.device)
    return ref.relax_from_labels(labels, fields, tau, g)


def ref_step(labels, fields, tau, out):
    g = ref.sample_gumbel((labels.shape[0], sum(fields), *labels.shape[2:]), device=labels.device)
    y = ref.relax_from_labels(labels, fields, tau, g)
    loss = ref.score_matching_loss(out, g, tau, fields, kind="kl", reduction="mean")
    (grad,) = torch.autograd.grad(loss, out)
    return y, grad


def ref_norms(out, fields, taus):
    return [ref.score_norms(out, t, fields) for t in taus]


# ---- gnsm's fused ops ---------------------------------------------------------------------------

def gnsm_relax(labels, fields, tau):
    return ops.relax_from_labels(labels, fields, tau).y


def gnsm_step(labels, fields, tau, out):
    y, state = ops.relax_from_labels(labels, fields, tau)
    loss = ops.score_matching_loss(out, state, fields, tau, kind="kl", reduction="mean")
    (grad,) = torch.autograd.grad(loss, out)
    return y, grad


def gnsm_norms(out, fields, taus):
    return [ops.score_norms(out, fields, t) for t in taus]


def copy_bandwidth(device, nbytes=1 << 28):
    """Device-to-device copy bandwidth (bytes/s), read + write counted."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    t = time_fn(lambda: dst.copy_(src), device, warmup=3, repeats=10)
    return 2 * nbytes / (t["median_ms"] / 1e3)


def bench_case(case, device, compile_ref, repeats):
    kind, batch, fields, spatial = case
    labels, tau = make_case(kind, batch, fields, spatial, device)
    C = sum(fields)
    out_shape = (labels.shape[0], C, *labels.shape[2:])
    out = torch.randn(out_shape, device=device).requires_grad_(True)
    taus = [torch.full((labels.shape[0],), float(t), device=device) for t in Schedule().taus()]
    name = f"{kind} B={batch} K={fields if kind == 'tabular' else fields[0]}" + (f" {spatial[0]}^{len(spatial)}" if spatial else "")
    rows = {}
    impls = {"relax": (ref_relax, gnsm_relax, (labels, fields, tau)),
             "step": (ref_step, gnsm_step, (labels, fields, tau, out)),
             "norms20": (ref_norms, gnsm_norms, (out.detach(), fields, taus))}
    for step, (ref_fn, gnsm_fn, args) in impls.items():
        res = {}
        res["eager"] = time_fn(lambda: ref_fn(*args), device, repeats=repeats)
        res["eager"]["peak_bytes"] = peak_memory(lambda: ref_fn(*args), device)
        if compile_ref:
            compiled = torch.compile(ref_fn, dynamic=False)
            res["compiled"] = time_fn(lambda: compiled(*args), device, repeats=repeats)
            res["compiled"]["peak_bytes"] = peak_memory(lambda: compiled(*args), device)
        res["gnsm"] = time_fn(lambda: gnsm_fn(*args), device, repeats=repeats)
        res["gnsm"]["peak_bytes"] = peak_memory(lambda: gnsm_fn(*args), device)
        res["speedup_vs_eager"] = res["eager"]["median_ms"] / res["gnsm"]["median_ms"]
        if compile_ref:
            res["speedup_vs_compiled"] = res["compiled"]["median_ms"] / res["gnsm"]["median_ms"]
        # Bytes a fused implementation must move (labels in + y out; + out read and grad written).
        n_out = labels.shape[0] * C * (labels[0, 0].numel())
        moved = {"relax": labels.numel() * labels.element_size() + 4 * n_out,
                 "step": labels.numel() * labels.element_size() + 4 * n_out + 2 * 4 * n_out,
                 "norms20": len(taus) * 4 * n_out}[step]
        res["bytes_moved"] = moved
        res["gnsm_bytes_per_s"] = moved / (res["gnsm"]["median_ms"] / 1e3)
        if step == "step" and device.type == "cuda":
            res["y_plus_grad_bytes"] = 2 * 4 * n_out
        rows[step] = res
        sync(device)
    return name, rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/ops_<device>.json)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile reference")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cases = GPU_CASES if device.type == "cuda" else CPU_CASES
    bandwidth = copy_bandwidth(device) if device.type == "cuda" else None
    results = {"environment": environment(device), "copy_bandwidth_bytes_per_s": bandwidth, "cases": {}}
    table = []
    for case in cases:
        name, rows = bench_case(case, device, not args.no_compile, args.repeats)
        results["cases"][name] = rows
        for step, r in rows.items():
            table.append([name, step, r["eager"]["median_ms"], r.get("compiled", {}).get("median_ms"),
                          r["gnsm"]["median_ms"], r["speedup_vs_eager"], r.get("speedup_vs_compiled"),
                          (r["gnsm_bytes_per_s"] / bandwidth) if bandwidth else None])
        print(f"done: {name}", flush=True)
    headers = ["case", "step", "eager ms", "compiled ms", "gnsm ms", "x eager", "x compiled", "of copy bw"]
    print(markdown_table(headers, table))
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"ops_{device.type}.json")
    write_json(out, results)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
