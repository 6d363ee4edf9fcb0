// CUDA rng_state: the (seed, offset) pair of PyTorch's CUDA Philox generator, taken the way PyTorch's
// own random kernels take it (philox_cuda_state under the generator's lock) and unpacked inside a
// one-thread kernel. Under CUDA graph capture the unpacked offset is read from the graph's offset
// buffer, so every replay writes a fresh [seed, offset] and the gnsm ops that read it on the device
// draw fresh noise per replay.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/PhiloxUtils.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "utils/checks.h"

#include <mutex>
#include <tuple>

namespace gnsm {
namespace cuda {
namespace {

// The gnsm counter uses the 64-bit offset as its high half, so each call needs its own offset; 4 is
// the smallest increment PyTorch's generator accepts (offsets are kept multiples of 4).
constexpr uint64_t kOffsetIncrement = 4;

__global__ void unpack_state_kernel(at::PhiloxCudaState philox, int64_t* out) {
  const auto seeds = at::cuda::philox::unpack(philox);
  out[0] = static_cast<int64_t>(std::get<0>(seeds));
  out[1] = static_cast<int64_t>(std::get<1>(seeds));
}

at::Tensor rng_state_cuda(const at::Tensor& like, std::optional<at::Generator> generator) {
  const c10::cuda::CUDAGuard guard(like.device());
  auto* gen = at::get_generator_or_default<at::CUDAGeneratorImpl>(
      generator, at::cuda::detail::getDefaultCUDAGenerator(like.device().index()));
  TORCH_CHECK_VALUE(gen->device() == like.device(), "generator: expected a generator of ", like.device(),
                    " (the device of `like`), got one of ", gen->device());
  at::PhiloxCudaState philox;
  {
    std::lock_guard<std::mutex> lock(gen->mutex_);
    philox = gen->philox_cuda_state(kOffsetIncrement);
  }
  at::Tensor state = at::empty({2}, like.options().dtype(at::kLong));
  unpack_state_kernel<<<1, 1, 0, c10::cuda::getCurrentCUDAStream()>>>(philox, state.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return state;
}

}  // namespace

TORCH_LIBRARY_IMPL(gnsm, CUDA, m) {
  m.impl("rng_state", &rng_state_cuda);
}

}  // namespace cuda
}  // namespace gnsm

namespace gnsm {
namespace {

bool cuda_stream_capturing() {
  return c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None;
}

// Registers the capture query with the shared checks when the CUDA kernels are loaded.
const bool kCaptureQueryRegistered = (set_capture_query(&cuda_stream_capturing), true);

}  // namespace
}  // namespace gnsm
