// score_matching_loss (+ fused backward): schema in score_matching_loss.cpp, kernels in cpu/ and cuda/.
#pragma once

#include "utils/checks.h"

namespace gnsm {

struct LossArgs {
  Dims dims;
  FieldLayout layout;
  bool kl = true;
  int reduction = kReduceMean;
};

LossArgs check_score_matching_loss(const at::Tensor& output, const at::Tensor& rng_state,
                                   at::IntArrayRef field_sizes, const at::Tensor& tau, c10::string_view kind,
                                   c10::string_view reduction);
// grad: a scalar for mean/sum, (B, J, *spatial) for none.
LossArgs check_score_matching_loss_backward(const at::Tensor& grad, const at::Tensor& output,
                                            const at::Tensor& rng_state, at::IntArrayRef field_sizes,
                                            const at::Tensor& tau, c10::string_view kind,
                                            c10::string_view reduction);

// Shape of the per-position loss: (B, J, *spatial).
std::vector<int64_t> per_position_shape(const at::Tensor& output, int64_t num_fields);

}  // namespace gnsm
