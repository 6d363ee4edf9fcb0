// relax_from_labels / relax_from_logits: schema in relax.cpp, kernels in cpu/ and cuda/.
#pragma once

#include "utils/checks.h"

namespace gnsm {

struct RelaxArgs {
  Dims dims;           // of the output y: (B, C, S)
  FieldLayout layout;
  uint64_t seed = 0;   // host copy where the state lives on the host (CPU); the CUDA kernels read it on device
  uint64_t offset = 0;
};

// Validates everything before a kernel runs; labels are (B, J, *spatial).
RelaxArgs check_relax_from_labels(const at::Tensor& labels, at::IntArrayRef field_sizes, const at::Tensor& tau,
                                  const at::Tensor& rng_state, double eps, at::ScalarType dtype);
// logits are (B, C, *spatial).
RelaxArgs check_relax_from_logits(const at::Tensor& logits, at::IntArrayRef field_sizes, const at::Tensor& tau,
                                  const at::Tensor& rng_state, at::ScalarType dtype);

// Output shape (B, C, *spatial) of labels (B, J, *spatial).
std::vector<int64_t> relaxed_shape(const at::Tensor& labels, int64_t channels);

}  // namespace gnsm
