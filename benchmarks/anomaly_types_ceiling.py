"""The ceiling of GNSM's denoising score on the anomaly-type tables: the same scoring with the Bayes-optimal
denoiser of the tables' own generator in place of the trained network.

The tables of ``bench_anomaly_types.py`` come from a known model (a mixture of 8 clusters, fields independent
given the cluster), so the best possible network output is computable in closed form: for the noisy record y at
temperature tau,

* per cluster c, the likelihood of a field's noisy value, sum_k p(x_j = k | c) q(y_j | k), with the ExpConcrete
  density q(y_j | k) proportional to exp(-K logsumexp(a^(k) - tau y_j)) (a^(k): 0 for class k, log eps
  otherwise; docs/design.md 1.2); numerical columns N(y_d; mu_dc, v_d + sigma^2) after the encoder's scaling;
* the cluster posterior p(c | y), and from it each field's class posterior p(x_j = k | y);
* the network output the KL loss is minimized by, E[softmax(-g) | y] = sum_k p(x_j = k | y) softmax(a^(k) - tau y_j),
  and for numerical columns the score E[-e / sigma | y].

A GNSMDetector is fitted (a few steps only: its encoder, schedule, rarity counts and noise are what matter), its
network is replaced by this oracle, and the tables are scored by the detector's own pipeline (same copies,
temperatures, noise and loss op). The oracle minimizes the expected training loss, so its AUROC is what the
denoising score tends to with a perfect network (not a strict bound on every network's AUROC). Also reported:
the generator's exact negative log-likelihood -log p(x), the ceiling of any likelihood detector.

The same tables' baselines run alongside (frequency score and PyOD, as in ``bench_anomaly_types.py``), and the
oracle's denoising error is combined with the count-based rarity term at several weights, so the table shows
whether any weight of the default score family could meet the best baseline on every type. ``--network`` also
fits the package default and reports its mean denoising loss next to the oracle's (how far training is from
the optimum).

    python benchmarks/anomaly_types_ceiling.py --quick --network
    python benchmarks/anomaly_types_ceiling.py --quick --eps 0.01 0.03 0.1 --eps-max 0.3

Writes ``benchmarks/results/anomaly_types_ceiling{_quick}.json`` and prints the AUROC / AP tables.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_anomaly_types import (BASELINES, CONSTANT, TYPES, Generator, add_table_args, baseline_scores,  # noqa: E402
                                 best_baselines, make_tables, print_tables)
from common import write_json  # noqa: E402

HERE = Path(__file__).resolve().parent


def field_probs(gen: Generator, encoder) -> list[np.ndarray]:
    """p(code | cluster) per encoded categorical field, (clusters, K_j) with the encoder's codes (values the
    training rows did not hold fall into the reserved unseen slot, as the encoder maps them)."""
    out = []
    for col in encoder.categorical_columns:
        cats = encoder.categories_[col]
        K = len(cats) + 1
        P = np.zeros((gen.clusters, K))
        index = {v: i for i, v in enumerate(cats)}
        if col in CONSTANT:
            P[:, index.get(CONSTANT[col][0], K - 1)] = 1.0
        else:
            j = int(col[1:])
            rare = gen.rare_rate if j in gen.rare_fields else 0.0
            for i, p in enumerate(gen.probs[j].T):
                P[:, index.get(f"v{i}", K - 1)] += (1.0 - rare) * p
            for v in (f"r{j}a", f"r{j}b"):
                P[:, index.get(v, K - 1)] += rare / 2
        out.append(P)
    return out


class OracleDenoiser(nn.Module):
    """The Bayes-optimal output of GNSMDetector's network for records of ``gen`` (module docstring)."""

    def __init__(self, gen: Generator, det) -> None:
        super().__init__()
        enc = det.encoder_
        self.logP = [torch.tensor(np.log(np.maximum(P, 1e-300))) for P in field_probs(gen, enc)]
        self.sizes = [P.shape[1] for P in self.logP]
        self.clusters = gen.clusters
        # Numerical columns after the encoder's standardization: mean mu[d, c], variance v[d].
        cols = [int(c[1:]) for c in enc.numerical_columns]
        self.mu = torch.tensor((gen.means[cols] - enc.mean_[:, None]) / enc.scale_[:, None])
        self.var = torch.tensor(1.0 / enc.scale_ ** 2)
        sched = det._schedule()
        self.log_taus = sched.taus(torch.float64).log()
        self.sigmas = sched.sigmas(torch.float64)
        self.eps = torch.tensor([det._level_eps(i) for i in range(len(self.log_taus))], dtype=torch.float64)

    def forward(self, y: torch.Tensor, log_tau: torch.Tensor) -> torch.Tensor:
        return self.solve(y, log_tau)[0].float()

    def solve(self, y: torch.Tensor, log_tau: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The output (float64) and each field's class posterior p(x_j = k | y), (B, K_j)."""
        y = y.double()
        level = (log_tau.double()[:, None] - self.log_taus[None]).abs().argmin(dim=1)
        tau, eps, sigma = log_tau.double().exp()[:, None], self.eps[level][:, None], self.sigmas[level][:, None]
        D = self.mu.shape[0]
        log_post = torch.zeros(y.shape[0], self.clusters, dtype=torch.float64)
        fields = []
        o = D
        for logP, K in zip(self.logP, self.sizes):
            u = -tau * y[:, o:o + K]  # a^(k) - tau y = log eps + u + (-log eps) [i == k]
            m = u.max(dim=1, keepdim=True).values
            e = (u - m).exp()
            S = e.sum(dim=1, keepdim=True)
            den = eps * S + (1 - eps) * e  # (B, K): exp(lse(a^(k) - tau y) - m) for each class k
            log_q = -K * den.log()  # log q(y_j | k) up to terms equal for all k
            joint = logP[None] + log_q[:, None, :]  # (B, clusters, K)
            log_like = torch.logsumexp(joint, dim=2)  # log p(y_j | c)
            log_post = log_post + log_like
            fields.append((o, K, e, den, joint - log_like[..., None]))
            o += K
        num_like = []
        for d in range(D):
            v = self.var[d] + sigma[:, 0] ** 2
            r = y[:, d:d + 1] - self.mu[d][None]
            ll = -0.5 * (r ** 2 / v[:, None] + v[:, None].log())
            log_post = log_post + ll
            num_like.append(r)
        post = torch.softmax(log_post, dim=1)  # p(c | y), uniform cluster prior
        out = torch.empty_like(y)
        posteriors = []
        for d in range(D):
            s2 = sigma[:, 0] ** 2
            shrink = (self.var[d] / (self.var[d] + s2))[:, None]
            ex = (post * (self.mu[d][None] + shrink * num_like[d])).sum(dim=1)  # E[x | y]
            out[:, d] = -(y[:, d] - ex) / s2  # E[-e / sigma | y], the score the DSM loss wants
        for o, K, e, den, log_cond in fields:
            pk = (post[..., None] * log_cond.exp()).sum(dim=1)  # p(x_j = k | y), (B, K)
            posteriors.append(pk)
            # softmax_i(a^(k) - tau y)_i = (eps e_i + (1 - eps) e_i [i == k]) / den_k, mixed over k by pk
            w = pk / den
            Q = eps * e * w.sum(dim=1, keepdim=True) + (1 - eps) * e * w
            out[:, o:o + K] = Q.clamp_min(1e-300).log()
        return out, posteriors


def exact_nll(gen: Generator, det, codes: torch.Tensor, num: torch.Tensor) -> np.ndarray:
    """-log p(x) of encoded records under the generator (categorical codes as the detector encodes them,
    numerical columns after its scaling)."""
    oracle = OracleDenoiser(gen, det)
    log_post = torch.zeros(codes.shape[0], gen.clusters, dtype=torch.float64)
    for j, logP in enumerate(oracle.logP):
        log_post = log_post + logP[:, codes[:, j].long()].T
    for d in range(oracle.mu.shape[0]):
        var = oracle.var[d]
        r = num[:, d].double()[:, None] - oracle.mu[d][None]
        log_post = log_post - 0.5 * (r ** 2 / var + (2 * np.pi * var).log())
    return -(torch.logsumexp(log_post, dim=1) - np.log(gen.clusters)).numpy()


def main(argv: list[str] | None = None) -> int:
    from sklearn.metrics import average_precision_score, roc_auc_score

    from gnsm.detectors import GNSMDetector

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_table_args(p)
    p.add_argument("--eps", nargs="+", type=float, default=[0.01], help="constant one-hot clips to score with")
    p.add_argument("--eps-max", nargs="*", type=float, default=[], help="rising clips (eps 0.01 up to this)")
    p.add_argument("--rarity-weights", nargs="+", type=float, default=[0.0, 0.25, 0.5, 1.0, 2.0],
                   help="rarity_weight values the oracle's denoising error is combined with (1 is the default)")
    p.add_argument("--baselines", nargs="*", default=list(BASELINES), help="PyOD baselines (frequency always runs)")
    p.add_argument("--network", action="store_true",
                   help="also fit the package-default GNSMDetector and compare its denoising loss with the oracle's")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    gen, train, tests = make_tables(args)

    variants = [{"eps": e} for e in args.eps] + [{"eps_max": e} for e in args.eps_max]
    table: dict[str, dict[str, dict[str, float]]] = {k: {} for k in TYPES}
    losses: dict[str, dict[str, float]] = {}
    times: dict[str, float] = {}

    def record(kind: str, name: str, s: np.ndarray) -> None:
        yk = tests[kind][1]
        table[kind][name] = {"auroc": 100 * roc_auc_score(yk, s), "ap": 100 * average_precision_score(yk, s)}

    for kind, per in baseline_scores(train, tests, args.baselines, args.seed, times).items():
        for name, s in per.items():
            record(kind, name, s)
    baselines = list(table[TYPES[0]])

    def denoise_scores(det) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per type: (the summed denoising error, the summed rarity term at weight 1)."""
        out = {}
        for kind in TYPES:
            codes, num = det._encode(tests[kind][0])
            out[kind] = (det._features(codes, num).sum(axis=(1, 2)),
                         det.rarity(tests[kind][0]).sum(axis=1) * len(det._score_indices()))
        return out

    def mean_losses(name: str, per: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        err, yk = per["combination"][0], tests["combination"][1]
        losses[name] = {"normal": float(err[yk == 0].mean()), "combination anomalies": float(err[yk == 1].mean())}

    for params in variants:
        name = "oracle " + ", ".join(f"{k}={v:g}" for k, v in params.items())
        t0 = time.perf_counter()
        det = GNSMDetector(random_state=args.seed, n_steps=2, fit_score_rows=256, **params).fit(train)
        assert [P.shape[1] for P in field_probs(gen, det.encoder_)] == list(det.field_sizes_)
        det.model_ = OracleDenoiser(gen, det)
        per = denoise_scores(det)
        mean_losses(name, per)
        for kind, (err, rarity) in per.items():
            for w in args.rarity_weights:
                record(kind, f"{name}, rarity_weight={w:g}", err + w * rarity)
            if params is variants[0]:
                record(kind, "exact -log p(x)", exact_nll(gen, det, *det._encode(tests[kind][0])))
        times[name] = time.perf_counter() - t0
        print(f"{name}: {times[name]:.1f} s", flush=True)
    if args.network:
        t0 = time.perf_counter()
        det = GNSMDetector(random_state=args.seed).fit(train)
        per = denoise_scores(det)
        times["network fit + score"] = time.perf_counter() - t0
        mean_losses("network (package default)", per)
        for kind, (err, rarity) in per.items():
            record(kind, "network (package default), rarity_weight=1", err + rarity)
            record(kind, "network (package default), rarity_weight=0", err)
        det.model_ = OracleDenoiser(gen, det)  # the same detector's noise and clip, scored by the oracle
        mean_losses("oracle with the network's detector", denoise_scores(det))

    print_tables(table, "scorer")
    print("\nmean summed denoising loss on the combination table: " + ", ".join(
        f"{n} {v['normal']:.2f} normal / {v['combination anomalies']:.2f} anomalies" for n, v in losses.items()))
    result = {
        "command": "python benchmarks/anomaly_types_ceiling.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "train_rows": len(train), "structured_fields": len(gen.cards), "numerical": args.numerical,
        "results": table, "mean_denoising_loss": losses,
        "best_baseline": best_baselines(table, lambda name: name in baselines),
        "seconds": times, "torch_threads": torch.get_num_threads(),
    }
    write_json(args.out or str(HERE / "results" / (
        "anomaly_types_ceiling_quick.json" if args.quick else "anomaly_types_ceiling.json")), result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
