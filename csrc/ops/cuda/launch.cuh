// Launch helpers shared by the CUDA kernels (CUDA-only; the math itself is in utils/gnsm_math.h).
//
// Two kernel shapes cover every op:
//  * register path (C <= 64, float/half/bfloat16 storage): one thread per position (b, s); all C channels of
//    the position live in a register array of compile-time size N in {8, 16, 32, 64}; fields are handled by a
//    runtime loop over j with fully unrolled, predicated loops over the channels, so every array index is a
//    compile-time constant and nothing spills. Consecutive threads take consecutive positions, so for
//    spatial data each channel's loads and stores coalesce.
//  * generic path (C > 64 or float64): a team of T threads per position (T = 1 for spatial data, T = 32 for
//    tabular data, S == 1, where a record's channels are contiguous). Per field, each team thread walks the
//    field's 4-channel Philox groups lane, lane + T, ... in two or three passes (statistics, then output),
//    regenerating the noise and re-reading the input instead of storing them; the team combines its
//    partial max / sum-of-exp with warp shuffles.
// Fields are passed as a __grid_constant__ kernel argument (channel offsets), so no host-to-device copy
// happens at launch (CUDA-graph safe) for up to kMaxInlineFields fields.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "ops/cuda/device_checks.cuh"
#include "utils/checks.h"
#include "utils/gnsm_math.h"

namespace gnsm {
namespace cuda {

constexpr int kMaxInlineFields = 500;
constexpr int kThreads = 128;        // threads per block of every position kernel
constexpr int kMaxRegisterChannels = 64;

// Channel offsets of the fields: offset(j) = K_0 + ... + K_{j-1}, offset(J) = C.
struct FieldTable {
  int32_t num_fields = 0;
  const int32_t* device_offsets = nullptr;  // only when num_fields > kMaxInlineFields
  int32_t offsets[kMaxInlineFields + 1] = {};
  __device__ __forceinline__ int32_t offset(int j) const {
    return device_offsets != nullptr ? device_offsets[j] : offsets[j];
  }
};

// Builds the table; for more than kMaxInlineFields fields the offsets go to a device tensor that `keep`
// holds alive until the launch (that copy is not capturable in a CUDA graph).
inline FieldTable make_field_table(const FieldLayout& layout, const at::Device& device, at::Tensor* keep) {
  FieldTable t;
  const int64_t J = layout.num_fields();
  TORCH_CHECK_VALUE(layout.channels < (int64_t{1} << 30), "field_sizes: expected fewer than 2^30 classes in all, got ",
                    layout.channels);
  t.num_fields = static_cast<int32_t>(J);
  if (J <= kMaxInlineFields) {
    for (int64_t j = 0; j <= J; ++j) t.offsets[j] = static_cast<int32_t>(layout.offsets[j]);
  } else {
    std::vector<int32_t> off(layout.offsets.begin(), layout.offsets.end());
    *keep = at::tensor(off, at::TensorOptions().dtype(at::kInt)).to(device);
    t.device_offsets = keep->data_ptr<int32_t>();
  }
  return t;
}

// Register-array size for C channels (0: use the generic path).
inline int register_width(int64_t C) {
  return C <= 8 ? 8 : C <= 16 ? 16 : C <= 32 ? 32 : C <= 64 ? 64 : 0;
}

// Calls f(std::integral_constant<int, N>) for the register width of C.
template <typename F>
void dispatch_width(int width, F&& f) {
  switch (width) {
    case 8: f(std::integral_constant<int, 8>{}); break;
    case 16: f(std::integral_constant<int, 16>{}); break;
    case 32: f(std::integral_constant<int, 32>{}); break;
    default: f(std::integral_constant<int, 64>{}); break;
  }
}

inline int64_t blocks_for(int64_t work, int64_t per_block) { return (work + per_block - 1) / per_block; }

// ---- device helpers ---------------------------------------------------------------------------

struct Seeds {
  uint64_t seed, offset;
};

// The state lives on the device (CUDA graphs replay it): every thread reads the same two words.
__device__ __forceinline__ Seeds read_seeds(const int64_t* state) {
  return Seeds{static_cast<uint64_t>(__ldg(state)), static_cast<uint64_t>(__ldg(state + 1))};
}

// g = -log(-log(u)) on the device: the shared math::gumbel_from_uniform (accurate near u -> 1 via log1p).
__device__ __forceinline__ float gumbel_from_uniform_device(float u) { return math::gumbel_from_uniform<float>(u); }

// The standard Gumbel noise of the 4 channels of one Philox group (fp32; the uniforms are bit-identical
// to the CPU's, see math::uniform_open01).
__device__ __forceinline__ void gumbel4(const Seeds& sd, uint64_t group, float (&g)[4]) {
  const math::U32x4 r = math::philox_block(sd.seed, sd.offset, group);
  g[0] = gumbel_from_uniform_device(math::uniform_open01(r.x));
  g[1] = gumbel_from_uniform_device(math::uniform_open01(r.y));
  g[2] = gumbel_from_uniform_device(math::uniform_open01(r.z));
  g[3] = gumbel_from_uniform_device(math::uniform_open01(r.w));
}

// A label of any integer storage type (uint8/int16/int32/int64), selected at run time: labels are read
// once per (position, field), so a uniform branch is cheaper than four template instantiations.
struct LabelPtr {
  const void* data;
  int elem_size;  // 1 (uint8), 2, 4 or 8 bytes (signed)
  __device__ __forceinline__ int64_t operator[](int64_t i) const {
    switch (elem_size) {
      case 1: return static_cast<int64_t>(__ldg(static_cast<const uint8_t*>(data) + i));
      case 2: return static_cast<int64_t>(__ldg(static_cast<const int16_t*>(data) + i));
      case 4: return static_cast<int64_t>(__ldg(static_cast<const int32_t*>(data) + i));
      default: return static_cast<int64_t>(__ldg(static_cast<const long long*>(data) + i));
    }
  }
};

// A float tensor of any storage dtype (float32/float64/float16/bfloat16), selected at run time: the math
// type (float or double) is the only template parameter of the kernels, which keeps the number of
// instantiations small; the branch is uniform across the grid.
enum StorageCode : int { kF32 = 0, kF64 = 1, kF16 = 2, kBF16 = 3 };

inline int storage_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return kF32;
    case at::kDouble: return kF64;
    case at::kHalf: return kF16;
    case at::kBFloat16: return kBF16;
    default: TORCH_CHECK_TYPE(false, "gnsm: unsupported float storage dtype ", t); return kF32;
  }
}

struct FloatRef {
  void* data;
  int code;

  template <typename acc_t>
  __device__ __forceinline__ acc_t load(int64_t i) const {
    switch (code) {
      case kF32: return static_cast<acc_t>(__ldg(static_cast<const float*>(data) + i));
      case kF64: return static_cast<acc_t>(__ldg(static_cast<const double*>(data) + i));
      case kF16: return static_cast<acc_t>(static_cast<float>(static_cast<const c10::Half*>(data)[i]));
      default: return static_cast<acc_t>(static_cast<float>(static_cast<const c10::BFloat16*>(data)[i]));
    }
  }

  template <typename acc_t>
  __device__ __forceinline__ void store(int64_t i, acc_t v) const {
    switch (code) {
      case kF32: static_cast<float*>(data)[i] = static_cast<float>(v); break;
      case kF64: static_cast<double*>(data)[i] = static_cast<double>(v); break;
      case kF16: static_cast<c10::Half*>(data)[i] = c10::Half(static_cast<float>(v)); break;
      default: static_cast<c10::BFloat16*>(data)[i] = c10::BFloat16(static_cast<float>(v)); break;
    }
  }

  // Channels c < C of one position (element base + c * stride) into / out of a register array; the
  // dtype switch sits outside the unrolled loops so all C loads (stores) of a thread are in flight at once.
  template <int N, typename T>
  __device__ __forceinline__ static void load_row_as(const T* p, float (&a)[N], int64_t base, int64_t stride, int C) {
#pragma unroll
    for (int c = 0; c < N; ++c) {
      if (c < C) a[c] = static_cast<float>(p[base + c * stride]);
    }
  }
  template <int N>
  __device__ __forceinline__ void load_row(float (&a)[N], int64_t base, int64_t stride, int C) const {
    switch (code) {
      case kF32: load_row_as<N>(static_cast<const float*>(data), a, base, stride, C); break;
      case kF64: load_row_as<N>(static_cast<const double*>(data), a, base, stride, C); break;
      case kF16: load_row_as<N>(static_cast<const c10::Half*>(data), a, base, stride, C); break;
      default: load_row_as<N>(static_cast<const c10::BFloat16*>(data), a, base, stride, C); break;
    }
  }
  template <int N, typename T>
  __device__ __forceinline__ static void store_row_as(T* p, const float (&a)[N], int64_t base, int64_t stride, int C) {
#pragma unroll
    for (int c = 0; c < N; ++c) {
      if (c < C) p[base + c * stride] = static_cast<T>(a[c]);
    }
  }
  template <int N>
  __device__ __forceinline__ void store_row(const float (&a)[N], int64_t base, int64_t stride, int C) const {
    switch (code) {
      case kF32: store_row_as<N>(static_cast<float*>(data), a, base, stride, C); break;
      case kF64: store_row_as<N>(static_cast<double*>(data), a, base, stride, C); break;
      case kF16: store_row_as<N>(static_cast<c10::Half*>(data), a, base, stride, C); break;
      default: store_row_as<N>(static_cast<c10::BFloat16*>(data), a, base, stride, C); break;
    }
  }
};

inline FloatRef float_ref(const at::Tensor& t) { return FloatRef{t.data_ptr(), storage_code(t.scalar_type())}; }

// Log-normalizer of a field kept as (max, log sum exp(z - max)): the log-probability of z is formed
// as (z - max) - log_sum, exact in its first step. Forming z - (max + log_sum) instead rounds
// max + log_sum at the scale of max and loses log_sum entirely for large logits (bf16-max logits gave
// relax 0 instead of -log 4).
template <typename acc_t>
struct FieldLse {
  acc_t max;
  acc_t log_sum;
  __device__ __forceinline__ acc_t log_prob(acc_t z) const { return (z - max) - log_sum; }
};

// Per-field log-normalizer of a register row (fields are runtime ranges, channels compile-time).
// A NaN or inf in the field poisons it: log_sum is NaN, so every log-probability, loss term and gradient
// of that field at that position is NaN (never a finite number: fmaxf drops a NaN and a -inf logit
// would give a finite loss), like the CPU backend's non_finite_positions.
template <int N>
__device__ __forceinline__ FieldLse<float> field_lse(const float (&z)[N], int o, int e) {
  float m = -INFINITY;
  bool finite = true;
#pragma unroll
  for (int c = 0; c < N; ++c) {
    if (c >= o && c < e) {
      m = fmaxf(m, z[c]);
      finite = finite && isfinite(z[c]);
    }
  }
  float sum = 0.0f;
#pragma unroll
  for (int c = 0; c < N; ++c) {
    if (c >= o && c < e) sum += math::fast_exp(z[c] - m);
  }
  return FieldLse<float>{m, finite ? math::fast_log(sum) : NAN};
}

// Per-field max of a register row.
template <int N>
__device__ __forceinline__ float field_max(const float (&z)[N], int o, int e) {
  float m = -INFINITY;
#pragma unroll
  for (int c = 0; c < N; ++c) {
    if (c >= o && c < e) m = fmaxf(m, z[c]);
  }
  return m;
}

// Online max / sum-of-exp of a team of T threads (T = 1 or 32): merges the per-thread accumulators.
// With scale s != 1 it accumulates sum exp(s (v - max)) over unscaled values v, the log-normalizer of
// s v whose max is taken before scaling (relax_from_logits: huge logits at a small tau stay finite).
// A non-finite value poisons the result like field_lse (log_sum NaN), merged over the team.
template <typename acc_t>
struct TeamLse {
  acc_t max = -INFINITY;
  acc_t sum = acc_t(0);
  acc_t scale = acc_t(1);
  int finite = 1;
  __device__ __forceinline__ void add(acc_t v) {
    finite &= isfinite(v) ? 1 : 0;
    if (v > max) {
      sum = sum * math::fast_exp((max - v) * scale) + acc_t(1);
      max = v;
    } else {
      sum += math::fast_exp((v - max) * scale);
    }
  }
  __device__ __forceinline__ void merge(acc_t m2, acc_t s2) {
    const acc_t m = max > m2 ? max : m2;
    if (m == -INFINITY) return;  // both empty
    sum = sum * math::fast_exp((max - m) * scale) + s2 * math::fast_exp((m2 - m) * scale);
    max = m;
  }
  template <int T>
  __device__ __forceinline__ FieldLse<acc_t> team_value() {
    if constexpr (T > 1) {
#pragma unroll
      for (int d = T / 2; d > 0; d /= 2) {
        const acc_t m2 = __shfl_xor_sync(0xffffffffu, max, d, T);
        const acc_t s2 = __shfl_xor_sync(0xffffffffu, sum, d, T);
        finite &= __shfl_xor_sync(0xffffffffu, finite, d, T);
        merge(m2, s2);
      }
    }
    return FieldLse<acc_t>{max, finite ? math::fast_log(sum) : static_cast<acc_t>(NAN)};
  }
};

// Max over a team of T threads.
template <int T, typename acc_t>
__device__ __forceinline__ acc_t team_max(acc_t v) {
  if constexpr (T > 1) {
#pragma unroll
    for (int d = T / 2; d > 0; d /= 2) {
      const acc_t o = __shfl_xor_sync(0xffffffffu, v, d, T);
      v = o > v ? o : v;
    }
  }
  return v;
}

template <int T, typename acc_t>
__device__ __forceinline__ acc_t team_sum(acc_t v) {
  if constexpr (T > 1) {
#pragma unroll
    for (int d = T / 2; d > 0; d /= 2) v += __shfl_xor_sync(0xffffffffu, v, d, T);
  }
  return v;
}

// Position of a team: (b, s) and the flat index of channel 0 (stride S between channels).
struct Position {
  int64_t b, s, base;
};

__device__ __forceinline__ Position position_of(int64_t p, int64_t S, int64_t C) {
  Position q;
  q.b = p / S;
  q.s = p - q.b * S;
  q.base = q.b * C * S + q.s;
  return q;
}

// Philox group of channel 4*cg of position (b, s) is group0 + cg * S (see math::philox_group).
__device__ __forceinline__ uint64_t group0_of(const Position& q, int64_t C, int64_t S) {
  return math::philox_group(q.b, 0, q.s, C, S);
}

// Block-wide sum of one double per thread, written by thread 0 to out[blockIdx.x] (fixed order:
// deterministic for a given launch configuration).
__device__ __forceinline__ void block_sum_to(double v, double* out) {
  __shared__ double warp_sums[kThreads / 32];
#pragma unroll
  for (int d = 16; d > 0; d /= 2) v += __shfl_xor_sync(0xffffffffu, v, d);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
    out[blockIdx.x] = total;
  }
}

}  // namespace cuda
}  // namespace gnsm
