// The math that the CPU and CUDA kernels share, written once for both
// (`__host__ __device__` inline functions) so the two backends cannot drift apart.
//
// Randomness: Philox-4x32-10 (Salmon et al. 2011), keyed by the 64-bit seed of an rng_state and
// counted by (group, offset). One Philox call yields four uniforms for four consecutive channels of
// one position. The element -> counter mapping depends only on the element's coordinates, never on
// the thread count, chunk size or CUDA block size:
//   element (b, c, s) of a (B, C, S) tensor   ->   group = (b * ceil(C/4) + c/4) * S + s,  lane = c % 4
//   counter = (lo32(group), hi32(group), lo32(offset), hi32(offset)),  key = (lo32(seed), hi32(seed))
// Uniforms are ((x >> 9) + 0.5) * 2^-23, exactly representable in fp32 and strictly inside (0, 1), so
// the Gumbel transform -log(-log(u)) needs no guard and both backends produce bit-identical uniforms.
#pragma once

#include <cstdint>
#include <cstring>
#include <cmath>

// Host compilers inline everything here by force: the CPU kernels call these helpers from functions
// compiled once per instruction set (GCC target_clones), and a helper left out of line would run the
// baseline code even from the AVX2 clone.
// GNSM_DEVICE_MATH: the device branch of the functions below (the GPU's approximate units). Also taken
// by the host build of the CUDA kernels under emulation (tests/cuda_emulation), so that it computes what
// the GPU computes.
#if defined(__CUDA_ARCH__) || defined(GNSM_CUDA_EMULATION)
#define GNSM_DEVICE_MATH 1
#endif

#if defined(__CUDACC__) || defined(__HIPCC__)
#define GNSM_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define GNSM_HD inline __attribute__((always_inline))
#else
#define GNSM_HD inline
#endif

namespace gnsm {
namespace math {

// log(1e-5): the class logit of a non-true class after clipping the one-hot (DESIGN 1.1).
constexpr float kDefaultEps = 1e-5f;

struct U32x4 {
  uint32_t x, y, z, w;
};

GNSM_HD uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

// Philox-4x32 with 10 rounds (the Random123 constants, as in curand and PyTorch).
GNSM_HD U32x4 philox4x32_10(U32x4 ctr, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo32(kM0, ctr.x, &hi0);
    const uint32_t lo1 = mulhilo32(kM1, ctr.z, &hi1);
    ctr = U32x4{hi1 ^ ctr.y ^ k0, lo1, hi0 ^ ctr.w ^ k1, lo0};
    k0 += kW0;
    k1 += kW1;
  }
  return ctr;
}

// Counter group of (b, c, s) in a (B, C, S) layout; see the file comment.
GNSM_HD uint64_t philox_group(int64_t b, int64_t c, int64_t s, int64_t C, int64_t S) {
  const int64_t groups_per_position = (C + 3) / 4;
  return static_cast<uint64_t>((b * groups_per_position + (c >> 2)) * S + s);
}

GNSM_HD U32x4 philox_block(uint64_t seed, uint64_t offset, uint64_t group) {
  const U32x4 ctr{static_cast<uint32_t>(group), static_cast<uint32_t>(group >> 32),
                  static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32)};
  return philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

GNSM_HD uint32_t lane_of(const U32x4& r, int lane) {
  return lane == 0 ? r.x : (lane == 1 ? r.y : (lane == 2 ? r.z : r.w));
}

// Uniform strictly inside (0, 1): 23 random bits, centred in their bin.
GNSM_HD float uniform_open01(uint32_t bits) {
  return (static_cast<float>(bits >> 9) + 0.5f) * 1.1920928955078125e-07f;  // 2^-23
}

// ---- fast elementary functions ----------------------------------------------------------------
// On the GPU the special-function units (lg2/ex2 approx, ~2 ulp) keep the kernels memory-bound.
// On the CPU, branch-free Cephes-style polynomials (~1 ulp) that compilers vectorize, unlike libm calls
// (the CPU sources are built with -fno-trapping-math so the clamps become vector min/max).

GNSM_HD float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

GNSM_HD uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

// Natural log for finite x > 0 (normal range); callers never pass anything else.
GNSM_HD float fast_log(float x) {
#if defined(GNSM_DEVICE_MATH)
  return __logf(x);
#else
  const uint32_t bits = float_to_bits(x);
  float e = static_cast<float>(static_cast<int32_t>((bits >> 23) & 0xffu) - 126);
  float m = bits_to_float((bits & 0x807fffffu) | 0x3f000000u);  // mantissa in [0.5, 1)
  // Branch-free (so loops over it vectorize): if m < sqrt(1/2) then e -= 1, m = 2m - 1, else m = m - 1.
  const uint32_t small = 0u - static_cast<uint32_t>(m < 0.707106781186547524f);
  e -= bits_to_float(float_to_bits(1.0f) & small);
  m = m - 1.0f + bits_to_float(float_to_bits(m) & small);
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return m + y + 0.693359375f * e;
#endif
}

// exp(x); inputs below -87 flush towards 0 (1e-38), above 88 saturate: softmax sums only need that.
GNSM_HD float fast_exp(float x) {
#if defined(GNSM_DEVICE_MATH)
  return __expf(x);
#else
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  // n = round(x / ln 2) by adding 1.5 * 2^23: the sum's low mantissa bits are n (two's complement),
  // which also builds 2^n below without float -> int conversions.
  const float t = x * 1.44269504088896341f + 12582912.0f;
  const float n = t - 12582912.0f;
  x = x - n * 0.693359375f + n * 2.12194440e-4f;
  const float z = x * x;
  float y = 1.9875691500e-4f;
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * z + x + 1.0f;
  const uint32_t scale = (float_to_bits(t) + 127u) << 23;  // (n + 127) << 23, n in [-126, 127]
  return y * bits_to_float(scale);
#endif
}

// Double-precision storage (gradcheck) keeps double math.
GNSM_HD double fast_log(double x) { return ::log(x); }
GNSM_HD double fast_exp(double x) { return ::exp(x); }

// Standard Gumbel draw from one uniform: g = -log(-log(u)).
template <typename T>
GNSM_HD T gumbel_from_uniform(float u) {
#if defined(GNSM_DEVICE_MATH)
  // __logf's error is absolute (2^-21.4) on [0.5, 2], as large as -log(u) itself when u -> 1; there
  // -log(u) = -log1p(u - 1) with u - 1 exact (Sterbenz) keeps it relative.
  const float neg_log_u = u >= 0.5f ? -log1pf(u - 1.0f) : -fast_log(u);
  return static_cast<T>(-fast_log(neg_log_u));
#else
  return -fast_log(-fast_log(static_cast<T>(u)));
#endif
}

// Class logit of class c for a hard label: 0 for the true class, log(eps) otherwise (DESIGN 1.1).
template <typename T>
GNSM_HD T label_logit(int64_t label, int64_t c, T log_eps) {
  return label == c ? T(0) : log_eps;
}

// ---- per-field statistics --------------------------------------------------------------------
// Online max / sum-of-exp accumulator: logsumexp in one pass over a field's classes.
template <typename T>
struct LogSumExp {
  T max = -INFINITY;
  T sum = T(0);
  GNSM_HD void add(T v) {
    if (v > max) {
      sum = sum * fast_exp(max - v) + T(1);
      max = v;
    } else {
      sum += fast_exp(v - max);
    }
  }
  GNSM_HD T value() const { return max + fast_log(sum); }
};

// Score of a field at temperature tau from its softmax probability p of class k: tau * (K p - 1).
template <typename T>
GNSM_HD T score_from_prob(T p, T K, T tau) {
  return tau * (K * p - T(1));
}

// KL(q || p) term of one class, with log q and log p given: q (log q - log p).
template <typename T>
GNSM_HD T kl_term(T log_q, T log_p) {
  return fast_exp(log_q) * (log_q - log_p);
}

}  // namespace math
}  // namespace gnsm
