// CPU kernel of score_norms: per (field, position) sum over classes of s^2 with
// s = tau (K softmax(l) - 1), then square roots; the per-record norm sums the squares first.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "ops/cpu/tile.h"
#include "ops/score_norms.h"

namespace gnsm {
namespace cpu {
namespace {

template <typename in_t>
GNSM_CPU_INLINE void score_norms_body(const Tile& t, const NormArgs& args, const in_t* l_p,
                                      const at::opmath_type<in_t>* tau_p, at::opmath_type<in_t>* sq_p) {
  using acc_t = at::opmath_type<in_t>;
  const Dims& d = args.dims;
  const int64_t J = args.layout.num_fields();
  acc_t* l = scratch<acc_t, 1>(d.channels * kTile);
  acc_t* e = scratch<acc_t, 2>(d.channels * kTile);
  acc_t tau_l[kTile], inv_tau[kTile], mx[kTile], sum[kTile], acc[kTile];
  lane_tau(t, tau_p, tau_l, inv_tau);
  load_tile(t, d, l_p, l);
  for (int64_t j = 0; j < J; ++j) {
    const int64_t o = args.layout.offsets[j], K = args.layout.sizes[j];
    field_exp_sum(l + o * kTile, K, t.n, mx, sum, e + o * kTile);  // softmax = e / sum: one exp per element
    for (int64_t i = 0; i < t.n; ++i) {
      sum[i] = acc_t(1) / sum[i];
      acc[i] = acc_t(0);
    }
    for (int64_t k = 0; k < K; ++k) {
      const acc_t* ek = e + (o + k) * kTile;
      for (int64_t i = 0; i < t.n; ++i) {
        const acc_t s = math::score_from_prob(ek[i] * sum[i], static_cast<acc_t>(K), tau_l[i]);
        acc[i] += s * s;
      }
    }
    for (int64_t i = 0; i < t.n; ++i) sq_p[t.pos_index(i, j, J, d.spatial)] = acc[i];
  }
}

template <typename in_t>
GNSM_CPU_MULTIVERSION void score_norms_tile(const Tile& t, const NormArgs& args, const in_t* l_p,
                                            const at::opmath_type<in_t>* tau_p, at::opmath_type<in_t>* sq_p) {
  if (is_full_span(t)) {
    score_norms_body<in_t>(full_span(t), args, l_p, tau_p, sq_p);
  } else {
    score_norms_body<in_t>(t, args, l_p, tau_p, sq_p);
  }
}

template <typename in_t>
void score_norms_impl(const at::Tensor& output, const at::Tensor& tau, const NormArgs& args, at::Tensor& sq) {
  using acc_t = at::opmath_type<in_t>;
  const in_t* l_p = output.data_ptr<in_t>();
  const at::Tensor tau_acc = tau_as<acc_t>(tau);
  const acc_t* tau_p = tau_acc.data_ptr<acc_t>();
  acc_t* sq_p = sq.data_ptr<acc_t>();
  for_each_tile(args.dims, [&](const Tile& t) { score_norms_tile<in_t>(t, args, l_p, tau_p, sq_p); });
}

std::tuple<at::Tensor, at::Tensor> score_norms_cpu(const at::Tensor& output_in, at::IntArrayRef field_sizes,
                                                   const at::Tensor& tau) {
  NormArgs args = check_score_norms(output_in, field_sizes, tau);
  const at::Tensor output = output_in.contiguous();
  std::vector<int64_t> shape(output.sizes().begin(), output.sizes().end());
  shape[1] = args.layout.num_fields();
  const auto acc_type = output.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor sq = at::empty(shape, output.options().dtype(acc_type));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, output.scalar_type(), "score_norms_cpu",
                                  [&] { score_norms_impl<scalar_t>(output, tau, args, sq); });
  fill_nan_where(sq, non_finite_positions(output, args.layout));
  at::Tensor per_record = sq.flatten(1).sum(1).sqrt_();
  return {per_record, sq.sqrt_()};
}

}  // namespace

TORCH_LIBRARY_IMPL(gnsm, CPU, m) {
  m.impl("score_norms", &score_norms_cpu);
}

}  // namespace cpu
}  // namespace gnsm
