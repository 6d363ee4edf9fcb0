// Schemas and checked entry points of the relax ops (DESIGN 1.2): a fused Gumbel draw and log-space
// softmax relaxation, from integer labels (no one-hot materialized) or from float class logits.
#include "ops/relax.h"

#include <torch/library.h>

namespace gnsm {

std::vector<int64_t> relaxed_shape(const at::Tensor& labels, int64_t channels) {
  std::vector<int64_t> shape(labels.sizes().begin(), labels.sizes().end());
  shape[1] = channels;
  return shape;
}

RelaxArgs check_relax_from_labels(const at::Tensor& labels, at::IntArrayRef field_sizes, const at::Tensor& tau,
                                  const at::Tensor& rng_state, double eps, at::ScalarType dtype) {
  RelaxArgs args;
  args.layout = check_field_sizes(field_sizes, -1, "labels");
  check_output_dtype(dtype, "dtype");
  TORCH_CHECK_VALUE(eps > 0 && eps < 1, "eps: expected a clip value in (0, 1), got ", eps);
  check_labels(labels, args.layout);
  check_tau(tau, labels.size(0), labels.device());
  check_tau_range_on_host(tau);
  check_rng_state(rng_state, labels.device());
  args.dims = dims_of(relaxed_shape(labels, args.layout.channels), "labels");
  return args;
}

RelaxArgs check_relax_from_logits(const at::Tensor& logits, at::IntArrayRef field_sizes, const at::Tensor& tau,
                                  const at::Tensor& rng_state, at::ScalarType dtype) {
  RelaxArgs args;
  check_float_input(logits, "logits", logits.device());
  args.layout = check_field_sizes(field_sizes, logits.size(1), "logits");
  check_output_dtype(dtype, "dtype");
  check_tau(tau, logits.size(0), logits.device());
  check_tau_range_on_host(tau);
  check_rng_state(rng_state, logits.device());
  check_finite(logits, "logits");
  args.dims = dims_of(logits.sizes(), "logits");
  return args;
}

TORCH_LIBRARY_FRAGMENT(gnsm, m) {
  m.set_python_module("gnsm.ops");  // where the fake (meta) implementations live
  m.def("relax_from_labels(Tensor labels, int[] field_sizes, Tensor tau, Tensor rng_state, float eps, "
        "ScalarType dtype) -> Tensor");
  m.def("relax_from_logits(Tensor logits, int[] field_sizes, Tensor tau, Tensor rng_state, ScalarType dtype) "
        "-> Tensor");
}

}  // namespace gnsm
