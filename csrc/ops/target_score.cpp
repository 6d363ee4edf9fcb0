// Schemas and checks of gumbel_noise (the noise an rng_state stands for) and target_score, the
// closed-form target t = tau (K softmax(-g) - 1) of DESIGN 1.3 (it depends on the noise only).
#include "ops/target_score.h"

#include <torch/library.h>

namespace gnsm {

static void check_shape(at::IntArrayRef shape) {
  TORCH_CHECK_VALUE(shape.size() >= 2, "shape: expected (B, C, *spatial) with at least 2 dims, got ",
                    shape_str(shape));
  for (auto s : shape) TORCH_CHECK_VALUE(s >= 0, "shape: expected non-negative sizes, got ", shape_str(shape));
}

NoiseArgs check_gumbel_noise(const at::Tensor& rng_state, at::IntArrayRef shape) {
  check_shape(shape);
  check_rng_state(rng_state, rng_state.device());
  NoiseArgs args;
  args.dims = dims_of(shape, "shape");
  return args;
}

NoiseArgs check_target_score(const at::Tensor& rng_state, at::IntArrayRef shape, at::IntArrayRef field_sizes,
                             const at::Tensor& tau) {
  NoiseArgs args = check_gumbel_noise(rng_state, shape);
  args.layout = check_field_sizes(field_sizes, shape[1], "shape");
  check_tau(tau, shape[0], rng_state.device());
  check_tau_range_on_host(tau);
  return args;
}

TORCH_LIBRARY_FRAGMENT(gnsm, m) {
  m.set_python_module("gnsm.ops");  // where the fake (meta) implementations live
  m.def("gumbel_noise(Tensor rng_state, SymInt[] shape) -> Tensor");
  m.def("target_score(Tensor rng_state, SymInt[] shape, int[] field_sizes, Tensor tau) -> Tensor");
}

}  // namespace gnsm
