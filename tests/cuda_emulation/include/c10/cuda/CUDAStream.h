// Emulation stand-in for c10/cuda/CUDAStream.h: kernels run synchronously on the calling thread, so
// there is a single (null) stream.
#pragma once
#include <c10/core/Device.h>
#include "cuda_emulation.h"

namespace c10 {
namespace cuda {
struct CUDAStream {
  cudaStream_t stream() const { return nullptr; }
  operator cudaStream_t() const { return nullptr; }
  void synchronize() const {}
};
inline CUDAStream getCurrentCUDAStream(c10::DeviceIndex = -1) { return CUDAStream{}; }
inline CUDAStream getDefaultCUDAStream(c10::DeviceIndex = -1) { return CUDAStream{}; }
}  // namespace cuda
}  // namespace c10
