// CPU tiling shared by the CPU kernels: a tile is up to kTile positions processed together so the
// inner loops run over positions (lanes) and vectorize. For spatial data (S > 1) a tile is kTile
// consecutive positions of one record (contiguous in memory for every channel); for tabular data
// (S == 1) a tile is kTile consecutive records. Tiles are independent and handed to
// at::parallel_for; the random numbers depend only on element coordinates (see gnsm_math.h).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define GNSM_CPU_AVX2_PHILOX 1
#endif

#include "utils/checks.h"
#include "utils/gnsm_math.h"

// The per-tile workers are compiled three times, for x86-64-v4 (AVX-512), x86-64-v3 (AVX2, FMA, BMI2)
// and baseline x86-64, and the loader picks one at run time (GCC function multiversioning), so the
// package does not require AVX2. The v4 clone is 20-25% faster than v3 on this machine (AMD Zen 4).
// Everything a worker calls must be inlined into it (GNSM_CPU_INLINE here, GNSM_HD in gnsm_math.h):
// an out-of-line helper is compiled once, for the baseline, and would run baseline code in both clones.
// Test builds can compile one variant only, to run the tests on a clone this machine would not pick:
// CMAKE_ARGS="-DCMAKE_CXX_FLAGS=-DGNSM_CPU_TEST_ISA_V3" (or ..._BASELINE).
#if defined(GNSM_CPU_TEST_ISA_V3)
#define GNSM_CPU_MULTIVERSION __attribute__((target("arch=x86-64-v3")))
#elif defined(GNSM_CPU_TEST_ISA_BASELINE)
#define GNSM_CPU_MULTIVERSION
#elif defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define GNSM_CPU_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GNSM_CPU_MULTIVERSION
#endif
#if defined(__GNUC__)
#define GNSM_CPU_INLINE inline __attribute__((always_inline))
#else
#define GNSM_CPU_INLINE inline
#endif

namespace gnsm {
namespace cpu {

// 32 lanes: four 8-wide AVX2 vectors per row, enough work per field to amortize the per-lane setup.
constexpr int64_t kTile = 32;

struct Tile {
  int64_t b0 = 0;   // first record
  int64_t s0 = 0;   // first spatial position
  int64_t n = 0;    // lanes in use (<= kTile)
  bool records = false;  // lanes are records (S == 1) rather than positions of record b0

  // Element (lane i, channel c) of a (B, C, S) tensor is at base(C, S) + c * cstride(S) + i * lane_stride(C).
  GNSM_CPU_INLINE int64_t base(int64_t C, int64_t S) const { return records ? b0 * C : b0 * C * S + s0; }
  GNSM_CPU_INLINE int64_t cstride(int64_t S) const { return records ? 1 : S; }
  GNSM_CPU_INLINE int64_t lane_stride(int64_t C) const { return records ? C : 1; }
  // Position (b, s) of lane i as a flat index into a (B, J, S) per-position tensor of field j.
  GNSM_CPU_INLINE int64_t pos_index(int64_t i, int64_t j, int64_t J, int64_t S) const {
    return records ? (b0 + i) * J + j : (b0 * J + j) * S + s0 + i;
  }
  GNSM_CPU_INLINE int64_t batch_of(int64_t i) const { return records ? b0 + i : b0; }
};

// The common tile, kTile consecutive positions of one record, rebuilt from constants: once a worker's
// body is inlined with it, every lane loop has a fixed trip count (no remainder loops) and the
// record/position branches fold away. Workers call their body with full_span(t) when is_full_span(t).
GNSM_CPU_INLINE bool is_full_span(const Tile& t) { return !t.records && t.n == kTile; }
GNSM_CPU_INLINE Tile full_span(const Tile& t) {
  Tile f;
  f.b0 = t.b0;
  f.s0 = t.s0;
  f.n = kTile;
  f.records = false;
  return f;
}

// Runs fn(tile) over all tiles of a (B, C, S) layout, in parallel; fn must be thread-safe.
template <typename F>
void for_each_tile(const Dims& d, F&& fn) {
  if (d.batch == 0 || d.spatial == 0) return;
  const int64_t work_per_tile = std::max<int64_t>(1, kTile * d.channels);
  const int64_t grain = std::max<int64_t>(1, 32768 / work_per_tile);
  if (d.spatial == 1) {
    const int64_t ntiles = (d.batch + kTile - 1) / kTile;
    at::parallel_for(0, ntiles, grain, [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t) {
        Tile tile;
        tile.b0 = t * kTile;
        tile.n = std::min(kTile, d.batch - tile.b0);
        tile.records = true;
        fn(tile);
      }
    });
  } else {
    const int64_t per_record = (d.spatial + kTile - 1) / kTile;
    at::parallel_for(0, d.batch * per_record, grain, [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t) {
        Tile tile;
        tile.b0 = t / per_record;
        tile.s0 = (t % per_record) * kTile;
        tile.n = std::min(kTile, d.spatial - tile.s0);
        fn(tile);
      }
    });
  }
}

#if GNSM_CPU_AVX2_PHILOX
// Philox-4x32-10 of 8 consecutive lanes at once (counter groups group0 + i * gstride, i = 0..7):
// bits[l][i] = word l of lane i, bit-identical to math::philox_block. The compiler does not vectorize
// the scalar version (32x32 -> 64-bit products), and Philox is a third of the relax kernel's work.
// Called only where the CPU has AVX2 (see fill_gumbel), so the package still runs on older CPUs.
__attribute__((target("avx2"))) inline void philox_lanes_avx2(uint64_t seed, uint64_t offset, uint64_t group0,
                                                              uint64_t gstride, uint32_t* b0, uint32_t* b1,
                                                              uint32_t* b2, uint32_t* b3) {
  // The 8 64-bit counters in two registers, split into low and high words (built in registers: scalar
  // stores read back as one vector would stall on store forwarding).
  const auto ll = [](uint64_t v) { return static_cast<long long>(v); };  // wrap-around in unsigned
  const __m256i c03 = _mm256_setr_epi64x(ll(group0), ll(group0 + gstride), ll(group0 + 2 * gstride),
                                         ll(group0 + 3 * gstride));
  const __m256i c47 = _mm256_add_epi64(c03, _mm256_set1_epi64x(ll(4 * gstride)));
  const __m256i perm = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  const __m256i a = _mm256_permutevar8x32_epi32(c03, perm), b = _mm256_permutevar8x32_epi32(c47, perm);
  __m256i x = _mm256_permute2x128_si256(a, b, 0x20);  // low words of counters 0..7
  __m256i y = _mm256_permute2x128_si256(a, b, 0x31);  // high words
  __m256i z = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(offset)));
  __m256i w = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(offset >> 32)));
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  for (int round = 0; round < 10; ++round) {
    // 32x32 -> 64-bit products of the even and the odd 32-bit lanes, then hi/lo words put back in place.
    const __m256i p0e = _mm256_mul_epu32(x, m0), p0o = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m0);
    const __m256i p1e = _mm256_mul_epu32(z, m1), p1o = _mm256_mul_epu32(_mm256_srli_epi64(z, 32), m1);
    const __m256i lo0 = _mm256_blend_epi32(p0e, _mm256_slli_epi64(p0o, 32), 0xAA);
    const __m256i hi0 = _mm256_blend_epi32(_mm256_srli_epi64(p0e, 32), p0o, 0xAA);
    const __m256i lo1 = _mm256_blend_epi32(p1e, _mm256_slli_epi64(p1o, 32), 0xAA);
    const __m256i hi1 = _mm256_blend_epi32(_mm256_srli_epi64(p1e, 32), p1o, 0xAA);
    x = _mm256_xor_si256(_mm256_xor_si256(hi1, y), _mm256_set1_epi32(static_cast<int>(k0)));
    y = lo1;
    z = _mm256_xor_si256(_mm256_xor_si256(hi0, w), _mm256_set1_epi32(static_cast<int>(k1)));
    w = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(b0), x);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(b1), y);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(b2), z);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(b3), w);
}
#endif

// Philox words of a tile's lanes for one 4-channel group: bits[l][i], lane i at counter group
// gbase + i * gstride (kTile is a multiple of 8, so the AVX2 path may fill lanes past n).
GNSM_CPU_INLINE void philox_lanes(int64_t n, uint64_t seed, uint64_t offset, uint64_t gbase, uint64_t gstride,
                                  uint32_t (*bits)[kTile]) {
#if GNSM_CPU_AVX2_PHILOX && !defined(GNSM_CPU_TEST_ISA_BASELINE)
  if (__builtin_cpu_supports("avx2")) {
    for (int64_t i = 0; i < n; i += 8) {
      philox_lanes_avx2(seed, offset, gbase + static_cast<uint64_t>(i) * gstride, gstride, bits[0] + i, bits[1] + i,
                        bits[2] + i, bits[3] + i);
    }
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) {
    const math::U32x4 r = math::philox_block(seed, offset, gbase + static_cast<uint64_t>(i) * gstride);
    bits[0][i] = r.x;
    bits[1][i] = r.y;
    bits[2][i] = r.z;
    bits[3][i] = r.w;
  }
}

// The standard Gumbel noise of every channel of a tile, g[c * kTile + i] (fp32), regenerated from
// (seed, offset): one Philox call gives four consecutive channels of one lane. If e is not null it
// also gets exp(-g) = -log(u), the inner log of the Gumbel transform (same bits as
// math::gumbel_from_uniform on the host), so softmax(-g) = e / sum(e) costs no exp.
GNSM_CPU_INLINE void fill_gumbel(const Tile& t, const Dims& d, uint64_t seed, uint64_t offset, float* g,
                                 float* e = nullptr) {
  const int64_t C = d.channels, S = d.spatial;
  const int64_t groups = (C + 3) / 4;
  for (int64_t cg = 0; cg < groups; ++cg) {
    const int64_t c0 = cg * 4;
    const int64_t lanes = std::min<int64_t>(4, C - c0);
    // Lanes of a tile have evenly spaced counter groups (see philox_group): consecutive positions
    // for spatial tiles, a stride of ceil(C/4) for record tiles.
    const uint64_t gbase = math::philox_group(t.b0, c0, t.s0, C, S);
    const uint64_t gstride = t.records ? static_cast<uint64_t>(groups) : 1u;
    alignas(32) uint32_t bits[4][kTile];
    philox_lanes(t.n, seed, offset, gbase, gstride, bits);
    for (int64_t l = 0; l < lanes; ++l) {
      float* gl = g + (c0 + l) * kTile;
      if (e == nullptr) {
        for (int64_t i = 0; i < t.n; ++i) gl[i] = math::gumbel_from_uniform<float>(math::uniform_open01(bits[l][i]));
      } else {
        float* el = e + (c0 + l) * kTile;
        for (int64_t i = 0; i < t.n; ++i) {
          const float neg_log_u = -math::fast_log(math::uniform_open01(bits[l][i]));
          el[i] = neg_log_u;
          gl[i] = -math::fast_log(neg_log_u);
        }
      }
    }
  }
}

// Copies the tile's channels of a (B, C, S) tensor into a [C][kTile] buffer of the math type. For
// spatial tiles each channel's lanes are contiguous: memcpy when no conversion is needed.
template <typename in_t, typename acc_t>
GNSM_CPU_INLINE void load_tile(const Tile& t, const Dims& d, const in_t* src, acc_t* dst) {
  const int64_t C = d.channels, S = d.spatial, base = t.base(C, S);
  if (t.records) {
    for (int64_t i = 0; i < t.n; ++i) {
      for (int64_t c = 0; c < C; ++c) dst[c * kTile + i] = static_cast<acc_t>(src[base + i * C + c]);
    }
  } else if (std::is_same<in_t, acc_t>::value) {
    for (int64_t c = 0; c < C; ++c) std::memcpy(dst + c * kTile, src + base + c * S, t.n * sizeof(acc_t));
  } else {
    for (int64_t c = 0; c < C; ++c) {
      const in_t* row = src + base + c * S;
      for (int64_t i = 0; i < t.n; ++i) dst[c * kTile + i] = static_cast<acc_t>(row[i]);
    }
  }
}

// The reverse of load_tile: channels [c0, c1) of a [C][kTile] buffer into a (B, C, S) tensor.
template <typename out_t, typename acc_t>
GNSM_CPU_INLINE void store_tile(const Tile& t, const Dims& d, const acc_t* src, out_t* dst, int64_t c0, int64_t c1) {
  const int64_t C = d.channels, S = d.spatial, base = t.base(C, S);
  if (t.records) {
    for (int64_t i = 0; i < t.n; ++i) {
      for (int64_t c = c0; c < c1; ++c) dst[base + i * C + c] = static_cast<out_t>(src[c * kTile + i]);
    }
  } else if (std::is_same<out_t, acc_t>::value) {
    for (int64_t c = c0; c < c1; ++c) std::memcpy(dst + base + c * S, src + c * kTile, t.n * sizeof(acc_t));
  } else {
    for (int64_t c = c0; c < c1; ++c) {
      out_t* row = dst + base + c * S;
      for (int64_t i = 0; i < t.n; ++i) row[i] = static_cast<out_t>(src[c * kTile + i]);
    }
  }
}

// Per-thread scratch of n elements, reused across tiles and calls (no allocation per tile).
template <typename T, int Slot = 0>
GNSM_CPU_INLINE T* scratch(int64_t n) {
  thread_local std::vector<T> buf;
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(n);
  return buf.data();
}

// Host copy of an rng_state tensor (CPU kernels only).
inline void read_state(const at::Tensor& rng_state, uint64_t* seed, uint64_t* offset) {
  const auto st = rng_state.contiguous();
  const int64_t* p = st.data_ptr<int64_t>();
  *seed = static_cast<uint64_t>(p[0]);
  *offset = static_cast<uint64_t>(p[1]);
}

// tau as a contiguous host array of the math type.
template <typename acc_t>
at::Tensor tau_as(const at::Tensor& tau) {
  return tau.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
}

// Per-lane 1/tau and tau of a tile.
template <typename acc_t>
GNSM_CPU_INLINE void lane_tau(const Tile& t, const acc_t* tau, acc_t* tau_lane, acc_t* inv_tau_lane) {
  for (int64_t i = 0; i < t.n; ++i) {
    tau_lane[i] = tau[t.batch_of(i)];
    inv_tau_lane[i] = acc_t(1) / tau_lane[i];
  }
}

// Per-lane log-sum-exp of a field's channels held in a [K][kTile] buffer (two vectorizable passes),
// returned as its two parts: callers form (z - max) - log_sum, never z - (max + log_sum), which
// would round log_sum away when max is large (e.g. bf16 outputs near their largest finite value).
template <typename acc_t>
GNSM_CPU_INLINE void field_lse(const acc_t* z, int64_t K, int64_t n, acc_t* mx, acc_t* log_sum) {
  acc_t sum[kTile];
  for (int64_t i = 0; i < n; ++i) {
    mx[i] = z[i];
    sum[i] = acc_t(0);
  }
  for (int64_t k = 1; k < K; ++k) {
    for (int64_t i = 0; i < n; ++i) mx[i] = std::max(mx[i], z[k * kTile + i]);
  }
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t i = 0; i < n; ++i) sum[i] += math::fast_exp(z[k * kTile + i] - mx[i]);
  }
  for (int64_t i = 0; i < n; ++i) log_sum[i] = math::fast_log(sum[i]);
}

// Per-lane max, 1/sum and e[k][i] = exp(z[k][i] - max[i]) of a field's channels in a [K][kTile] buffer:
// softmax = e / sum with one exp per element.
template <typename acc_t>
GNSM_CPU_INLINE void field_exp_sum(const acc_t* z, int64_t K, int64_t n, acc_t* mx, acc_t* sum, acc_t* e) {
  for (int64_t i = 0; i < n; ++i) {
    mx[i] = z[i];
    sum[i] = acc_t(0);
  }
  for (int64_t k = 1; k < K; ++k) {
    for (int64_t i = 0; i < n; ++i) mx[i] = std::max(mx[i], z[k * kTile + i]);
  }
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t i = 0; i < n; ++i) {
      e[k * kTile + i] = math::fast_exp(z[k * kTile + i] - mx[i]);
      sum[i] += e[k * kTile + i];
    }
  }
}

// Per-lane maximum of a field's channels in a [K][kTile] buffer.
template <typename acc_t>
GNSM_CPU_INLINE void field_max(const acc_t* z, int64_t K, int64_t n, acc_t* mx) {
  for (int64_t i = 0; i < n; ++i) mx[i] = z[i];
  for (int64_t k = 1; k < K; ++k) {
    for (int64_t i = 0; i < n; ++i) mx[i] = std::max(mx[i], z[k * kTile + i]);
  }
}

}  // namespace cpu
}  // namespace gnsm
