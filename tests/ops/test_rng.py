"""Tests of the randomness (csrc/ops/rng_state.cpp, csrc/utils/gnsm_math.h): the rng_state op,
reproducibility under ``torch.manual_seed`` and explicit generators, independence of the thread
count, the Philox element -> counter mapping against an independent Python Philox (checked against
the Random123 known-answer vectors), and the law of the Gumbel noise.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ops_testing import MANY_FIELDS, make_labels, make_tau, ops


class TestRngState:
    def test_opcheck(self, device):
        # rng_state is nondeterministic by design (tagged nondeterministic_seeded): each call draws a
        # fresh key from the generator, so comparing the outputs of two runs (eager vs. AOT-dispatched,
        # which test_aot_dispatch_dynamic does) is only meaningful if both runs happen to start from the
        # same generator state, which opcheck does not promise. The schema, the autograd registration
        # (an int64 output, nothing to differentiate) and the fake (meta) function are checked.
        like = torch.randn(3, 4, device=device)
        torch.library.opcheck(torch.ops.gnsm.rng_state.default, (like,),
                              test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
        torch.library.opcheck(torch.ops.gnsm.rng_state.default, (like, torch.Generator(device=device)),
                              test_utils=("test_schema", "test_faketensor"))

    def test_shape_dtype_device(self, device):
        state = ops.rng_state(torch.empty(0, 3, dtype=torch.uint8, device=device))
        assert state.shape == (2,) and state.dtype == torch.int64 and state.device.type == device.type

    def test_successive_draws_differ(self, device):
        states = torch.stack([ops.rng_state(torch.empty(1, device=device)) for _ in range(50)]).cpu()
        assert len({tuple(s.tolist()) for s in states}) == 50


class TestReproducibility:
    def _sample(self, device, **kw):
        labels = make_labels(3, [4, 7], (5,), device, generator=torch.Generator().manual_seed(7))
        return ops.relax_from_labels(labels, [4, 7], 0.8, **kw)

    def test_manual_seed(self, device):
        torch.manual_seed(123)
        y1, s1 = self._sample(device)
        y2, s2 = self._sample(device)
        torch.manual_seed(123)
        y1_again, s1_again = self._sample(device)
        torch.manual_seed(124)
        y_other, _ = self._sample(device)
        assert torch.equal(y1, y1_again) and torch.equal(s1, s1_again)
        assert not torch.equal(y1, y2) and not torch.equal(s1, s2)  # successive calls differ
        assert not torch.equal(y1, y_other)  # a different seed differs

    def test_manual_seed_reproduces_logits_path_and_loss(self, device):
        a = torch.randn(4, 6, 3, device=device)
        out = torch.randn(4, 6, 3, device=device)
        results = []
        for _ in range(2):
            torch.manual_seed(99)
            y, state = ops.relax_from_logits(a, [2, 4], 1.3)
            loss = ops.score_matching_loss(out, state, [2, 4], 1.3, reduction="none")
            results.append((y, loss))
        assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])

    def test_explicit_generator(self, device):
        gen = torch.Generator(device=device).manual_seed(5)
        y1, s1 = self._sample(device, generator=gen)
        y2, _ = self._sample(device, generator=gen)
        gen.manual_seed(5)
        y1_again, _ = self._sample(device, generator=gen)
        assert torch.equal(y1, y1_again) and not torch.equal(y1, y2)
        other = torch.Generator(device=device).manual_seed(6)
        assert not torch.equal(y1, self._sample(device, generator=other)[0])

    def test_explicit_generator_leaves_the_default_alone(self, device):
        torch.manual_seed(3)
        expected = self._sample(device).y
        torch.manual_seed(3)
        self._sample(device, generator=torch.Generator(device=device).manual_seed(11))
        assert torch.equal(self._sample(device).y, expected)

    def test_explicit_state_reproduces(self, device):
        y, state = self._sample(device)
        assert torch.equal(self._sample(device, rng_state=state).y, y)
        assert torch.equal(self._sample(device, rng_state=state.clone()).y, y)


class TestThreadCountIndependence:
    """The element -> Philox counter mapping depends on coordinates only (gnsm_math.h): the results must
    be bit-identical whatever the number of threads (the shapes are large enough that
    ``at::parallel_for`` splits them into several chunks)."""

    THREADS = (1, 2, 4)

    def _run_all(self, threads):
        torch.set_num_threads(threads)
        gen = torch.Generator().manual_seed(2024)
        state = torch.tensor([0x1234_5678_9ABC_DEF, 17])
        vol_labels = make_labels(2, 8, (32, 32, 8), "cpu", torch.uint8, generator=gen)
        tab_labels = make_labels(3000, MANY_FIELDS, (), "cpu", generator=gen)
        vol_out = torch.randn(2, 8, 32, 32, 8, generator=gen)
        tab_out = torch.randn(3000, sum(MANY_FIELDS), generator=gen)
        tau_vol, tau_tab = make_tau(2, generator=gen), make_tau(3000, generator=gen)
        results = [
            ops.relax_from_labels(vol_labels, 8, tau_vol, rng_state=state).y,
            ops.relax_from_labels(tab_labels, MANY_FIELDS, tau_tab, rng_state=state, dtype=torch.bfloat16).y,
            ops.relax_from_logits(vol_out, 8, tau_vol, rng_state=state).y,
            ops.gumbel_noise(state, tab_out.shape),
            ops.target_score(state, vol_out.shape, 8, tau_vol),
            *ops.score_norms(tab_out, MANY_FIELDS, tau_tab),
        ]
        for out, sizes, tau in ((vol_out, 8, tau_vol), (tab_out, MANY_FIELDS, tau_tab)):
            for kind in ("kl", "mse"):
                l = out.clone().requires_grad_()
                loss = ops.score_matching_loss(l, state, sizes, tau, kind=kind, reduction="none")
                (grad,) = torch.autograd.grad(loss, l, torch.ones_like(loss))
                results += [loss, grad]
        return results

    def test_bit_identical_across_thread_counts(self):
        runs = {t: self._run_all(t) for t in self.THREADS}
        for t in self.THREADS[1:]:
            for i, (a, b) in enumerate(zip(runs[self.THREADS[0]], runs[t])):
                assert torch.equal(a, b), f"result {i} differs between 1 and {t} threads"


# ---- an independent Philox-4x32-10 (Salmon et al., SC'11), vectorized over numpy uint64 ----------

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_LO = np.uint64(0xFFFFFFFF)


def philox4x32_10(ctr, key):
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) for c in ctr)
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    for _ in range(10):
        p0, p1 = _M0 * c0, _M1 * c2  # < 2^64: no wrap-around
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & _LO, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & _LO
        k0, k1 = (k0 + _W0) & _LO, (k1 + _W1) & _LO
    return c0, c1, c2, c3


class TestPhiloxMapping:
    # Known-answer vectors of Philox-4x32-10 from the Random123 distribution (kat_vectors).
    KAT = [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
         (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ]

    def test_python_philox_known_answers(self):
        for ctr, key, expected in self.KAT:
            assert tuple(int(x) for x in philox4x32_10(ctr, key)) == expected

    @pytest.mark.parametrize("shape", [(3, 6, 5), (2, 4, 3, 2), (7, 9), (2, 1, 4)])
    def test_gumbel_noise_follows_the_documented_mapping(self, device, shape):
        # gnsm_math.h: element (b, c, s) of (B, C, S) -> group = (b ceil(C/4) + c // 4) S + s, lane c % 4,
        # counter (lo32(group), hi32(group), lo32(offset), hi32(offset)), key (lo32(seed), hi32(seed));
        # u = ((x >> 9) + 0.5) 2^-23, g = -log(-log(u)). Seed and offset use both 32-bit halves.
        seed, offset = 0x0123_4567_89AB_CDEF, (5 << 32) + 3
        g = ops.gumbel_noise(torch.tensor([seed, offset], device=device), shape).cpu().double().numpy()
        B, C = shape[0], shape[1]
        S = int(np.prod(shape[2:], dtype=np.int64))
        b, c, s = np.meshgrid(np.arange(B), np.arange(C), np.arange(S), indexing="ij")
        group = ((b * ((C + 3) // 4) + c // 4) * S + s).astype(np.uint64)
        words = philox4x32_10((group & _LO, group >> np.uint64(32), np.uint64(offset & 0xFFFFFFFF),
                               np.uint64(offset >> 32)), (seed & 0xFFFFFFFF, seed >> 32))
        bits = np.choose(c % 4, words)
        u = ((bits >> np.uint64(9)).astype(np.float64) + 0.5) * 2.0 ** -23
        expected = -np.log(-np.log(u)).reshape(shape)
        np.testing.assert_allclose(g, expected, rtol=2e-6, atol=2e-6)

    def test_negative_int64_seed_is_the_same_bits(self, device):
        # The state stores uint64 keys in int64: a key with the top bit set arrives as a negative number.
        seed = -0x0123_4567_89AB_CDEF
        g = ops.gumbel_noise(torch.tensor([seed, 0], device=device), (1, 4)).cpu().double().numpy()[0]
        useed = seed & 0xFFFF_FFFF_FFFF_FFFF
        words = philox4x32_10((0, 0, 0, 0), (useed & 0xFFFFFFFF, useed >> 32))
        u = ((np.array([int(w) for w in words]) >> 9) + 0.5) * 2.0 ** -23
        np.testing.assert_allclose(g, -np.log(-np.log(u)), rtol=2e-6, atol=2e-6)


class TestGumbelLaw:
    N_ROWS = 2048  # x 128 channels = 262144 draws

    def _draws(self, device):
        state = ops.rng_state(torch.empty(0, device=device))
        return ops.gumbel_noise(state, (self.N_ROWS, 128)).cpu().double()

    def test_mean_and_variance(self, device):
        g = self._draws(device).flatten()
        n = g.numel()
        var = math.pi ** 2 / 6
        se_mean = math.sqrt(var / n)
        se_var = var * math.sqrt((5.4 - 1.0) / n)  # Gumbel kurtosis is 5.4
        assert abs(g.mean().item() - 0.5772156649) < 4 * se_mean
        assert abs(g.var().item() - var) < 4 * se_var

    def test_kolmogorov_smirnov(self, device):
        g = self._draws(device)
        assert stats.kstest(g.flatten().numpy(), stats.gumbel_r.cdf).pvalue > 1e-3
        # Each lane of a Philox block (channel c % 4) and each block row is Gumbel on its own.
        for c in (0, 1, 2, 3, 4, 127):
            assert stats.kstest(g[:, c].numpy(), stats.gumbel_r.cdf).pvalue > 1e-4
        # Power check: a shifted law is rejected.
        assert stats.kstest(g.flatten().numpy() + 0.02, stats.gumbel_r.cdf).pvalue < 1e-6

    def test_no_correlation_between_neighbours(self, device):
        g = self._draws(device)
        bound = 5 / math.sqrt(g.shape[0])
        for c0, c1 in ((0, 1), (3, 4), (0, 4), (1, 5), (2, 3)):  # lanes of a block, across blocks
            r = np.corrcoef(g[:, c0].numpy(), g[:, c1].numpy())[0, 1]
            assert abs(r) < bound, (c0, c1, r)
        r = np.corrcoef(g[:-1].flatten().numpy(), g[1:].flatten().numpy())[0, 1]  # consecutive records
        assert abs(r) < 5 / math.sqrt(g.numel())
