// CUDA kernels of the fused score-matching loss and its backward (DESIGN 1.4), the same formulas as
// cpu/score_matching_loss_kernel.cpp. Per position and field: regenerate g from the device-side
// rng_state, q = softmax(-g), p = softmax(l), then
//   kl : loss = sum_k q_k (log q_k - log p_k),          dloss/dl = p - q
//   mse: loss = 0.5 tau^2 K^2 sum_k (p_k - q_k)^2,      dloss/dl_m = tau^2 K^2 p_m (d_m - sum_k d_k p_k), d = p - q
// Forward: reduction "none" writes the per-position loss (B, J, *spatial); "mean"/"sum" write one double
// partial per block (fixed-order block reduction) that at::sum adds up: deterministic, no atomics, no
// per-position temporary. Backward: one kernel writes grad_l only; the incoming gradient is read on the
// device (a scalar for mean/sum, per position for none), so there is no host sync.
#include <torch/library.h>

#include "ops/cuda/launch.cuh"
#include "ops/score_matching_loss.h"

namespace gnsm {
namespace cuda {
namespace {

struct LossParams {
  FloatRef l;            // network output (B, C, S)
  FloatRef grad_l;       // backward: (B, C, S), storage of l
  const void* tau;       // (B,), math type
  const int64_t* state;
  void* per_position;    // forward, reduction none: (B, J, S), math type
  double* partials;      // forward, mean/sum: one per block
  const void* w_pos;     // backward, reduction none: (B, J, S), math type
  const void* w_scalar;  // backward, mean/sum: one element, math type
  double w_div;          // B for mean, 1 for sum
  int64_t positions;
  int64_t S;
  int32_t C;
  bool kl;
  bool backward;
  DeviceErrors err;      // value checks on the device (device_checks.cuh)
};

template <typename acc_t>
__device__ __forceinline__ acc_t weight_of(const LossParams& p, int64_t pos_index) {
  if (p.w_pos != nullptr) return static_cast<const acc_t*>(p.w_pos)[pos_index];
  return static_cast<const acc_t*>(p.w_scalar)[0] / static_cast<acc_t>(p.w_div);
}

// Register path: one thread per position, float math.
template <int N>
__global__ void __launch_bounds__(kThreads)
    loss_register_kernel(const LossParams p, const __grid_constant__ FieldTable ft) {
  const int64_t pi = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  double total = 0.0;
  if (pi < p.positions) {
    const Position q = position_of(pi, p.S, p.C);
    const Seeds sd = read_seeds(p.state);
    const float tau = static_cast<const float*>(p.tau)[q.b];
    p.err.check_tau(tau, q.b);
    const uint64_t g0 = group0_of(q, p.C, p.S);
    float lq[N], lp[N];  // log q / log p logits, then q / p, then (backward) the gradient in lp
#pragma unroll
    for (int cg = 0; cg < N / 4; ++cg) {
      float g[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      if (4 * cg < p.C) gumbel4(sd, g0 + static_cast<uint64_t>(cg) * p.S, g);
#pragma unroll
      for (int l = 0; l < 4; ++l) lq[4 * cg + l] = -g[l];
    }
#pragma unroll
    for (int c = 0; c < N; ++c) lp[c] = 0.0f;
    p.l.load_row<N>(lp, q.base, p.S, p.C);
    const int J = ft.num_fields;
    for (int j = 0; j < J; ++j) {
      const int o = ft.offset(j), e = ft.offset(j + 1);
      const float K = static_cast<float>(e - o);
      const FieldLse<float> lse_q = field_lse<N>(lq, o, e);
      const FieldLse<float> lse_p = field_lse<N>(lp, o, e);
      float acc = 0.0f;
#pragma unroll
      for (int c = 0; c < N; ++c) {
        if (c >= o && c < e) {
          const float log_q = lse_q.log_prob(lq[c]), log_p = lse_p.log_prob(lp[c]);
          const float qk = math::fast_exp(log_q), pk = math::fast_exp(log_p);
          acc += p.kl ? qk * (log_q - log_p) : (pk - qk) * (pk - qk);
          lq[c] = qk;
          lp[c] = pk;
        }
      }
      if (!p.kl) acc *= 0.5f * tau * tau * K * K;
      const int64_t pos_index = (q.b * J + j) * p.S + q.s;
      if (!p.backward) {
        if (p.per_position != nullptr) {
          static_cast<float*>(p.per_position)[pos_index] = acc;
        } else {
          total += static_cast<double>(acc);
        }
        continue;
      }
      const float w = weight_of<float>(p, pos_index);
      if (p.kl) {
#pragma unroll
        for (int c = 0; c < N; ++c) {
          if (c >= o && c < e) lp[c] = w * (lp[c] - lq[c]);
        }
      } else {
        float dp = 0.0f;
#pragma unroll
        for (int c = 0; c < N; ++c) {
          if (c >= o && c < e) dp += (lp[c] - lq[c]) * lp[c];
        }
        const float scale = w * tau * tau * K * K;
#pragma unroll
        for (int c = 0; c < N; ++c) {
          if (c >= o && c < e) lp[c] = scale * lp[c] * ((lp[c] - lq[c]) - dp);
        }
      }
    }
    if (p.backward) p.grad_l.store_row<N>(lp, q.base, p.S, p.C);
  }
  if (p.partials != nullptr) block_sum_to(total, p.partials);  // uniform condition: every thread gets here
}

// Generic path: a team of T threads per position; per field a statistics pass (lse of -g and of l), a
// loss pass (loss terms and, for mse, sum_k d_k p_k) and in the backward an output pass.
template <typename acc_t, int T>
__global__ void __launch_bounds__(kThreads)
    loss_generic_kernel(const LossParams p, const __grid_constant__ FieldTable ft) {
  const int64_t pi = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / T;
  const int lane = static_cast<int>(threadIdx.x % T);
  double total = 0.0;
  if (pi < p.positions) {  // whole teams take the same branch (T divides the warp)
    const Position q = position_of(pi, p.S, p.C);
    const Seeds sd = read_seeds(p.state);
    const acc_t tau = static_cast<const acc_t*>(p.tau)[q.b];
    if (lane == 0) p.err.check_tau(tau, q.b);
    const uint64_t g0 = group0_of(q, p.C, p.S);
    const int J = ft.num_fields;
    for (int j = 0; j < J; ++j) {
      const int o = ft.offset(j), e = ft.offset(j + 1);
      const acc_t K = static_cast<acc_t>(e - o);
      TeamLse<acc_t> sq, sp;
      for (int cg = (o >> 2) + lane; 4 * cg < e; cg += T) {
        float g[4];
        gumbel4(sd, g0 + static_cast<uint64_t>(cg) * p.S, g);
#pragma unroll
        for (int l = 0; l < 4; ++l) {
          const int c = 4 * cg + l;
          if (c >= o && c < e) {
            sq.add(-static_cast<acc_t>(g[l]));
            sp.add(p.l.load<acc_t>(q.base + static_cast<int64_t>(c) * p.S));
          }
        }
      }
      const FieldLse<acc_t> lse_q = sq.template team_value<T>();
      const FieldLse<acc_t> lse_p = sp.template team_value<T>();
      acc_t acc = acc_t(0), dp = acc_t(0);
      for (int cg = (o >> 2) + lane; 4 * cg < e; cg += T) {
        float g[4];
        gumbel4(sd, g0 + static_cast<uint64_t>(cg) * p.S, g);
#pragma unroll
        for (int l = 0; l < 4; ++l) {
          const int c = 4 * cg + l;
          if (c >= o && c < e) {
            const acc_t log_q = lse_q.log_prob(-static_cast<acc_t>(g[l]));
            const acc_t log_p = lse_p.log_prob(p.l.load<acc_t>(q.base + static_cast<int64_t>(c) * p.S));
            const acc_t qk = math::fast_exp(log_q), pk = math::fast_exp(log_p);
            acc += p.kl ? qk * (log_q - log_p) : (pk - qk) * (pk - qk);
            dp += (pk - qk) * pk;
          }
        }
      }
      acc = team_sum<T>(acc);
      if (!p.kl) acc *= acc_t(0.5) * tau * tau * K * K;
      const int64_t pos_index = (q.b * J + j) * p.S + q.s;
      if (!p.backward) {
        if (lane == 0) {
          if (p.per_position != nullptr) {
            static_cast<acc_t*>(p.per_position)[pos_index] = acc;
          } else {
            total += static_cast<double>(acc);
          }
        }
        continue;
      }
      const acc_t w = weight_of<acc_t>(p, pos_index);
      if (!p.kl) dp = team_sum<T>(dp);
      const acc_t scale = w * tau * tau * K * K;
      for (int cg = (o >> 2) + lane; 4 * cg < e; cg += T) {
        float g[4];
        gumbel4(sd, g0 + static_cast<uint64_t>(cg) * p.S, g);
#pragma unroll
        for (int l = 0; l < 4; ++l) {
          const int c = 4 * cg + l;
          if (c >= o && c < e) {
            const int64_t idx = q.base + static_cast<int64_t>(c) * p.S;
            const acc_t qk = math::fast_exp(lse_q.log_prob(-static_cast<acc_t>(g[l])));
            const acc_t pk = math::fast_exp(lse_p.log_prob(p.l.load<acc_t>(idx)));
            p.grad_l.store<acc_t>(idx, p.kl ? w * (pk - qk) : scale * pk * ((pk - qk) - dp));
          }
        }
      }
    }
  }
  if (p.partials != nullptr) block_sum_to(total, p.partials);
}

// Launches the kernel of the right shape; returns the number of blocks (the number of partials).
int64_t loss_blocks(const LossParams& p, bool double_math, int* team) {
  const int width = double_math ? 0 : register_width(p.C);
  *team = width > 0 ? 0 : (p.S == 1 ? 32 : 1);
  return blocks_for(p.positions, *team == 32 ? kThreads / 32 : kThreads);
}

void launch_loss(const LossParams& p, const FieldTable& ft, bool double_math) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  int team = 0;
  const int64_t blocks = loss_blocks(p, double_math, &team);
  if (team == 0) {
    dispatch_width(register_width(p.C),
                   [&](auto n) { loss_register_kernel<decltype(n)::value><<<blocks, kThreads, 0, stream>>>(p, ft); });
  } else if (team == 32) {
    if (double_math) {
      loss_generic_kernel<double, 32><<<blocks, kThreads, 0, stream>>>(p, ft);
    } else {
      loss_generic_kernel<float, 32><<<blocks, kThreads, 0, stream>>>(p, ft);
    }
  } else {
    if (double_math) {
      loss_generic_kernel<double, 1><<<blocks, kThreads, 0, stream>>>(p, ft);
    } else {
      loss_generic_kernel<float, 1><<<blocks, kThreads, 0, stream>>>(p, ft);
    }
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

LossParams base_params(const LossArgs& args, const at::Tensor& output, const at::Tensor& tau_acc,
                       const at::Tensor& state) {
  LossParams p{};
  p.l = float_ref(output);
  p.grad_l = FloatRef{nullptr, kF32};
  p.tau = tau_acc.data_ptr();
  p.state = state.data_ptr<int64_t>();
  p.w_div = 1.0;
  p.positions = args.dims.batch * args.dims.spatial;
  p.S = args.dims.spatial;
  p.C = static_cast<int32_t>(args.dims.channels);
  p.kl = args.kl;
  p.err = device_errors();
  return p;
}

at::Tensor score_matching_loss_cuda(const at::Tensor& output_in, const at::Tensor& rng_state,
                                    at::IntArrayRef field_sizes, const at::Tensor& tau, c10::string_view kind,
                                    c10::string_view reduction) {
  raise_device_error();
  const LossArgs args = check_score_matching_loss(output_in, rng_state, field_sizes, tau, kind, reduction);
  const c10::cuda::CUDAGuard guard(output_in.device());
  const at::Tensor output = output_in.contiguous();
  const bool double_math = output.scalar_type() == at::kDouble;
  const auto acc_type = double_math ? at::kDouble : at::kFloat;
  const at::Tensor tau_acc = tau.to(acc_type).contiguous();
  const at::Tensor state = rng_state.contiguous();
  at::Tensor keep;
  const FieldTable ft = make_field_table(args.layout, output.device(), &keep);
  LossParams p = base_params(args, output, tau_acc, state);
  if (args.reduction == kReduceNone) {
    at::Tensor per_pos =
        at::empty(per_position_shape(output, args.layout.num_fields()), output.options().dtype(acc_type));
    if (p.positions == 0) return per_pos;
    p.per_position = per_pos.data_ptr();
    launch_loss(p, ft, double_math);
    return per_pos;
  }
  int team = 0;
  at::Tensor partials = at::empty({p.positions == 0 ? 0 : loss_blocks(p, double_math, &team)},
                                  output.options().dtype(at::kDouble));
  if (p.positions > 0) {
    p.partials = partials.data_ptr<double>();
    launch_loss(p, ft, double_math);
  }
  // Partials are summed in float64 (as the CPU sums its per-position terms) so large volumes keep the
  // small terms.
  at::Tensor total = partials.sum();
  if (args.reduction == kReduceMean) total = total / static_cast<double>(std::max<int64_t>(args.dims.batch, 1));
  return total.to(acc_type);
}

at::Tensor score_matching_loss_backward_cuda(const at::Tensor& grad_in, const at::Tensor& output_in,
                                             const at::Tensor& rng_state, at::IntArrayRef field_sizes,
                                             const at::Tensor& tau, c10::string_view kind,
                                             c10::string_view reduction) {
  raise_device_error();
  const LossArgs args =
      check_score_matching_loss_backward(grad_in, output_in, rng_state, field_sizes, tau, kind, reduction);
  const c10::cuda::CUDAGuard guard(output_in.device());
  const at::Tensor output = output_in.contiguous();
  at::Tensor grad_l = at::empty(output.sizes(), output.options());
  if (args.dims.batch * args.dims.spatial == 0) return grad_l;
  const bool double_math = output.scalar_type() == at::kDouble;
  const auto acc_type = double_math ? at::kDouble : at::kFloat;
  const at::Tensor tau_acc = tau.to(acc_type).contiguous();
  const at::Tensor state = rng_state.contiguous();
  // The incoming gradient stays on the device (no .item()): per position for none, one element otherwise.
  const at::Tensor w = grad_in.to(acc_type).contiguous();
  at::Tensor keep;
  const FieldTable ft = make_field_table(args.layout, output.device(), &keep);
  LossParams p = base_params(args, output, tau_acc, state);
  p.backward = true;
  p.grad_l = float_ref(grad_l);
  if (args.reduction == kReduceNone) {
    p.w_pos = w.data_ptr();
  } else {
    p.w_scalar = w.data_ptr();
    p.w_div = args.reduction == kReduceMean ? static_cast<double>(std::max<int64_t>(args.dims.batch, 1)) : 1.0;
  }
  launch_loss(p, ft, double_math);
  return grad_l;
}

}  // namespace

TORCH_LIBRARY_IMPL(gnsm, CUDA, m) {
  m.impl("score_matching_loss", &score_matching_loss_cuda);
  m.impl("score_matching_loss_backward", &score_matching_loss_backward_cuda);
}

}  // namespace cuda
}  // namespace gnsm
