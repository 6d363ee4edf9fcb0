// Emulation stand-in for c10/cuda/CUDAGraphsC10Utils.h: no graph capture under emulation.
#pragma once
#include "cuda_emulation.h"

namespace c10 {
namespace cuda {
enum class CaptureStatus : int { None = 0, Active = 1, Invalidated = 2 };
inline CaptureStatus currentStreamCaptureStatusMayInitCtx() { return CaptureStatus::None; }
}  // namespace cuda
}  // namespace c10
