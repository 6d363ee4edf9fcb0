// CUDA kernel of score_norms: per (field, position) the sum over classes of s^2 with
// s = tau (K softmax(l) - 1) (never materialized), then square roots; the per-record norm sums the
// squares first. Same math as cpu/score_norms_kernel.cpp; one read of l, one write of (B, J, *spatial).
#include <torch/library.h>

#include "ops/cuda/launch.cuh"
#include "ops/score_norms.h"

namespace gnsm {
namespace cuda {
namespace {

struct NormParams {
  FloatRef l;        // (B, C, S)
  const void* tau;   // (B,), math type
  void* sq;          // (B, J, S), math type
  int64_t positions;
  int64_t S;
  int32_t C;
  DeviceErrors err;  // value checks on the device (device_checks.cuh)
};

template <int N>
__global__ void __launch_bounds__(kThreads)
    norms_register_kernel(const NormParams p, const __grid_constant__ FieldTable ft) {
  const int64_t pi = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (pi >= p.positions) return;
  const Position q = position_of(pi, p.S, p.C);
  const float tau = static_cast<const float*>(p.tau)[q.b];
  p.err.check_tau(tau, q.b);
  float z[N];
#pragma unroll
  for (int c = 0; c < N; ++c) z[c] = 0.0f;
  p.l.load_row<N>(z, q.base, p.S, p.C);
  const int J = ft.num_fields;
  for (int j = 0; j < J; ++j) {
    const int o = ft.offset(j), e = ft.offset(j + 1);
    const float K = static_cast<float>(e - o);
    const FieldLse<float> lse = field_lse<N>(z, o, e);
    float acc = 0.0f;
#pragma unroll
    for (int c = 0; c < N; ++c) {
      if (c >= o && c < e) {
        const float s = math::score_from_prob(math::fast_exp(lse.log_prob(z[c])), K, tau);
        acc += s * s;
      }
    }
    static_cast<float*>(p.sq)[(q.b * J + j) * p.S + q.s] = acc;
  }
}

template <typename acc_t, int T>
__global__ void __launch_bounds__(kThreads)
    norms_generic_kernel(const NormParams p, const __grid_constant__ FieldTable ft) {
  const int64_t pi = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / T;
  const int lane = static_cast<int>(threadIdx.x % T);
  if (pi >= p.positions) return;  // whole teams leave together
  const Position q = position_of(pi, p.S, p.C);
  const acc_t tau = static_cast<const acc_t*>(p.tau)[q.b];
  if (lane == 0) p.err.check_tau(tau, q.b);
  const int J = ft.num_fields;
  for (int j = 0; j < J; ++j) {
    const int o = ft.offset(j), e = ft.offset(j + 1);
    const acc_t K = static_cast<acc_t>(e - o);
    TeamLse<acc_t> st;
    for (int c = o + lane; c < e; c += T) st.add(p.l.load<acc_t>(q.base + static_cast<int64_t>(c) * p.S));
    const FieldLse<acc_t> lse = st.template team_value<T>();
    acc_t acc = acc_t(0);
    for (int c = o + lane; c < e; c += T) {
      const acc_t s = math::score_from_prob(math::fast_exp(lse.log_prob(p.l.load<acc_t>(q.base + static_cast<int64_t>(c) * p.S))),
                                            K, tau);
      acc += s * s;
    }
    acc = team_sum<T>(acc);
    if (lane == 0) static_cast<acc_t*>(p.sq)[(q.b * J + j) * p.S + q.s] = acc;
  }
}

std::tuple<at::Tensor, at::Tensor> score_norms_cuda(const at::Tensor& output_in, at::IntArrayRef field_sizes,
                                                    const at::Tensor& tau) {
  raise_device_error();
  const NormArgs args = check_score_norms(output_in, field_sizes, tau);
  const c10::cuda::CUDAGuard guard(output_in.device());
  const at::Tensor output = output_in.contiguous();
  std::vector<int64_t> shape(output.sizes().begin(), output.sizes().end());
  shape[1] = args.layout.num_fields();
  const bool double_math = output.scalar_type() == at::kDouble;
  const auto acc_type = double_math ? at::kDouble : at::kFloat;
  at::Tensor sq = at::empty(shape, output.options().dtype(acc_type));
  NormParams p{};
  p.positions = args.dims.batch * args.dims.spatial;
  if (p.positions > 0) {
    const at::Tensor tau_acc = tau.to(acc_type).contiguous();
    at::Tensor keep;
    const FieldTable ft = make_field_table(args.layout, output.device(), &keep);
    p.l = float_ref(output);
    p.tau = tau_acc.data_ptr();
    p.err = device_errors();
    p.sq = sq.data_ptr();
    p.S = args.dims.spatial;
    p.C = static_cast<int32_t>(args.dims.channels);
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const int width = double_math ? 0 : register_width(p.C);
    if (width > 0) {
      dispatch_width(width, [&](auto n) {
        norms_register_kernel<decltype(n)::value><<<blocks_for(p.positions, kThreads), kThreads, 0, stream>>>(p, ft);
      });
    } else if (p.S == 1) {
      const int64_t blocks = blocks_for(p.positions, kThreads / 32);
      if (double_math) {
        norms_generic_kernel<double, 32><<<blocks, kThreads, 0, stream>>>(p, ft);
      } else {
        norms_generic_kernel<float, 32><<<blocks, kThreads, 0, stream>>>(p, ft);
      }
    } else {
      const int64_t blocks = blocks_for(p.positions, kThreads);
      if (double_math) {
        norms_generic_kernel<double, 1><<<blocks, kThreads, 0, stream>>>(p, ft);
      } else {
        norms_generic_kernel<float, 1><<<blocks, kThreads, 0, stream>>>(p, ft);
      }
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  at::Tensor per_record = sq.flatten(1).sum(1).sqrt_();
  return {per_record, sq.sqrt_()};
}

}  // namespace

TORCH_LIBRARY_IMPL(gnsm, CUDA, m) {
  m.impl("score_norms", &score_norms_cuda);
}

}  // namespace cuda
}  // namespace gnsm
