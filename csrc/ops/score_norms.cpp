// Schema and checks of score_norms: per-record and per-(field, position) L2 norms of the network's
// score s = tau (K softmax(l) - 1), the features of the anomaly score (DESIGN 1.6), without
// materializing s.
#include "ops/score_norms.h"

#include <torch/library.h>

namespace gnsm {

NormArgs check_score_norms(const at::Tensor& output, at::IntArrayRef field_sizes, const at::Tensor& tau) {
  NormArgs args;
  check_float_input(output, "output", output.device());
  args.layout = check_field_sizes(field_sizes, output.size(1), "output");
  check_tau(tau, output.size(0), output.device());
  check_tau_range_on_host(tau);
  args.dims = dims_of(output.sizes(), "output");
  return args;
}

TORCH_LIBRARY_FRAGMENT(gnsm, m) {
  m.set_python_module("gnsm.ops");  // where the fake (meta) implementations live
  m.def("score_norms(Tensor output, int[] field_sizes, Tensor tau) -> (Tensor, Tensor)");
}

}  // namespace gnsm
