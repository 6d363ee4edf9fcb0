// Emulation stand-in for c10/cuda/CUDAGuard.h: one emulated device, nothing to switch.
#pragma once
#include <c10/core/Device.h>
#include "cuda_emulation.h"

namespace c10 {
namespace cuda {
struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
  explicit CUDAGuard(c10::DeviceIndex) {}
};
struct OptionalCUDAGuard {
  OptionalCUDAGuard() = default;
  explicit OptionalCUDAGuard(c10::Device) {}
};
}  // namespace cuda
}  // namespace c10
