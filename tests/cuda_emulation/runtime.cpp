// The fiber scheduler behind cuda_emulation.h: blocks run one after the other on the launching OS
// thread; the threads of a block are ucontext fibers switched at __syncthreads and warp shuffles.
#include "cuda_emulation.h"

#include <c10/util/Exception.h>
#include <torch/library.h>

#include <sys/mman.h>
#include <ucontext.h>

#include <cstdlib>
#include <sstream>
#include <vector>

namespace cuda_emu {
namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr int kMaxThreads = 1024;

enum class State { kRunnable, kAtSync, kAtShuffle, kDone };

struct Fiber {
  ucontext_t ctx;
  State state = State::kRunnable;
  int tid = 0;
  ThreadCoords coords;
  // At a barrier: where it waits (file, line) and, for a shuffle, what it exchanges.
  const char* file = nullptr;
  int line = 0;
  unsigned mask = 0;
  int kind = 0, arg = 0, width = 32;
  uint64_t value = 0, result = 0;
};

struct Warp {
  unsigned arrived = 0;
};

struct BlockRun {
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  int nthreads = 0;
  int at_sync = 0;
  const std::function<void()>* body = nullptr;
  std::string error;  // first violation; stops the block
  ucontext_t scheduler;
  int current = -1;
};

thread_local BlockRun* g_run = nullptr;
thread_local std::string g_last_error_message;
thread_local cudaError_t g_last_error = cudaSuccess;
thread_local uint64_t g_launches = 0;
thread_local char* g_stacks = nullptr;  // kMaxThreads stacks, reused by every launch of this (single) OS thread
thread_local bool g_in_launch = false;

char* stacks() {
  if (g_stacks == nullptr) {
    void* p = mmap(nullptr, kStackBytes * kMaxThreads, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    TORCH_CHECK(p != MAP_FAILED, "cuda emulation: could not map the fiber stacks");
    g_stacks = static_cast<char*>(p);
  }
  return g_stacks;
}

std::string where(const char* file, int line) {
  std::string f = file ? file : "?";
  const auto slash = f.find_last_of('/');
  if (slash != std::string::npos) f = f.substr(slash + 1);
  return f + ":" + std::to_string(line);
}

std::string block_str(const dim3& b) {
  return "(" + std::to_string(b.x) + ", " + std::to_string(b.y) + ", " + std::to_string(b.z) + ")";
}

void fail(BlockRun& run, const std::string& msg) {
  if (run.error.empty()) run.error = msg + " in block " + block_str(run.fibers[0].coords.block_idx);
}

// Returns to the scheduler; resumes when the scheduler switches back to this fiber.
void yield_to_scheduler() {
  BlockRun& run = *g_run;
  Fiber& f = run.fibers[run.current];
  swapcontext(&f.ctx, &run.scheduler);
}

void fiber_entry() {
  BlockRun& run = *g_run;
  Fiber& f = run.fibers[run.current];
  try {
    (*run.body)();
  } catch (const std::exception& e) {
    fail(run, std::string("exception in thread ") + std::to_string(f.tid) + ": " + e.what());
  } catch (...) {
    fail(run, "unknown exception in thread " + std::to_string(f.tid));
  }
  run.fibers[run.current].state = State::kDone;
  // uc_link returns to the scheduler.
}

std::string lanes_str(unsigned bits, int base) {
  std::ostringstream os;
  bool first = true;
  for (int l = 0; l < 32; ++l) {
    if (bits & (1u << l)) {
      os << (first ? "" : ", ") << l << " (thread " << base + l << ")";
      first = false;
    }
  }
  return os.str();
}

std::string state_str(const Fiber& f) {
  switch (f.state) {
    case State::kDone: return "exited";
    case State::kAtSync: return "waits at __syncthreads " + where(f.file, f.line);
    case State::kAtShuffle: return "waits at a shuffle " + where(f.file, f.line);
    default: return "runs";
  }
}

// Nothing can run but some fibers wait: name who is missing from each barrier.
void report_deadlock(BlockRun& run) {
  std::ostringstream os;
  for (size_t w = 0; w < run.warps.size(); ++w) {
    const unsigned arrived = run.warps[w].arrived;
    if (arrived == 0) continue;
    const int base = static_cast<int>(w) * 32;
    int first = -1;
    for (int l = 0; l < 32; ++l) {
      if (arrived & (1u << l)) { first = base + l; break; }
    }
    const Fiber& f = run.fibers[first];
    const unsigned missing = f.mask & ~arrived;
    os << "__shfl_*_sync at " << where(f.file, f.line) << " (mask 0x" << std::hex << f.mask << std::dec << "), warp "
       << w << ": lanes " << lanes_str(arrived, base) << " wait, missing lanes:";
    for (int l = 0; l < 32; ++l) {
      if (!(missing & (1u << l))) continue;
      const int t = base + l;
      os << " " << l << (t < run.nthreads ? " " + state_str(run.fibers[t]) : std::string(" (no such thread in the block)")) << ";";
    }
    fail(run, os.str());
    return;
  }
  if (run.at_sync > 0) {
    int waiting = -1;
    for (const Fiber& f : run.fibers) {
      if (f.state == State::kAtSync) { waiting = f.tid; break; }
    }
    os << "__syncthreads at " << where(run.fibers[waiting].file, run.fibers[waiting].line) << ": " << run.at_sync << " of "
       << run.nthreads << " threads wait;";
    int shown = 0;
    for (const Fiber& f : run.fibers) {
      if (f.state != State::kAtSync && shown < 4) {
        os << " thread " << f.tid << " " << state_str(f) << ";";
        ++shown;
      }
    }
    fail(run, os.str());
    return;
  }
  fail(run, "deadlock");
}

void release_shuffle(BlockRun& run, int warp, const Fiber& last) {
  const int base = warp * 32;
  const unsigned mask = last.mask;
  for (int l = 0; l < 32; ++l) {
    if (!(mask & (1u << l))) continue;
    Fiber& f = run.fibers[base + l];
    const int seg = l & ~(f.width - 1);
    int src = l;
    switch (f.kind) {
      case 0: src = l ^ f.arg; if (src >= seg + f.width) src = l; break;
      case 1: src = seg + (f.arg & (f.width - 1)); break;
      case 2: src = l + f.arg; if (src >= seg + f.width) src = l; break;
      default: src = l - f.arg; if (src < seg) src = l; break;
    }
    if (!(mask & (1u << src))) {
      fail(run, "__shfl_*_sync at " + where(f.file, f.line) + ": lane " + std::to_string(l) + " reads lane " +
                    std::to_string(src) + ", which is not in the mask");
    }
    f.result = run.fibers[base + src].value;
  }
  for (int l = 0; l < 32; ++l) {
    if (mask & (1u << l)) run.fibers[base + l].state = State::kRunnable;
  }
  run.warps[warp].arrived = 0;
}

}  // namespace

const ThreadCoords& coords() {
  TORCH_CHECK(g_run != nullptr && g_run->current >= 0, "cuda emulation: threadIdx/blockIdx read outside a kernel");
  return g_run->fibers[g_run->current].coords;
}

void syncthreads(const char* file, int line) {
  BlockRun& run = *g_run;
  Fiber& f = run.fibers[run.current];
  f.state = State::kAtSync;
  f.file = file;
  f.line = line;
  if (run.at_sync > 0) {
    for (const Fiber& o : run.fibers) {
      if (o.state == State::kAtSync && o.tid != f.tid && (o.line != line || std::strcmp(o.file, file) != 0)) {
        fail(run, "__syncthreads: thread " + std::to_string(f.tid) + " waits at " + where(file, line) + ", thread " +
                      std::to_string(o.tid) + " at " + where(o.file, o.line));
        break;
      }
    }
  }
  if (++run.at_sync == run.nthreads) {
    for (Fiber& o : run.fibers) o.state = State::kRunnable;
    run.at_sync = 0;
    return;
  }
  yield_to_scheduler();
}

uint64_t shuffle(const char* file, int line, unsigned mask, uint64_t value, int kind, int arg, int width) {
  BlockRun& run = *g_run;
  Fiber& f = run.fibers[run.current];
  const int lane = f.tid % 32, warp = f.tid / 32;
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
    fail(run, "__shfl_*_sync at " + where(file, line) + ": width " + std::to_string(width) + " is not a power of 2 <= 32");
  }
  if (!(mask & (1u << lane))) {
    fail(run, "__shfl_*_sync at " + where(file, line) + ": lane " + std::to_string(lane) + " calls it but is not in the mask");
  }
  Warp& w = run.warps[warp];
  if (w.arrived != 0) {
    int other = -1;
    for (int l = 0; l < 32; ++l) {
      if (w.arrived & (1u << l)) { other = warp * 32 + l; break; }
    }
    const Fiber& o = run.fibers[other];
    if (o.mask != mask || o.line != line || std::strcmp(o.file, file) != 0) {
      fail(run, "__shfl_*_sync: lane " + std::to_string(lane) + " of warp " + std::to_string(warp) + " is at " +
                    where(file, line) + " while lane " + std::to_string(o.tid % 32) + " is at " + where(o.file, o.line) +
                    " (divergent shuffles)");
    }
  }
  f.state = State::kAtShuffle;
  f.file = file;
  f.line = line;
  f.mask = mask;
  f.kind = kind;
  f.arg = arg;
  f.width = width;
  f.value = value;
  w.arrived |= 1u << lane;
  if ((w.arrived & mask) == mask) {
    release_shuffle(run, warp, f);
  } else {
    yield_to_scheduler();
  }
  return run.fibers[run.current].result;
}

void launch(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& body, const std::string& config_error) {
  ++g_launches;
  auto set_error = [](cudaError_t code, const std::string& msg) {
    if (g_last_error == cudaSuccess) {
      g_last_error = code;
      g_last_error_message = msg;
    }
  };
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  std::string cfg = config_error;
  if (cfg.empty()) {
    if (grid.x < 1 || grid.y < 1 || grid.z < 1) cfg = "grid " + block_str(grid) + " has a zero dimension";
    else if (grid.x > 2147483647u) cfg = "grid.x = " + std::to_string(grid.x) + " > 2^31 - 1";
    else if (grid.y > 65535u || grid.z > 65535u) cfg = "grid " + block_str(grid) + ": y and z must be <= 65535";
    else if (block.x < 1 || block.y < 1 || block.z < 1) cfg = "block " + block_str(block) + " has a zero dimension";
    else if (block.x > 1024u || block.y > 1024u || block.z > 64u) cfg = "block " + block_str(block) + " exceeds (1024, 1024, 64)";
    else if (threads > 1024u) cfg = "block " + block_str(block) + " has " + std::to_string(threads) + " > 1024 threads";
    else if (shared_bytes > 48u * 1024u) cfg = "dynamic shared memory " + std::to_string(shared_bytes) + " > 48 KiB";
  }
  if (!cfg.empty()) {
    set_error(cudaErrorInvalidConfiguration, "invalid configuration argument: " + cfg);
    return;
  }
  TORCH_CHECK(!g_in_launch, "cuda emulation: a kernel launched another kernel");
  g_in_launch = true;
  char* stack_base = stacks();
  BlockRun run;
  run.nthreads = static_cast<int>(threads);
  run.fibers.resize(threads);
  run.warps.resize((threads + 31) / 32);
  run.body = &body;
  BlockRun* saved = g_run;
  g_run = &run;
  for (unsigned bz = 0; bz < grid.z && run.error.empty(); ++bz) {
    for (unsigned by = 0; by < grid.y && run.error.empty(); ++by) {
      for (unsigned bx = 0; bx < grid.x && run.error.empty(); ++bx) {
        run.at_sync = 0;
        for (Warp& w : run.warps) w.arrived = 0;
        for (int t = 0; t < run.nthreads; ++t) {
          Fiber& f = run.fibers[t];
          f.state = State::kRunnable;
          f.tid = t;
          f.coords.thread_idx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
          f.coords.block_idx = dim3(bx, by, bz);
          f.coords.block_dim = block;
          f.coords.grid_dim = grid;
          getcontext(&f.ctx);
          f.ctx.uc_stack.ss_sp = stack_base + static_cast<size_t>(t) * kStackBytes;
          f.ctx.uc_stack.ss_size = kStackBytes;
          f.ctx.uc_link = &run.scheduler;
          makecontext(&f.ctx, fiber_entry, 0);
        }
        // Round robin until every thread exited; a pass in which nothing could run is a deadlock.
        while (run.error.empty()) {
          bool ran = false, all_done = true;
          for (int t = 0; t < run.nthreads && run.error.empty(); ++t) {
            Fiber& f = run.fibers[t];
            if (f.state == State::kDone) continue;
            all_done = false;
            if (f.state != State::kRunnable) continue;
            run.current = t;
            swapcontext(&run.scheduler, &f.ctx);
            run.current = -1;
            ran = true;
          }
          if (all_done) break;
          if (!ran && run.error.empty()) report_deadlock(run);
        }
      }
    }
  }
  g_run = saved;
  g_in_launch = false;
  if (!run.error.empty()) set_error(cudaErrorLaunchFailure, "kernel failed under emulation: " + run.error);
}

void launch_check(const char* file, int line) {
  const cudaError_t e = g_last_error;
  if (e == cudaSuccess) return;
  const std::string msg = g_last_error_message;
  g_last_error = cudaSuccess;
  g_last_error_message.clear();
  TORCH_CHECK(false, "CUDA error (emulated): ", msg, " (checked at ", where(file, line), ")");
}

cudaError_t last_error(bool clear) {
  const cudaError_t e = g_last_error;
  if (clear) {
    g_last_error = cudaSuccess;
    g_last_error_message.clear();
  }
  return e;
}

const char* error_string(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    default: return "emulated CUDA error";
  }
}

uint64_t launch_count() { return g_launches; }

}  // namespace cuda_emu

cudaError_t cudaHostAlloc(void** ptr, size_t size, unsigned int) {
  *ptr = std::calloc(1, size);
  return *ptr ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaHostGetDevicePointer(void** device_ptr, void* host_ptr, unsigned int) {
  *device_ptr = host_ptr;
  return cudaSuccess;
}

cudaError_t cudaFreeHost(void* ptr) {
  std::free(ptr);
  return cudaSuccess;
}

// Introspection for the tests of the emulation itself.
TORCH_LIBRARY(cuda_emu, m) {
  m.def("launch_count() -> int", [] { return static_cast<int64_t>(cuda_emu::launch_count()); });
}
