// CUDA kernels of gumbel_noise (the fp32 noise an rng_state stands for, bit-identical uniforms to the
// CPU) and target_score, t = tau (K softmax(-g) - 1) per field (DESIGN 1.3), fp32 like the CPU op.
#include <torch/library.h>

#include "ops/cuda/launch.cuh"
#include "ops/target_score.h"

namespace gnsm {
namespace cuda {
namespace {

// One thread per Philox group: thread index == group index (b * G + cg) * S + s, so consecutive threads
// write consecutive positions of the same 4 channels (coalesced).
__global__ void __launch_bounds__(kThreads)
    gumbel_noise_kernel(const int64_t* state, float* g, int64_t groups, int64_t G, int64_t S, int64_t C) {
  const int64_t group = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (group >= groups) return;
  const int64_t s = group % S;
  const int64_t bg = group / S;
  const int64_t cg = bg % G;
  const int64_t b = bg / G;
  float v[4];
  gumbel4(read_seeds(state), static_cast<uint64_t>(group), v);
  float* out = g + (b * C + 4 * cg) * S + s;
#pragma unroll
  for (int l = 0; l < 4; ++l) {
    if (4 * cg + l < C) out[l * S] = v[l];
  }
}

struct TargetParams {
  const float* tau;
  const int64_t* state;
  float* out;
  int64_t positions;
  int64_t S;
  int32_t C;
  DeviceErrors err;  // value checks on the device (device_checks.cuh)
};

template <int N>
__global__ void __launch_bounds__(kThreads)
    target_register_kernel(const TargetParams p, const __grid_constant__ FieldTable ft) {
  const int64_t pi = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (pi >= p.positions) return;
  const Position q = position_of(pi, p.S, p.C);
  const Seeds sd = read_seeds(p.state);
  const float tau = p.tau[q.b];
  p.err.check_tau(tau, q.b);
  const uint64_t g0 = group0_of(q, p.C, p.S);
  float z[N];
#pragma unroll
  for (int cg = 0; cg < N / 4; ++cg) {
    float g[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (4 * cg < p.C) gumbel4(sd, g0 + static_cast<uint64_t>(cg) * p.S, g);
#pragma unroll
    for (int l = 0; l < 4; ++l) z[4 * cg + l] = -g[l];
  }
  for (int j = 0; j < ft.num_fields; ++j) {
    const int o = ft.offset(j), e = ft.offset(j + 1);
    const FieldLse<float> lse = field_lse<N>(z, o, e);
    const float K = static_cast<float>(e - o);
#pragma unroll
    for (int c = 0; c < N; ++c) {
      if (c >= o && c < e) z[c] = math::score_from_prob(math::fast_exp(lse.log_prob(z[c])), K, tau);
    }
  }
  FloatRef{p.out, kF32}.store_row<N>(z, q.base, p.S, p.C);
}

template <int T>
__global__ void __launch_bounds__(kThreads)
    target_generic_kernel(const TargetParams p, const __grid_constant__ FieldTable ft) {
  const int64_t pi = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / T;
  const int lane = static_cast<int>(threadIdx.x % T);
  if (pi >= p.positions) return;
  const Position q = position_of(pi, p.S, p.C);
  const Seeds sd = read_seeds(p.state);
  const float tau = p.tau[q.b];
  if (lane == 0) p.err.check_tau(tau, q.b);
  const uint64_t g0 = group0_of(q, p.C, p.S);
  for (int j = 0; j < ft.num_fields; ++j) {
    const int o = ft.offset(j), e = ft.offset(j + 1);
    TeamLse<float> st;
    for (int cg = (o >> 2) + lane; 4 * cg < e; cg += T) {
      float g[4];
      gumbel4(sd, g0 + static_cast<uint64_t>(cg) * p.S, g);
#pragma unroll
      for (int l = 0; l < 4; ++l) {
        const int c = 4 * cg + l;
        if (c >= o && c < e) st.add(-g[l]);
      }
    }
    const FieldLse<float> lse = st.template team_value<T>();
    const float K = static_cast<float>(e - o);
    for (int cg = (o >> 2) + lane; 4 * cg < e; cg += T) {
      float g[4];
      gumbel4(sd, g0 + static_cast<uint64_t>(cg) * p.S, g);
#pragma unroll
      for (int l = 0; l < 4; ++l) {
        const int c = 4 * cg + l;
        if (c >= o && c < e) {
          p.out[q.base + static_cast<int64_t>(c) * p.S] = math::score_from_prob(math::fast_exp(lse.log_prob(-g[l])), K, tau);
        }
      }
    }
  }
}

at::Tensor gumbel_noise_cuda(const at::Tensor& rng_state, c10::SymIntArrayRef sym_shape) {
  raise_device_error();
  const auto shape = C10_AS_INTARRAYREF_SLOW(sym_shape);
  const NoiseArgs args = check_gumbel_noise(rng_state, shape);
  const c10::cuda::CUDAGuard guard(rng_state.device());
  at::Tensor g = at::empty(shape, rng_state.options().dtype(at::kFloat));
  const Dims& d = args.dims;
  const int64_t G = (d.channels + 3) / 4;
  const int64_t groups = d.batch * G * d.spatial;
  if (groups == 0) return g;
  const at::Tensor state = rng_state.contiguous();
  gumbel_noise_kernel<<<blocks_for(groups, kThreads), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      state.data_ptr<int64_t>(), g.data_ptr<float>(), groups, G, d.spatial, d.channels);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return g;
}

at::Tensor target_score_cuda(const at::Tensor& rng_state, c10::SymIntArrayRef sym_shape, at::IntArrayRef field_sizes,
                             const at::Tensor& tau) {
  raise_device_error();
  const auto shape = C10_AS_INTARRAYREF_SLOW(sym_shape);
  const NoiseArgs args = check_target_score(rng_state, shape, field_sizes, tau);
  const c10::cuda::CUDAGuard guard(rng_state.device());
  at::Tensor out = at::empty(shape, rng_state.options().dtype(at::kFloat));
  const Dims& d = args.dims;
  TargetParams p{};
  p.positions = d.batch * d.spatial;
  if (p.positions == 0) return out;
  const at::Tensor tau_f = tau.to(at::kFloat).contiguous();
  const at::Tensor state = rng_state.contiguous();
  at::Tensor keep;
  const FieldTable ft = make_field_table(args.layout, rng_state.device(), &keep);
  p.tau = tau_f.data_ptr<float>();
  p.err = device_errors();
  p.state = state.data_ptr<int64_t>();
  p.out = out.data_ptr<float>();
  p.S = d.spatial;
  p.C = static_cast<int32_t>(d.channels);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int width = register_width(p.C);
  if (width > 0) {
    dispatch_width(width, [&](auto n) {
      target_register_kernel<decltype(n)::value><<<blocks_for(p.positions, kThreads), kThreads, 0, stream>>>(p, ft);
    });
  } else if (p.S == 1) {
    target_generic_kernel<32><<<blocks_for(p.positions, kThreads / 32), kThreads, 0, stream>>>(p, ft);
  } else {
    target_generic_kernel<1><<<blocks_for(p.positions, kThreads), kThreads, 0, stream>>>(p, ft);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(gnsm, CUDA, m) {
  m.impl("gumbel_noise", &gumbel_noise_cuda);
  m.impl("target_score", &target_score_cuda);
}

}  // namespace cuda
}  // namespace gnsm
