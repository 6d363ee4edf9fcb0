// Input validation shared by every op and both devices. Each check names the argument and the
// expected value, and runs before any kernel is launched.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace gnsm {

// Fields side by side along dim 1: sizes K_j and their channel offsets.
struct FieldLayout {
  std::vector<int64_t> sizes;
  std::vector<int64_t> offsets;  // offsets[j] = K_0 + ... + K_{j-1}; offsets[J] = C
  int64_t channels = 0;
  int64_t max_size = 0;
  int64_t num_fields() const { return static_cast<int64_t>(sizes.size()); }
};

// A (B, C, *spatial) tensor seen as (B, C, S).
struct Dims {
  int64_t batch = 0;
  int64_t channels = 0;
  int64_t spatial = 1;
};

Dims dims_of(at::IntArrayRef shape, const char* name);

// Largest number of classes in one field, and the bound on their sum C (the CUDA kernels index
// channels in 32 bits); gnsm.core.MAX_FIELD_SIZE mirrors kMaxFieldSize (build_info reports both).
constexpr int64_t kMaxFieldSize = int64_t{1} << 16;
constexpr int64_t kMaxChannels = int64_t{1} << 30;

// Accepted temperatures, inclusive; gnsm.core.TAU_MIN / TAU_MAX mirror them (build_info reports both).
constexpr double kTauMin = 1e-4;
constexpr double kTauMax = 1e4;

// field_sizes: each 1 <= K_j <= kMaxFieldSize, sum < kMaxChannels (checked without overflow); if
// channels >= 0, their sum must equal it.
FieldLayout check_field_sizes(at::IntArrayRef field_sizes, int64_t channels, const char* against);

// tau: floating (float32/float64), shape (batch,), on `device`, finite and > 0.
void check_tau(const at::Tensor& tau, int64_t batch, const at::Device& device);

// tau within [kTauMin, kTauMax] (after check_tau), where value_checks_allowed: CPU tensors, and CUDA in
// GNSM_VALIDATE=eager mode; by default the CUDA kernels check the same range without a host sync.
void check_tau_range_on_host(const at::Tensor& tau);

// rng_state: int64 tensor of two elements ([seed, offset]) on `device`.
void check_rng_state(const at::Tensor& rng_state, const at::Device& device);

// A float tensor (float32/float64/float16/bfloat16) of rank >= 2 on `device`.
void check_float_input(const at::Tensor& t, const char* name, const at::Device& device);

// Finite values only (NaN / inf rejected), with the first offending index in the message.
void check_finite(const at::Tensor& t, const char* name);

// Non-finite network outputs (score_matching_loss, score_norms) are not an input error: they give NaN
// at the affected (field, position) entries and in every reduction over them, never a finite number,
// so a diverging model is caught by its loss. non_finite_positions returns an undefined tensor when
// every value of a host tensor `output` (B, C, *spatial) is finite (one allocation-free pass), else a
// bool (B, J, *spatial) mask of the positions whose field holds a NaN or inf. For CUDA tensors it
// returns undefined: the CUDA kernels poison the field's log-normalizer instead (FieldLse in
// ops/cuda/launch.cuh), the same NaN pattern without a host sync.
at::Tensor non_finite_positions(const at::Tensor& output, const FieldLayout& layout);

// Fills `t` (B, J, *spatial) or, with layout, its (B, C, *spatial) expansion over each field's classes,
// with NaN where `mask` (B, J, *spatial) is true. No-op for an undefined mask.
void fill_nan_where(at::Tensor& t, const at::Tensor& mask);
void fill_nan_where(at::Tensor& t, const at::Tensor& mask, const FieldLayout& layout);

// Integer labels (B, J, *spatial) with 0 <= labels[:, j] < K_j; names the first offending index.
void check_labels(const at::Tensor& labels, const FieldLayout& layout);

// Output storage dtype of a relaxed sample.
void check_output_dtype(at::ScalarType dtype, const char* name);

// kind in {kl, mse}; reduction in {mean, sum, none}.
bool check_kind(c10::string_view kind);  // returns true for "kl"
int check_reduction(c10::string_view reduction);  // 0 mean, 1 sum, 2 none

constexpr int kReduceMean = 0;
constexpr int kReduceSum = 1;
constexpr int kReduceNone = 2;

std::string shape_str(at::IntArrayRef shape);

// Checks that read tensor values (labels, tau, finite logits) need a host sync on CUDA. There they run
// on the host only in the opt-in eager mode GNSM_VALIDATE=eager (for debugging: the error is raised
// by the offending call), and never while a stream is being captured into a graph (the CUDA backend
// registers how to ask, set_capture_query). By default (GNSM_VALIDATE unset or "device") the CUDA
// kernels check the values they read and report the first bad one without a sync, raised by the next
// gnsm CUDA call (ops/cuda/device_checks.cuh). On the CPU the value checks always run on the host.
// The shapes, dtypes and devices are always checked on the host.
void set_capture_query(bool (*is_capturing)());
bool value_checks_allowed(const at::Tensor& t);
bool eager_validation();  // GNSM_VALIDATE=eager (read at every call; "device" or unset: false)

}  // namespace gnsm
