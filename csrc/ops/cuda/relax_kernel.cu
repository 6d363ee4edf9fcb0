// CUDA kernels of relax_from_labels and relax_from_logits (DESIGN 1.2): per position and field,
// regenerate the Gumbel noise from the device-side rng_state, form z = (a + g) / tau and write
// y = (z - max z) - log sum exp(z - max z). Hard labels become class logits on the fly (0 for the true class, log(eps)
// otherwise): no one-hot, no temporary. Same math and same Philox counters as cpu/relax_kernel.cpp;
// launch shapes in launch.cuh.
#include <torch/library.h>

#include <cmath>

#include "ops/cuda/launch.cuh"
#include "ops/relax.h"

namespace gnsm {
namespace cuda {
namespace {

struct RelaxParams {
  LabelPtr labels;     // relax_from_labels: (B, J, S)
  FloatRef logits;     // relax_from_logits: (B, C, S)
  FloatRef y;          // (B, C, S)
  const void* tau;     // (B,), math type
  const int64_t* state;
  int64_t positions;   // B * S
  int64_t S;
  int32_t C;
  double log_eps;
  DeviceErrors err;   // value checks on the device (device_checks.cuh)
};

// Register path: one thread per position, C <= N <= 64 channels in registers, float math.
template <int N, bool kLabels>
__global__ void __launch_bounds__(kThreads)
    relax_register_kernel(const RelaxParams p, const __grid_constant__ FieldTable ft) {
  const int64_t pi = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (pi >= p.positions) return;
  const Position q = position_of(pi, p.S, p.C);
  const Seeds sd = read_seeds(p.state);
  const float tau = static_cast<const float*>(p.tau)[q.b];
  p.err.check_tau(tau, q.b);
  const float inv_tau = 1.0f / tau;
  const uint64_t g0 = group0_of(q, p.C, p.S);
  float z[N];
#pragma unroll
  for (int cg = 0; cg < N / 4; ++cg) {
    float g[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (4 * cg < p.C) gumbel4(sd, g0 + static_cast<uint64_t>(cg) * p.S, g);
#pragma unroll
    for (int l = 0; l < 4; ++l) z[4 * cg + l] = g[l];
  }
  const int J = ft.num_fields;
  if constexpr (kLabels) {
    const float log_eps = static_cast<float>(p.log_eps);
    for (int j = 0; j < J; ++j) {
      const int o = ft.offset(j), e = ft.offset(j + 1);
      const int64_t label = p.labels[(q.b * J + j) * p.S + q.s];
      p.err.check_label(label, e - o, q.b, j, q.s);
#pragma unroll
      for (int c = 0; c < N; ++c) {
        if (c >= o && c < e) z[c] = (math::label_logit<float>(label, c - o, log_eps) + z[c]) * inv_tau;
      }
    }
  } else {
    float a[N];
    p.logits.load_row<N>(a, q.base, p.S, p.C);
#pragma unroll
    for (int c = 0; c < N; ++c) {
      if (c < p.C) {
        p.err.check_logit(a[c], q.b, c, q.s);
        z[c] = a[c] + z[c];
      }
    }
    // Each field's max of a + g is subtracted before scaling by 1 / tau (as on the CPU): bf16-max logits
    // at tau = 0.01 would otherwise overflow to inf.
    for (int j = 0; j < J; ++j) {
      const int o = ft.offset(j), e = ft.offset(j + 1);
      const float m = field_max<N>(z, o, e);
#pragma unroll
      for (int c = 0; c < N; ++c) {
        if (c >= o && c < e) z[c] = (z[c] - m) * inv_tau;
      }
    }
  }
  for (int j = 0; j < J; ++j) {
    const int o = ft.offset(j), e = ft.offset(j + 1);
    const FieldLse<float> lse = field_lse<N>(z, o, e);
#pragma unroll
    for (int c = 0; c < N; ++c) {
      if (c >= o && c < e) z[c] = lse.log_prob(z[c]);
    }
  }
  p.y.store_row<N>(z, q.base, p.S, p.C);
}

// Generic path: a team of T threads per position (T = 1 spatial, T = 32 tabular); per field a statistics
// pass and an output pass over the field's Philox groups, regenerating the noise in the second pass.
template <typename acc_t, int T, bool kLabels>
__global__ void __launch_bounds__(kThreads)
    relax_generic_kernel(const RelaxParams p, const __grid_constant__ FieldTable ft) {
  const int64_t pi = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / T;
  const int lane = static_cast<int>(threadIdx.x % T);
  if (pi >= p.positions) return;  // whole teams leave together
  const Position q = position_of(pi, p.S, p.C);
  const Seeds sd = read_seeds(p.state);
  const acc_t tau = static_cast<const acc_t*>(p.tau)[q.b];
  if (lane == 0) p.err.check_tau(tau, q.b);
  const acc_t inv_tau = acc_t(1) / tau;
  const acc_t log_eps = static_cast<acc_t>(p.log_eps);
  const uint64_t g0 = group0_of(q, p.C, p.S);
  const int J = ft.num_fields;
  for (int j = 0; j < J; ++j) {
    const int o = ft.offset(j), e = ft.offset(j + 1);
    const int64_t label = kLabels ? p.labels[(q.b * J + j) * p.S + q.s] : 0;
    if (kLabels && lane == 0) p.err.check_label(label, e - o, q.b, j, q.s);
    // Labels: z = (a + g) / tau directly (a <= 0, no overflow). Logits: u = a + g unscaled, the
    // statistics scale by 1 / tau after the max is subtracted (as the register path and the CPU do).
    auto u_of = [&](int c, float g) -> acc_t {
      const acc_t a = kLabels ? math::label_logit<acc_t>(label, c - o, log_eps)
                              : p.logits.load<acc_t>(q.base + static_cast<int64_t>(c) * p.S);
      return kLabels ? (a + static_cast<acc_t>(g)) * inv_tau : a + static_cast<acc_t>(g);
    };
    TeamLse<acc_t> st;
    st.scale = kLabels ? acc_t(1) : inv_tau;
    for (int cg = (o >> 2) + lane; 4 * cg < e; cg += T) {
      float g[4];
      gumbel4(sd, g0 + static_cast<uint64_t>(cg) * p.S, g);
#pragma unroll
      for (int l = 0; l < 4; ++l) {
        const int c = 4 * cg + l;
        if (c >= o && c < e) {
          const acc_t u = u_of(c, g[l]);
          if (!kLabels) p.err.check_logit(u, q.b, c, q.s);  // a + g is finite iff a is (|g| < 20)
          st.add(u);
        }
      }
    }
    const FieldLse<acc_t> lse = st.template team_value<T>();
    for (int cg = (o >> 2) + lane; 4 * cg < e; cg += T) {
      float g[4];
      gumbel4(sd, g0 + static_cast<uint64_t>(cg) * p.S, g);
#pragma unroll
      for (int l = 0; l < 4; ++l) {
        const int c = 4 * cg + l;
        if (c >= o && c < e) {
          const acc_t u = u_of(c, g[l]);
          p.y.store<acc_t>(q.base + static_cast<int64_t>(c) * p.S,
                           kLabels ? lse.log_prob(u) : (u - lse.max) * inv_tau - lse.log_sum);
        }
      }
    }
  }
}

template <bool kLabels>
void launch_relax(const RelaxParams& p, const FieldTable& ft, bool double_math) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int width = double_math ? 0 : register_width(p.C);
  if (width > 0) {
    dispatch_width(width, [&](auto n) {
      relax_register_kernel<decltype(n)::value, kLabels>
          <<<blocks_for(p.positions, kThreads), kThreads, 0, stream>>>(p, ft);
    });
  } else if (p.S == 1) {
    constexpr int T = 32;
    if (double_math) {
      relax_generic_kernel<double, T, kLabels><<<blocks_for(p.positions, kThreads / T), kThreads, 0, stream>>>(p, ft);
    } else {
      relax_generic_kernel<float, T, kLabels><<<blocks_for(p.positions, kThreads / T), kThreads, 0, stream>>>(p, ft);
    }
  } else {
    if (double_math) {
      relax_generic_kernel<double, 1, kLabels><<<blocks_for(p.positions, kThreads), kThreads, 0, stream>>>(p, ft);
    } else {
      relax_generic_kernel<float, 1, kLabels><<<blocks_for(p.positions, kThreads), kThreads, 0, stream>>>(p, ft);
    }
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor relax_from_labels_cuda(const at::Tensor& labels_in, at::IntArrayRef field_sizes, const at::Tensor& tau,
                                  const at::Tensor& rng_state, double eps, at::ScalarType dtype) {
  raise_device_error();
  const RelaxArgs args = check_relax_from_labels(labels_in, field_sizes, tau, rng_state, eps, dtype);
  const c10::cuda::CUDAGuard guard(labels_in.device());
  const at::Tensor labels = labels_in.contiguous();
  at::Tensor y = at::empty(relaxed_shape(labels, args.layout.channels), labels.options().dtype(dtype));
  const int64_t positions = args.dims.batch * args.dims.spatial;
  if (positions == 0) return y;
  const bool double_math = dtype == at::kDouble;
  const at::Tensor tau_acc = tau.to(double_math ? at::kDouble : at::kFloat).contiguous();
  const at::Tensor state = rng_state.contiguous();
  at::Tensor keep;
  const FieldTable ft = make_field_table(args.layout, labels.device(), &keep);
  RelaxParams p{};
  p.labels = LabelPtr{labels.data_ptr(), static_cast<int>(labels.element_size())};
  p.logits = FloatRef{nullptr, kF32};
  p.y = float_ref(y);
  p.tau = tau_acc.data_ptr();
  p.state = state.data_ptr<int64_t>();
  p.positions = positions;
  p.S = args.dims.spatial;
  p.C = static_cast<int32_t>(args.dims.channels);
  p.log_eps = std::log(eps);
  p.err = device_errors();
  launch_relax<true>(p, ft, double_math);
  return y;
}

at::Tensor relax_from_logits_cuda(const at::Tensor& logits_in, at::IntArrayRef field_sizes, const at::Tensor& tau,
                                  const at::Tensor& rng_state, at::ScalarType dtype) {
  raise_device_error();
  const RelaxArgs args = check_relax_from_logits(logits_in, field_sizes, tau, rng_state, dtype);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const at::Tensor logits = logits_in.contiguous();
  at::Tensor y = at::empty(logits.sizes(), logits.options().dtype(dtype));
  const int64_t positions = args.dims.batch * args.dims.spatial;
  if (positions == 0) return y;
  // Math type follows the output, as on the CPU (at::opmath_type<out_t>).
  const bool double_math = dtype == at::kDouble;
  const at::Tensor tau_acc = tau.to(double_math ? at::kDouble : at::kFloat).contiguous();
  const at::Tensor state = rng_state.contiguous();
  at::Tensor keep;
  const FieldTable ft = make_field_table(args.layout, logits.device(), &keep);
  RelaxParams p{};
  p.labels = LabelPtr{nullptr, 1};
  p.logits = float_ref(logits);
  p.y = float_ref(y);
  p.tau = tau_acc.data_ptr();
  p.state = state.data_ptr<int64_t>();
  p.positions = positions;
  p.S = args.dims.spatial;
  p.C = static_cast<int32_t>(args.dims.channels);
  p.log_eps = 0.0;
  p.err = device_errors();
  launch_relax<false>(p, ft, double_math);
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(gnsm, CUDA, m) {
  m.impl("relax_from_labels", &relax_from_labels_cuda);
  m.impl("relax_from_logits", &relax_from_logits_cuda);
}

}  // namespace cuda
}  // namespace gnsm
