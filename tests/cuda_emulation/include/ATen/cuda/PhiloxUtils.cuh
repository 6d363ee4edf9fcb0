// Emulation stand-in for ATen/cuda/PhiloxUtils.cuh: the (seed, offset) pair travels as plain values.
#pragma once
#include <cstdint>
#include <tuple>
#include "cuda_emulation.h"

namespace at {
struct PhiloxCudaState {
  PhiloxCudaState() = default;
  PhiloxCudaState(uint64_t seed, uint64_t offset) : seed_(seed), offset_(offset) {}
  uint64_t seed_ = 0;
  uint64_t offset_ = 0;
};
namespace cuda {
namespace philox {
inline std::tuple<uint64_t, uint64_t> unpack(const at::PhiloxCudaState& s) { return {s.seed_, s.offset_}; }
}  // namespace philox
}  // namespace cuda
}  // namespace at
