"""Training throughput and peak memory, side by side, for three ways to train the same network:

(a) ``paper``: the paper-style loop: fp32, eager, one-hot materialized, plain-PyTorch reference ops
    (gnsm.ops.reference: sample_gumbel -> relax -> network -> score_matching_loss), Adam, nothing else;
(b) ``trainer``: gnsm's Trainer with its defaults (fused ops; bf16 + channels_last_3d on CUDA, EMA,
    clipping, warm-up + cosine);
(c) ``trainer_ref``: the same Trainer with ``ops_backend="reference"`` (isolates what the fused ops give).

Cases: the tabular residual MLP (records/s) and a 3D UNet on label patches at K = 8 and K = 117
(voxels/s). On CPU the patches are 32^3 (``--side``; the GPU setting is 128^3). Each (case, mode)
runs in its own subprocess so peak memory is per run: CUDA ``max_memory_allocated`` on GPU, the
growth of the peak RSS over the RSS after setup on CPU.

    python benchmarks/bench_train.py                 # CPU defaults, writes benchmarks/results/train_cpu.json
    python benchmarks/bench_train.py --device cuda --side 128 --out benchmarks/results/train_h100.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import torch

MODES = ("paper", "trainer", "trainer_ref")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _case(name: str, args):
    """(model, field_sizes, num_numerical, labels (n, ...), units per record)."""
    from gnsm.models import TabularResMLP, UNet

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if name == "tabular":
        sizes = [6, 4, 2, 3, 3, 2, 2, 2, 8, 6, 3] * 2  # solar-flare fields, twice (J = 22)
        n = args.tab_batch * 8
        labels = torch.stack([torch.randint(0, k, (n,), generator=g) for k in sizes], 1)
        return TabularResMLP(sizes), sizes, 0, labels, 1, args.tab_batch
    k = int(name.split("k")[-1])
    side = args.side
    labels = torch.randint(0, k, (8, side, side, side), generator=g, dtype=torch.int64)
    # Smooth-ish label maps: blocks of 4^3 voxels share a label (random noise would be unrealistic).
    coarse = torch.randint(0, k, (8, side // 4, side // 4, side // 4), generator=g)
    labels = coarse.repeat_interleave(4, 1).repeat_interleave(4, 2).repeat_interleave(4, 3)
    model = UNet(k, spatial_dims=3, channels=tuple(args.unet_channels))
    batch = 2 if k <= 8 else 1
    return model, k, 0, labels, side ** 3, batch


class _Patches(torch.utils.data.Dataset):
    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.labels[i]


def run_one(case: str, mode: str, args) -> dict:
    from gnsm.ops import reference
    from gnsm.data.tensors import TabularData
    from gnsm.core.schedule import Schedule
    from gnsm.core.threads import configure_threads
    from gnsm.training import Trainer, TrainConfig

    configure_threads(args.threads)
    device = torch.device(args.device)
    model, fs, D, labels, units, batch = _case(case, args)
    schedule = Schedule()
    warm, timed = args.warmup, args.steps
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base_rss = _rss_mb()
    if mode == "paper":
        model = model.to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        sizes = [fs] if isinstance(fs, int) else fs
        taus = schedule.taus().to(device)
        lab_all = labels.to(device)
        times = []
        for step in range(warm + timed):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            idx = torch.randint(0, len(lab_all), (batch,), device=device)
            lab = lab_all[idx]
            lab = lab.unsqueeze(1) if isinstance(fs, int) else lab
            tau = taus[schedule.sample_indices(batch, device=device)]
            a = reference.logits_from_labels(lab, sizes)                   # one-hot materialized
            g = reference.sample_gumbel(a.shape, device=device)
            y = reference.relax(a, g, tau, sizes)
            out = model(y, tau.log())
            loss = reference.score_matching_loss(out, g, tau, sizes)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        sec = sum(times[warm:]) / timed
    else:
        with tempfile.TemporaryDirectory() as tmp:
            metrics = os.path.join(tmp, "m.jsonl")
            cfg = TrainConfig(steps=warm + timed, batch_size=batch, log_every=1, val_every=10**9, progress=False,
                              metrics_file=metrics, device=args.device, warmup_steps=1,
                              ops_backend="fused" if mode == "trainer" else "reference",
                              num_threads=args.threads)
            trainer = Trainer(model, schedule, cfg, fs, D)
            data = TabularData(labels) if case == "tabular" else _Patches(labels)
            trainer.fit(data)
            with open(metrics) as f:
                recs = [json.loads(x) for x in f if '"loss"' in x]
            t = [r["time"] for r in recs]
            sec = (t[-1] - t[warm - 1]) / timed
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_rss
    return {"case": case, "mode": mode, "batch": batch, "ms_per_step": sec * 1e3,
            "throughput": batch * units / sec, "unit": "records/s" if case == "tabular" else "voxels/s",
            "peak_mem_mb": peak, "params": sum(p.numel() for p in model.parameters())}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--side", type=int, default=None, help="patch side (default 32 on CPU, 128 on CUDA)")
    p.add_argument("--cases", default="tabular,unet3d_k8,unet3d_k117")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--steps", type=int, default=None, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--tab-batch", type=int, default=256)
    p.add_argument("--unet-channels", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--threads", type=int, default=None, help="torch/BLAS threads (default: gnsm.core.threads rule)")
    p.add_argument("--out", default=None)
    p.add_argument("--_one", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side is None:
        args.side = 128 if args.device.startswith("cuda") else 32
    if args.steps is None:
        args.steps = 20 if args.device.startswith("cuda") else 8
    if args._one:
        print("RESULT " + json.dumps(run_one(args._one[0], args._one[1], args)))
        return
    if args.out is None:
        args.out = f"benchmarks/results/train_{'cpu' if args.device == 'cpu' else 'gpu'}.json"
    rows = []
    passthrough = ["--device", args.device, "--side", str(args.side), "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--tab-batch", str(args.tab_batch),
                   "--unet-channels", *map(str, args.unet_channels)]
    if args.threads is not None:
        passthrough += ["--threads", str(args.threads)]
    for case in args.cases.split(","):
        for mode in args.modes.split(","):
            cmd = [sys.executable, os.path.abspath(__file__), *passthrough, "--_one", case, mode]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                print(f"{case}/{mode} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(line[0][7:]))
            r = rows[-1]
            print(f"{case:12s} {mode:12s} {r['ms_per_step']:9.1f} ms/step {r['throughput']:12.4g} {r['unit']:10s} "
                  f"peak {r['peak_mem_mb']:8.1f} MB", flush=True)
    print()
    print(f"{'case':12s} {'mode':12s} {'ms/step':>9s} {'throughput':>12s} {'unit':10s} {'peak MB':>9s} {'vs paper':>8s}")
    for r in rows:
        base = next((x for x in rows if x["case"] == r["case"] and x["mode"] == "paper"), None)
        speed = r["throughput"] / base["throughput"] if base else float("nan")
        print(f"{r['case']:12s} {r['mode']:12s} {r['ms_per_step']:9.1f} {r['throughput']:12.4g} {r['unit']:10s} "
              f"{r['peak_mem_mb']:9.1f} {speed:7.2f}x")
    meta = {"device": args.device, "torch": torch.__version__, "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "side": args.side, "steps": args.steps, "warmup": args.warmup,
            "load_average": os.getloadavg(), "unet_channels": args.unet_channels,
            "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "results": rows}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
