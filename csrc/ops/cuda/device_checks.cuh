// Value checks of the CUDA ops without a host synchronization (CUDA-only).
//
// The shape / dtype / device checks of csrc/utils/checks.h run on the host before every launch. The
// checks that read tensor values (labels in [0, K_j), finite temperatures > 0, finite logits) would need
// a device-to-host copy and a stream sync per call, which doubles the cost of a 0.1 ms kernel and is
// illegal under CUDA graph capture. On CUDA they are therefore done by the kernels themselves, on the
// values they read anyway: the first offending value is written, with its coordinates, into one record
// in pinned, device-mapped host memory. Every gnsm CUDA op first looks at that record (a host memory
// read, no sync) and raises the recorded error as the same named ValueError as the host check would,
// so a bad input is reported at the latest by the first gnsm CUDA call after the kernel that saw it
// finished (`raise_device_error`). GNSM_VALIDATE=eager runs the host checks at the call instead, with
// their syncs (see checks.h `value_checks_allowed`).
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "utils/checks.h"

namespace gnsm {
namespace cuda {

enum DeviceErrorCode : int32_t { kNoDeviceError = 0, kBadLabel = 1, kBadTau = 2, kNonFiniteLogit = 3 };

// One record; `code` is written last, so a nonzero code means the other fields are complete.
struct DeviceErrorRecord {
  int32_t claimed;  // set by the first reporting thread; later reports are dropped
  int32_t code;
  int64_t b, j, c, s;  // record, field, channel, flat spatial index
  int64_t bound;       // K_j for labels
  double value;
};

// Kernel-side handle to the record (a device-mapped pointer).
struct DeviceErrors {
  DeviceErrorRecord* rec;

  __device__ __forceinline__ void report(int32_t code, int64_t b, int64_t j, int64_t c, int64_t s, double value,
                                         int64_t bound) const {
    if (atomicCAS(&rec->claimed, 0, 1) != 0) return;
    rec->b = b;
    rec->j = j;
    rec->c = c;
    rec->s = s;
    rec->bound = bound;
    rec->value = value;
    __threadfence_system();  // the fields before the code, as the host sees them
    atomicExch(&rec->code, code);
  }
  template <typename T>
  __device__ __forceinline__ void check_tau(T tau, int64_t b) const {
    // The host check's range, compared in tau's dtype as there (check_tau_range_on_host); NaN fails both.
    if (!(tau >= static_cast<T>(kTauMin) && tau <= static_cast<T>(kTauMax)))
      report(kBadTau, b, 0, 0, 0, static_cast<double>(tau), 0);
  }
  __device__ __forceinline__ void check_label(int64_t label, int64_t K, int64_t b, int64_t j, int64_t s) const {
    if (label < 0 || label >= K) report(kBadLabel, b, j, 0, s, static_cast<double>(label), K);
  }
  template <typename T>
  __device__ __forceinline__ void check_logit(T v, int64_t b, int64_t c, int64_t s) const {
    if (!isfinite(v)) report(kNonFiniteLogit, b, 0, c, s, static_cast<double>(v), 0);
  }
};

// The process's record (allocated on first use, never freed: the kernels may still write it at exit).
// cudaHostAlloc may synchronize the device; it runs once, at the first gnsm CUDA call.
inline DeviceErrorRecord* host_error_record() {
  static DeviceErrorRecord* rec = [] {
    void* p = nullptr;
    C10_CUDA_CHECK(cudaHostAlloc(&p, sizeof(DeviceErrorRecord), cudaHostAllocMapped | cudaHostAllocPortable));
    std::memset(p, 0, sizeof(DeviceErrorRecord));
    return static_cast<DeviceErrorRecord*>(p);
  }();
  return rec;
}

inline DeviceErrors device_errors() {
  void* d = nullptr;
  C10_CUDA_CHECK(cudaHostGetDevicePointer(&d, host_error_record(), 0));
  return DeviceErrors{static_cast<DeviceErrorRecord*>(d)};
}

// Raises (and clears) an error recorded by an earlier kernel; no device synchronization.
inline void raise_device_error() {
  DeviceErrorRecord* rec = host_error_record();
  const int32_t code = *reinterpret_cast<volatile int32_t*>(&rec->code);
  if (code == kNoDeviceError) return;
  std::atomic_thread_fence(std::memory_order_acquire);
  const DeviceErrorRecord r = *rec;
  *reinterpret_cast<volatile int32_t*>(&rec->code) = 0;
  *reinterpret_cast<volatile int32_t*>(&rec->claimed) = 0;
  const char* note =
      " (found on the device by an earlier gnsm CUDA call and raised at this one; GNSM_VALIDATE=eager checks "
      "every call on the host, with a sync)";
  switch (code) {
    case kBadLabel:
      TORCH_CHECK_VALUE(false, "labels: expected values in [0, ", r.bound, ") for field ", r.j, ", found ",
                        static_cast<int64_t>(r.value), " at index (", r.b, ", ", r.j, ", ", r.s, ")", note);
    case kBadTau:
      TORCH_CHECK_VALUE(false, "tau: expected finite temperatures in [", kTauMin, ", ", kTauMax, "], found ", r.value,
                        " at index ", r.b, note);
    default:
      TORCH_CHECK_VALUE(false, "logits: expected finite values, found ", r.value, " at index (", r.b, ", ", r.c, ", ",
                        r.s, ")", note);
  }
}

}  // namespace cuda
}  // namespace gnsm
