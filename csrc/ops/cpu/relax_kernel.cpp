// CPU kernels of relax_from_labels and relax_from_logits: per tile, regenerate the Gumbel noise,
// form z = (a + g) / tau, and write y = z - logsumexp(z) per field. The class logits of hard labels
// are formed on the fly (0 for the true class, log(eps) otherwise): no one-hot is ever stored.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <cmath>

#include "ops/cpu/tile.h"
#include "ops/relax.h"

namespace gnsm {
namespace cpu {
namespace {

// Writes y for one tile given z in a [C][kTile] buffer (overwritten with y in the math type).
template <typename out_t, typename acc_t>
GNSM_CPU_INLINE void write_relaxed(const Tile& t, const Dims& d, const FieldLayout& layout, acc_t* z, out_t* y) {
  acc_t mx[kTile], log_sum[kTile];
  for (int64_t j = 0; j < layout.num_fields(); ++j) {
    const int64_t o = layout.offsets[j], K = layout.sizes[j];
    field_lse(z + o * kTile, K, t.n, mx, log_sum);
    for (int64_t k = 0; k < K; ++k) {
      acc_t* zk = z + (o + k) * kTile;
      for (int64_t i = 0; i < t.n; ++i) zk[i] = (zk[i] - mx[i]) - log_sum[i];
    }
  }
  store_tile(t, d, z, y, 0, d.channels);
}

template <typename label_t, typename out_t>
GNSM_CPU_INLINE void relax_labels_body(const Tile& t, const RelaxArgs& args, const label_t* lab,
                                       const at::opmath_type<out_t>* tau_p, at::opmath_type<out_t> log_eps,
                                       out_t* y_p) {
  using acc_t = at::opmath_type<out_t>;
  const Dims& d = args.dims;
  const FieldLayout& layout = args.layout;
  const int64_t J = layout.num_fields();
  float* g = scratch<float, 1>(d.channels * kTile);
  acc_t* z = scratch<acc_t, 2>(d.channels * kTile);
  acc_t tau_l[kTile], inv_tau[kTile];
  lane_tau(t, tau_p, tau_l, inv_tau);
  fill_gumbel(t, d, args.seed, args.offset, g);
  for (int64_t j = 0; j < J; ++j) {
    const int64_t o = layout.offsets[j], K = layout.sizes[j];
    // 32-bit labels (validated < K) so the class compare vectorizes 8 wide.
    int32_t label[kTile];
    for (int64_t i = 0; i < t.n; ++i) label[i] = static_cast<int32_t>(lab[t.pos_index(i, j, J, d.spatial)]);
    for (int32_t k = 0; k < static_cast<int32_t>(K); ++k) {
      const float* gk = g + (o + k) * kTile;
      acc_t* zk = z + (o + k) * kTile;
      for (int64_t i = 0; i < t.n; ++i) {
        zk[i] = (math::label_logit<acc_t>(label[i], k, log_eps) + static_cast<acc_t>(gk[i])) * inv_tau[i];
      }
    }
  }
  write_relaxed(t, d, layout, z, y_p);
}

template <typename label_t, typename out_t>
GNSM_CPU_MULTIVERSION void relax_labels_tile(const Tile& t, const RelaxArgs& args, const label_t* lab,
                                             const at::opmath_type<out_t>* tau_p, at::opmath_type<out_t> log_eps,
                                             out_t* y_p) {
  if (is_full_span(t)) {
    relax_labels_body<label_t, out_t>(full_span(t), args, lab, tau_p, log_eps, y_p);
  } else {
    relax_labels_body<label_t, out_t>(t, args, lab, tau_p, log_eps, y_p);
  }
}

template <typename label_t, typename out_t>
void relax_labels_impl(const at::Tensor& labels, const at::Tensor& tau, const RelaxArgs& args, double eps,
                       at::Tensor& y) {
  using acc_t = at::opmath_type<out_t>;
  const label_t* lab = labels.data_ptr<label_t>();
  const at::Tensor tau_acc = tau_as<acc_t>(tau);
  const acc_t* tau_p = tau_acc.data_ptr<acc_t>();
  out_t* y_p = y.data_ptr<out_t>();
  const acc_t log_eps = static_cast<acc_t>(std::log(eps));
  for_each_tile(args.dims, [&](const Tile& t) { relax_labels_tile<label_t, out_t>(t, args, lab, tau_p, log_eps, y_p); });
}

template <typename in_t, typename out_t>
GNSM_CPU_INLINE void relax_logits_body(const Tile& t, const RelaxArgs& args, const in_t* a_p,
                                       const at::opmath_type<out_t>* tau_p, out_t* y_p) {
  using acc_t = at::opmath_type<out_t>;
  const Dims& d = args.dims;
  float* g = scratch<float, 3>(d.channels * kTile);
  acc_t* z = scratch<acc_t, 4>(d.channels * kTile);
  acc_t tau_l[kTile], inv_tau[kTile];
  lane_tau(t, tau_p, tau_l, inv_tau);
  fill_gumbel(t, d, args.seed, args.offset, g);
  load_tile(t, d, a_p, z);
  for (int64_t c = 0; c < d.channels; ++c) {
    for (int64_t i = 0; i < t.n; ++i) z[c * kTile + i] += static_cast<acc_t>(g[c * kTile + i]);
  }
  // Subtract each field's max of a + g before dividing by tau: huge logits at a small tau would
  // otherwise overflow to inf (softmax is shift-invariant, so y is unchanged).
  acc_t mx[kTile];
  for (int64_t j = 0; j < args.layout.num_fields(); ++j) {
    const int64_t o = args.layout.offsets[j], K = args.layout.sizes[j];
    field_max(z + o * kTile, K, t.n, mx);
    for (int64_t k = 0; k < K; ++k) {
      acc_t* zk = z + (o + k) * kTile;
      for (int64_t i = 0; i < t.n; ++i) zk[i] = (zk[i] - mx[i]) * inv_tau[i];
    }
  }
  write_relaxed(t, d, args.layout, z, y_p);
}

template <typename in_t, typename out_t>
GNSM_CPU_MULTIVERSION void relax_logits_tile(const Tile& t, const RelaxArgs& args, const in_t* a_p,
                                             const at::opmath_type<out_t>* tau_p, out_t* y_p) {
  if (is_full_span(t)) {
    relax_logits_body<in_t, out_t>(full_span(t), args, a_p, tau_p, y_p);
  } else {
    relax_logits_body<in_t, out_t>(t, args, a_p, tau_p, y_p);
  }
}

template <typename in_t, typename out_t>
void relax_logits_impl(const at::Tensor& logits, const at::Tensor& tau, const RelaxArgs& args, at::Tensor& y) {
  using acc_t = at::opmath_type<out_t>;
  const in_t* a_p = logits.data_ptr<in_t>();
  const at::Tensor tau_acc = tau_as<acc_t>(tau);
  const acc_t* tau_p = tau_acc.data_ptr<acc_t>();
  out_t* y_p = y.data_ptr<out_t>();
  for_each_tile(args.dims, [&](const Tile& t) { relax_logits_tile<in_t, out_t>(t, args, a_p, tau_p, y_p); });
}

at::Tensor relax_from_labels_cpu(const at::Tensor& labels_in, at::IntArrayRef field_sizes, const at::Tensor& tau,
                                 const at::Tensor& rng_state, double eps, at::ScalarType dtype) {
  RelaxArgs args = check_relax_from_labels(labels_in, field_sizes, tau, rng_state, eps, dtype);
  read_state(rng_state, &args.seed, &args.offset);
  const at::Tensor labels = labels_in.contiguous();
  at::Tensor y = at::empty(relaxed_shape(labels, args.layout.channels), labels.options().dtype(dtype));
  AT_DISPATCH_SWITCH(labels.scalar_type(), "relax_from_labels_cpu",
      AT_DISPATCH_CASE(at::kByte, [&] {
        using label_t = scalar_t;
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "relax_from_labels_cpu_out",
                                        [&] { relax_labels_impl<label_t, scalar_t>(labels, tau, args, eps, y); });
      })
      AT_DISPATCH_CASE(at::kShort, [&] {
        using label_t = scalar_t;
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "relax_from_labels_cpu_out",
                                        [&] { relax_labels_impl<label_t, scalar_t>(labels, tau, args, eps, y); });
      })
      AT_DISPATCH_CASE(at::kInt, [&] {
        using label_t = scalar_t;
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "relax_from_labels_cpu_out",
                                        [&] { relax_labels_impl<label_t, scalar_t>(labels, tau, args, eps, y); });
      })
      AT_DISPATCH_CASE(at::kLong, [&] {
        using label_t = scalar_t;
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "relax_from_labels_cpu_out",
                                        [&] { relax_labels_impl<label_t, scalar_t>(labels, tau, args, eps, y); });
      }));
  return y;
}

at::Tensor relax_from_logits_cpu(const at::Tensor& logits_in, at::IntArrayRef field_sizes, const at::Tensor& tau,
                                 const at::Tensor& rng_state, at::ScalarType dtype) {
  RelaxArgs args = check_relax_from_logits(logits_in, field_sizes, tau, rng_state, dtype);
  read_state(rng_state, &args.seed, &args.offset);
  const at::Tensor logits = logits_in.contiguous();
  at::Tensor y = at::empty(logits.sizes(), logits.options().dtype(dtype));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "relax_from_logits_cpu", [&] {
    using in_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "relax_from_logits_cpu_out",
                                    [&] { relax_logits_impl<in_t, scalar_t>(logits, tau, args, y); });
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(gnsm, CPU, m) {
  m.impl("relax_from_labels", &relax_from_labels_cpu);
  m.impl("relax_from_logits", &relax_from_logits_cpu);
}

}  // namespace cpu
}  // namespace gnsm
