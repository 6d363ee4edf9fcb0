// Host emulation of the parts of the CUDA runtime and language that csrc/ops/cuda/*.cu use, so those
// files compile as plain C++ and their kernels execute on the CPU (tests/cuda_emulation/build.py).
//
// Model: a launch runs its blocks one after the other; every thread of a block is a fiber (ucontext) on
// the calling OS thread, switched only at __syncthreads and warp shuffles, so the kernel code runs
// unchanged and races between fibers cannot happen outside those points. Checked strictly:
//  * launch configuration: 1 <= grid.x <= 2^31 - 1, grid.y/z <= 65535, block.x/y <= 1024, block.z <= 64,
//    threads per block <= 1024, dynamic shared memory <= 48 KiB, a grid size that does not fit dim3's
//    unsigned fields (it would be truncated by the real <<<>>> conversion) is reported too;
//  * __syncthreads: every thread of the block must reach the same barrier (a thread that exits, or waits
//    at a warp shuffle, while others wait at the barrier is reported);
//  * __shfl_*_sync: every lane named in the mask must reach a shuffle at the same source line with the
//    same mask; missing lanes (exited, at a barrier, at another shuffle) are reported, as is a source lane
//    outside the mask.
// A violation stops the launch; C10_CUDA_KERNEL_LAUNCH_CHECK() then throws it as a c10::Error, as a
// failed launch does on a GPU. __expf / __logf follow the hardware's approximate units (ex2/lg2.approx
// with flush-to-zero): the argument of ex2 rounded to fp32 after the multiply by log2(e), and lg2 with
// an absolute error of about 2^-22 on [0.5, 2].
#pragma once

#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- language keywords -------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __grid_constant__
#define __restrict__
// Block-shared variables: one instance per OS thread, and a block's fibers all run on one OS thread.
#define __shared__ static thread_local
#define warpSize 32

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;

struct CUstream_st;
using cudaStream_t = CUstream_st*;

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
};
enum : unsigned int { cudaHostAllocDefault = 0, cudaHostAllocPortable = 1, cudaHostAllocMapped = 2 };

namespace cuda_emu {

// Coordinates of the running fiber's thread (valid inside a kernel only).
struct ThreadCoords {
  dim3 thread_idx, block_idx, block_dim, grid_dim;
};
const ThreadCoords& coords();

// Barriers; they switch to the next fiber of the block until every participant arrived.
void syncthreads(const char* file, int line);
// Exchanges `bytes` of `value` across the lanes of `mask`; returns the bytes of lane `src_of(lane)`.
// kind: 0 xor, 1 index (absolute), 2 down, 3 up.
uint64_t shuffle(const char* file, int line, unsigned mask, uint64_t value, int kind, int arg, int width);

// Launch of `body` (called once per thread) on grid x block; records a failure instead of throwing.
void launch(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& body, const std::string& config_error);
// Throws (as c10::Error) the failure of the last launch on this thread, if any, and clears it.
void launch_check(const char* file, int line);
cudaError_t last_error(bool clear);
const char* error_string(cudaError_t err);
uint64_t launch_count();

template <typename T>
inline std::string to_dim3(T v, unsigned int* out, const char* what) {
  if constexpr (std::is_same_v<std::decay_t<T>, dim3>) {
    *out = v.x;
    return {};
  } else {
    static_assert(std::is_integral_v<std::decay_t<T>>, "launch configuration: expected an integer or dim3");
    const long long s = static_cast<long long>(v);
    if (s < 0 || static_cast<unsigned long long>(s) > std::numeric_limits<unsigned int>::max()) {
      *out = static_cast<unsigned int>(v);
      return std::string(what) + " " + std::to_string(s) + " does not fit dim3 (the <<<>>> conversion truncates it)";
    }
    *out = static_cast<unsigned int>(v);
    return {};
  }
}

template <typename T>
inline dim3 as_dim3(T v, const char* what, std::string* err) {
  if constexpr (std::is_same_v<std::decay_t<T>, dim3>) {
    return v;
  } else {
    unsigned int x = 0;
    const std::string e = to_dim3(v, &x, what);
    if (!e.empty() && err->empty()) *err = e;
    return dim3(x);
  }
}

// kernel<<<grid, block, smem, stream>>>(args...) is rewritten to Launch(grid, block, smem, stream).run(kernel, args...).
struct Launch {
  dim3 grid, block;
  size_t shared_bytes;
  std::string error;
  template <typename G, typename B>
  Launch(G g, B b, size_t smem = 0, cudaStream_t = nullptr) : shared_bytes(smem) {
    grid = as_dim3(g, "grid size", &error);
    block = as_dim3(b, "block size", &error);
  }
  template <typename... P, typename... A>
  void run(void (*kernel)(P...), A&&... args) {
    static_assert(sizeof...(P) == sizeof...(A), "kernel launch: wrong number of arguments");
    // Arguments are converted to the parameter types once, as cudaLaunchKernel copies them; every
    // thread then receives its own copy (by-value parameters).
    std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
    launch(grid, block, shared_bytes, [&] { std::apply(kernel, params); }, error);
  }
};

// Approximate hardware units (see the file comment).
inline float ex2_approx(float t) {
  const float r = static_cast<float>(std::exp2(static_cast<double>(t)));
  return r < FLT_MIN ? 0.0f : r;  // flush-to-zero of subnormal results
}
inline float lg2_approx(float x) {
  if (x < FLT_MIN) return x < 0.0f || std::isnan(x) ? NAN : -INFINITY;  // subnormal inputs flush to 0
  if (std::isinf(x)) return INFINITY;
  const double r = std::log2(static_cast<double>(x));
  return static_cast<float>(std::nearbyint(r * 4194304.0) / 4194304.0);  // absolute error <= 2^-23
}

}  // namespace cuda_emu

#define threadIdx (::cuda_emu::coords().thread_idx)
#define blockIdx (::cuda_emu::coords().block_idx)
#define blockDim (::cuda_emu::coords().block_dim)
#define gridDim (::cuda_emu::coords().grid_dim)

#define __syncthreads() ::cuda_emu::syncthreads(__FILE__, __LINE__)

namespace cuda_emu {
template <typename T>
inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle: value of at most 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
template <typename T>
inline T shfl(const char* file, int line, unsigned mask, T v, int kind, int arg, int width = 32) {
  return from_bits<T>(shuffle(file, line, mask, to_bits(v), kind, arg, width));
}
}  // namespace cuda_emu

#define __shfl_xor_sync(mask, v, ...) ::cuda_emu::shfl(__FILE__, __LINE__, mask, v, 0, __VA_ARGS__)
#define __shfl_sync(mask, v, ...) ::cuda_emu::shfl(__FILE__, __LINE__, mask, v, 1, __VA_ARGS__)
#define __shfl_down_sync(mask, v, ...) ::cuda_emu::shfl(__FILE__, __LINE__, mask, v, 2, __VA_ARGS__)
#define __shfl_up_sync(mask, v, ...) ::cuda_emu::shfl(__FILE__, __LINE__, mask, v, 3, __VA_ARGS__)

// CUDA declares the classification functions in the global namespace for device code.
using std::isfinite;
using std::isinf;
using std::isnan;

template <typename T>
inline T __ldg(const T* p) {
  return *p;
}

inline float __expf(float x) { return ::cuda_emu::ex2_approx(x * 1.44269504088896341f); }
inline float __logf(float x) { return ::cuda_emu::lg2_approx(x) * 0.693147180559945309f; }
inline float __log2f(float x) { return ::cuda_emu::lg2_approx(x); }
inline float __exp10f(float x) { return ::cuda_emu::ex2_approx(x * 3.32192809488736235f); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }

// Atomics and fences: fibers switch only at barriers, so plain read-modify-write is atomic here.
template <typename T>
inline T atomicCAS(T* address, T compare, T val) {
  const T old = *address;
  if (old == compare) *address = val;
  return old;
}
template <typename T>
inline T atomicExch(T* address, T val) {
  const T old = *address;
  *address = val;
  return old;
}
template <typename T>
inline T atomicAdd(T* address, T val) {
  const T old = *address;
  *address = old + val;
  return old;
}
inline void __threadfence() {}
inline void __threadfence_system() {}

// ---- runtime API used by the host code ----------------------------------------------------------
inline cudaError_t cudaGetLastError() { return ::cuda_emu::last_error(true); }
inline cudaError_t cudaPeekAtLastError() { return ::cuda_emu::last_error(false); }
inline const char* cudaGetErrorString(cudaError_t e) { return ::cuda_emu::error_string(e); }
cudaError_t cudaHostAlloc(void** ptr, size_t size, unsigned int flags);
cudaError_t cudaHostGetDevicePointer(void** device_ptr, void* host_ptr, unsigned int flags);
cudaError_t cudaFreeHost(void* ptr);
