// CPU kernels of the fused score-matching loss and its backward (DESIGN 1.4). Per tile and field:
// regenerate g, form q = softmax(-g) and p = softmax(l), then
//   kl : loss = sum_k q_k (log q_k - log p_k),          dloss/dl = p - q
//   mse: loss = 0.5 tau^2 K^2 sum_k (p_k - q_k)^2,      dloss/dl_m = tau^2 K^2 p_m (d_m - sum_k d_k p_k), d = p - q
// The forward writes the per-position loss (B, J, S) and reduces it; the backward writes only grad_l,
// scaled by the incoming gradient (per position for reduction "none").
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "ops/cpu/tile.h"
#include "ops/score_matching_loss.h"

namespace gnsm {
namespace cpu {
namespace {

// One tile: per-position loss into loss_p (if not null) and gradient into grad_p (if not null) with
// per-position weights w (w_scalar when w_pos is null). q = softmax(-g) is e / sum(e) with
// e = exp(-g) = -log(u) from the Gumbel transform (bounded in (5e-8, 17): no max shift needed), and
// log q = -g - log(sum e); p = softmax(l) takes one exp per element.
template <typename in_t, bool KL>
GNSM_CPU_INLINE void loss_body(const Tile& t, const LossArgs& args, uint64_t seed, uint64_t offset, const in_t* l_p,
                               const at::opmath_type<in_t>* tau_p, at::opmath_type<in_t>* loss_p, in_t* grad_p,
                               const at::opmath_type<in_t>* w_pos, at::opmath_type<in_t> w_scalar) {
  using acc_t = at::opmath_type<in_t>;
  const Dims& d = args.dims;
  const int64_t J = args.layout.num_fields();
  float* g = scratch<float, 1>(d.channels * kTile);
  float* eq = scratch<float, 2>(d.channels * kTile);
  acc_t* lp = scratch<acc_t, 3>(d.channels * kTile);
  acc_t* ep = scratch<acc_t, 4>(d.channels * kTile);
  acc_t tau_l[kTile], inv_tau[kTile], ls_q[kTile], is_q[kTile], mx_p[kTile], ls_p[kTile], is_p[kTile], acc[kTile],
      w[kTile];
  lane_tau(t, tau_p, tau_l, inv_tau);
  fill_gumbel(t, d, seed, offset, g, eq);
  load_tile(t, d, l_p, lp);
  for (int64_t j = 0; j < J; ++j) {
    const int64_t o = args.layout.offsets[j], K = args.layout.sizes[j];
    const float* gj = g + o * kTile;
    const float* eqj = eq + o * kTile;
    acc_t* p = lp + o * kTile;  // l, then p = softmax(l), then the gradient
    acc_t* epj = ep + o * kTile;
    if (K == 1) {  // p = q = 1 exactly (e * (1 / e) might round to 1 - ulp): no loss, no gradient
      for (int64_t i = 0; i < t.n; ++i) p[i] = acc_t(0);
      if (loss_p != nullptr) {
        for (int64_t i = 0; i < t.n; ++i) loss_p[t.pos_index(i, j, J, d.spatial)] = acc_t(0);
      }
      continue;
    }
    field_exp_sum(p, K, t.n, mx_p, is_p, epj);
    for (int64_t i = 0; i < t.n; ++i) is_q[i] = acc_t(0);
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t i = 0; i < t.n; ++i) is_q[i] += static_cast<acc_t>(eqj[k * kTile + i]);
    }
    for (int64_t i = 0; i < t.n; ++i) {
      ls_p[i] = math::fast_log(is_p[i]);
      ls_q[i] = math::fast_log(is_q[i]);
      is_p[i] = acc_t(1) / is_p[i];
      is_q[i] = acc_t(1) / is_q[i];
      acc[i] = acc_t(0);
    }
    for (int64_t i = 0; i < t.n; ++i) {
      w[i] = grad_p == nullptr ? acc_t(0) : (w_pos ? w_pos[t.pos_index(i, j, J, d.spatial)] : w_scalar);
    }
    const acc_t kk = static_cast<acc_t>(K);
    // The kind is a template parameter so this innermost loop has no branch and vectorizes. The kl
    // gradient w (p - q) is formed here, in place of l; mse keeps p and q for its second pass.
    for (int64_t k = 0; k < K; ++k) {
      acc_t* pk_row = p + k * kTile;
      for (int64_t i = 0; i < t.n; ++i) {
        const acc_t qk = static_cast<acc_t>(eqj[k * kTile + i]) * is_q[i], pk = epj[k * kTile + i] * is_p[i];
        if (KL) {
          const acc_t log_q = -static_cast<acc_t>(gj[k * kTile + i]) - ls_q[i];
          const acc_t log_p = (pk_row[i] - mx_p[i]) - ls_p[i];
          acc[i] += qk * (log_q - log_p);
          pk_row[i] = w[i] * (pk - qk);
        } else {
          acc[i] += (pk - qk) * (pk - qk);
          pk_row[i] = pk;
          epj[k * kTile + i] = qk;  // ep now holds q
        }
      }
    }
    if (!KL) {
      for (int64_t i = 0; i < t.n; ++i) acc[i] *= acc_t(0.5) * tau_l[i] * tau_l[i] * kk * kk;
    }
    if (loss_p != nullptr) {
      for (int64_t i = 0; i < t.n; ++i) loss_p[t.pos_index(i, j, J, d.spatial)] = acc[i];
    }
    if (grad_p == nullptr || KL) continue;
    const acc_t* q = epj;  // mse gradient: tau^2 K^2 p_m (d_m - sum_k d_k p_k)
    acc_t dp[kTile];
    for (int64_t i = 0; i < t.n; ++i) dp[i] = acc_t(0);
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t i = 0; i < t.n; ++i) dp[i] += (p[k * kTile + i] - q[k * kTile + i]) * p[k * kTile + i];
    }
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t i = 0; i < t.n; ++i) {
        const acc_t pm = p[k * kTile + i];
        const acc_t scale = w[i] * tau_l[i] * tau_l[i] * kk * kk;
        p[k * kTile + i] = scale * pm * ((pm - q[k * kTile + i]) - dp[i]);
      }
    }
  }
  if (grad_p != nullptr) store_tile(t, d, lp, grad_p, 0, d.channels);
}

template <typename in_t, bool KL>
GNSM_CPU_MULTIVERSION void loss_tile(const Tile& t, const LossArgs& args, uint64_t seed, uint64_t offset,
                                     const in_t* l_p, const at::opmath_type<in_t>* tau_p,
                                     at::opmath_type<in_t>* loss_p, in_t* grad_p, const at::opmath_type<in_t>* w_pos,
                                     at::opmath_type<in_t> w_scalar) {
  if (is_full_span(t)) {
    loss_body<in_t, KL>(full_span(t), args, seed, offset, l_p, tau_p, loss_p, grad_p, w_pos, w_scalar);
  } else {
    loss_body<in_t, KL>(t, args, seed, offset, l_p, tau_p, loss_p, grad_p, w_pos, w_scalar);
  }
}

// Runs loss_tile with the kind as a compile-time constant (so its inner loops carry no branch).
template <typename in_t>
void run_loss_tile(const Tile& t, const LossArgs& args, uint64_t seed, uint64_t offset, const in_t* l_p,
                   const at::opmath_type<in_t>* tau_p, at::opmath_type<in_t>* loss_p, in_t* grad_p,
                   const at::opmath_type<in_t>* w_pos, at::opmath_type<in_t> w_scalar) {
  if (args.kl) {
    loss_tile<in_t, true>(t, args, seed, offset, l_p, tau_p, loss_p, grad_p, w_pos, w_scalar);
  } else {
    loss_tile<in_t, false>(t, args, seed, offset, l_p, tau_p, loss_p, grad_p, w_pos, w_scalar);
  }
}

at::Tensor reduce_loss(const at::Tensor& per_pos, const LossArgs& args, at::ScalarType acc_type) {
  if (args.reduction == kReduceNone) return per_pos;
  // Sum in float64 so large volumes do not lose the small per-position terms.
  at::Tensor total = per_pos.sum(at::kDouble);
  if (args.reduction == kReduceMean) total = total / static_cast<double>(std::max<int64_t>(args.dims.batch, 1));
  return total.to(acc_type);
}

at::Tensor score_matching_loss_cpu(const at::Tensor& output_in, const at::Tensor& rng_state,
                                   at::IntArrayRef field_sizes, const at::Tensor& tau, c10::string_view kind,
                                   c10::string_view reduction) {
  const LossArgs args = check_score_matching_loss(output_in, rng_state, field_sizes, tau, kind, reduction);
  uint64_t seed, offset;
  read_state(rng_state, &seed, &offset);
  const at::Tensor output = output_in.contiguous();
  const auto acc_type = output.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor per_pos = at::empty(per_position_shape(output, args.layout.num_fields()), output.options().dtype(acc_type));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, output.scalar_type(), "score_matching_loss_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor tau_acc = tau_as<acc_t>(tau);
    const scalar_t* l_p = output.data_ptr<scalar_t>();
    const acc_t* tau_p = tau_acc.data_ptr<acc_t>();
    acc_t* loss_p = per_pos.data_ptr<acc_t>();
    for_each_tile(args.dims, [&](const Tile& t) {
      run_loss_tile<scalar_t>(t, args, seed, offset, l_p, tau_p, loss_p, nullptr, nullptr, acc_t(0));
    });
  });
  fill_nan_where(per_pos, non_finite_positions(output, args.layout));
  return reduce_loss(per_pos, args, acc_type);
}

at::Tensor score_matching_loss_backward_cpu(const at::Tensor& grad_in, const at::Tensor& output_in,
                                            const at::Tensor& rng_state, at::IntArrayRef field_sizes,
                                            const at::Tensor& tau, c10::string_view kind,
                                            c10::string_view reduction) {
  const LossArgs args =
      check_score_matching_loss_backward(grad_in, output_in, rng_state, field_sizes, tau, kind, reduction);
  uint64_t seed, offset;
  read_state(rng_state, &seed, &offset);
  const at::Tensor output = output_in.contiguous();
  at::Tensor grad_l = at::empty(output.sizes(), output.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, output.scalar_type(), "score_matching_loss_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor tau_acc = tau_as<acc_t>(tau);
    const scalar_t* l_p = output.data_ptr<scalar_t>();
    const acc_t* tau_p = tau_acc.data_ptr<acc_t>();
    scalar_t* g_p = grad_l.data_ptr<scalar_t>();
    at::Tensor w_pos;
    acc_t w_scalar = acc_t(0);
    if (args.reduction == kReduceNone) {
      w_pos = grad_in.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
    } else {
      w_scalar = static_cast<acc_t>(grad_in.item<double>());
      if (args.reduction == kReduceMean) w_scalar /= static_cast<acc_t>(std::max<int64_t>(args.dims.batch, 1));
    }
    const acc_t* w_p = w_pos.defined() ? w_pos.data_ptr<acc_t>() : nullptr;
    for_each_tile(args.dims, [&](const Tile& t) {
      run_loss_tile<scalar_t>(t, args, seed, offset, l_p, tau_p, nullptr, g_p, w_p, w_scalar);
    });
  });
  fill_nan_where(grad_l, non_finite_positions(output, args.layout), args.layout);
  return grad_l;
}

// Loss and the gradient for a unit incoming gradient in one pass (the CPU is compute-bound, so
// regenerating the noise in a separate backward would cost as much as the forward again).
std::tuple<at::Tensor, at::Tensor> score_matching_loss_with_grad_cpu(const at::Tensor& output_in,
                                                                     const at::Tensor& rng_state,
                                                                     at::IntArrayRef field_sizes,
                                                                     const at::Tensor& tau, c10::string_view kind,
                                                                     c10::string_view reduction) {
  const LossArgs args = check_score_matching_loss(output_in, rng_state, field_sizes, tau, kind, reduction);
  uint64_t seed, offset;
  read_state(rng_state, &seed, &offset);
  const at::Tensor output = output_in.contiguous();
  const auto acc_type = output.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor per_pos = at::empty(per_position_shape(output, args.layout.num_fields()), output.options().dtype(acc_type));
  at::Tensor grad_l = at::empty(output.sizes(), output.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, output.scalar_type(), "score_matching_loss_wg_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor tau_acc = tau_as<acc_t>(tau);
    const scalar_t* l_p = output.data_ptr<scalar_t>();
    const acc_t* tau_p = tau_acc.data_ptr<acc_t>();
    acc_t* loss_p = per_pos.data_ptr<acc_t>();
    scalar_t* g_p = grad_l.data_ptr<scalar_t>();
    const acc_t w = args.reduction == kReduceMean
                        ? acc_t(1) / static_cast<acc_t>(std::max<int64_t>(args.dims.batch, 1)) : acc_t(1);
    for_each_tile(args.dims, [&](const Tile& t) {
      run_loss_tile<scalar_t>(t, args, seed, offset, l_p, tau_p, loss_p, g_p, nullptr, w);
    });
  });
  const at::Tensor bad = non_finite_positions(output, args.layout);
  fill_nan_where(per_pos, bad);
  fill_nan_where(grad_l, bad, args.layout);
  return {reduce_loss(per_pos, args, acc_type), grad_l};
}

}  // namespace

TORCH_LIBRARY_IMPL(gnsm, CPU, m) {
  m.impl("score_matching_loss_with_grad", &score_matching_loss_with_grad_cpu);
  m.impl("score_matching_loss", &score_matching_loss_cpu);
  m.impl("score_matching_loss_backward", &score_matching_loss_backward_cpu);
}

}  // namespace cpu
}  // namespace gnsm
