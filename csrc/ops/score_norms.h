// score_norms: schema in score_norms.cpp, kernels in cpu/ and cuda/.
#pragma once

#include "utils/checks.h"

namespace gnsm {

struct NormArgs {
  Dims dims;
  FieldLayout layout;
};

NormArgs check_score_norms(const at::Tensor& output, at::IntArrayRef field_sizes, const at::Tensor& tau);

}  // namespace gnsm
