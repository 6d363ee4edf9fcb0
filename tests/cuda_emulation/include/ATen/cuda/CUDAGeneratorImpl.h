// Emulation stand-in for ATen/cuda/CUDAGeneratorImpl.h. The emulated "CUDA" tensors are CPU tensors,
// so the generator is a CPU generator: philox_cuda_state takes the generator's seed and a fresh
// offset drawn from it (reproducible under torch.manual_seed and explicit generators; unlike the real
// CUDA generator the offsets of successive calls are not increasing).
#pragma once
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <ATen/cuda/PhiloxUtils.cuh>
#include "cuda_emulation.h"

namespace at {
struct CUDAGeneratorImpl : public CPUGeneratorImpl {
  static c10::DeviceType device_type() { return c10::DeviceType::CPU; }
  PhiloxCudaState philox_cuda_state(uint64_t increment) {
    const uint64_t offset = (random64() >> 8) / increment * increment;
    return PhiloxCudaState(current_seed(), offset);
  }
};
static_assert(sizeof(CUDAGeneratorImpl) == sizeof(CPUGeneratorImpl), "no state of its own");
namespace cuda {
namespace detail {
inline const Generator& getDefaultCUDAGenerator(c10::DeviceIndex = -1) { return at::detail::getDefaultCPUGenerator(); }
}  // namespace detail
}  // namespace cuda
}  // namespace at
