// Emulation stand-in for c10/cuda/CUDAException.h (see tests/cuda_emulation/include/cuda_emulation.h).
#pragma once
#include <c10/util/Exception.h>
#include "cuda_emulation.h"

#define C10_CUDA_KERNEL_LAUNCH_CHECK() ::cuda_emu::launch_check(__FILE__, __LINE__)
#define C10_CUDA_CHECK(expr)                                                                     \
  do {                                                                                           \
    const cudaError_t gnsm_emu_err = (expr);                                                     \
    TORCH_CHECK(gnsm_emu_err == cudaSuccess, "CUDA error (emulated): ", cudaGetErrorString(gnsm_emu_err)); \
  } while (0)
