// Schemas and checks of the fused score-matching loss (DESIGN 1.4): kl or mse between the network's
// score and the closed-form target, regenerating the Gumbel noise from the relax call's rng_state.
#include "ops/score_matching_loss.h"

#include <torch/library.h>

namespace gnsm {

std::vector<int64_t> per_position_shape(const at::Tensor& output, int64_t num_fields) {
  std::vector<int64_t> shape(output.sizes().begin(), output.sizes().end());
  shape[1] = num_fields;
  return shape;
}

LossArgs check_score_matching_loss(const at::Tensor& output, const at::Tensor& rng_state,
                                   at::IntArrayRef field_sizes, const at::Tensor& tau, c10::string_view kind,
                                   c10::string_view reduction) {
  LossArgs args;
  args.kl = check_kind(kind);
  args.reduction = check_reduction(reduction);
  check_float_input(output, "output", output.device());
  args.layout = check_field_sizes(field_sizes, output.size(1), "output");
  check_tau(tau, output.size(0), output.device());
  check_tau_range_on_host(tau);
  check_rng_state(rng_state, output.device());
  args.dims = dims_of(output.sizes(), "output");
  return args;
}

LossArgs check_score_matching_loss_backward(const at::Tensor& grad, const at::Tensor& output,
                                            const at::Tensor& rng_state, at::IntArrayRef field_sizes,
                                            const at::Tensor& tau, c10::string_view kind,
                                            c10::string_view reduction) {
  LossArgs args = check_score_matching_loss(output, rng_state, field_sizes, tau, kind, reduction);
  TORCH_CHECK_VALUE(grad.device() == output.device(), "grad: expected a tensor on ", output.device(), ", got ",
                    grad.device());
  if (args.reduction == kReduceNone) {
    const auto expected = per_position_shape(output, args.layout.num_fields());
    TORCH_CHECK_VALUE(grad.sizes().vec() == expected, "grad: expected shape ", shape_str(expected), ", got ",
                      shape_str(grad.sizes()));
  } else {
    TORCH_CHECK_VALUE(grad.numel() == 1, "grad: expected a scalar for reduction '", std::string(reduction),
                      "', got shape ", shape_str(grad.sizes()));
  }
  return args;
}

TORCH_LIBRARY_FRAGMENT(gnsm, m) {
  m.set_python_module("gnsm.ops");  // where the fake (meta) implementations live
  m.def("score_matching_loss(Tensor output, Tensor rng_state, int[] field_sizes, Tensor tau, str kind, "
        "str reduction) -> Tensor");
  // CPU only: loss and the gradient for a unit incoming gradient, fused (used by gnsm.ops on the CPU).
  m.def("score_matching_loss_with_grad(Tensor output, Tensor rng_state, int[] field_sizes, Tensor tau, str kind, "
        "str reduction) -> (Tensor, Tensor)");
  m.def("score_matching_loss_backward(Tensor grad, Tensor output, Tensor rng_state, int[] field_sizes, "
        "Tensor tau, str kind, str reduction) -> Tensor");
}

}  // namespace gnsm
