// gumbel_noise / target_score: schema in target_score.cpp, kernels in cpu/ and cuda/.
#pragma once

#include "utils/checks.h"

namespace gnsm {

struct NoiseArgs {
  Dims dims;
  FieldLayout layout;
};

NoiseArgs check_gumbel_noise(const at::Tensor& rng_state, at::IntArrayRef shape);
NoiseArgs check_target_score(const at::Tensor& rng_state, at::IntArrayRef shape, at::IntArrayRef field_sizes,
                             const at::Tensor& tau);

}  // namespace gnsm
