// CPU rng_state: a fresh 64-bit Philox key drawn from the CPU generator (under its lock), so
// torch.manual_seed reproduces every gnsm result and successive calls get independent streams.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/DistributionsHelper.h>
#include <torch/library.h>

#include <mutex>

namespace gnsm {
namespace cpu {
namespace {

at::Tensor rng_state_cpu(const at::Tensor& like, std::optional<at::Generator> generator) {
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(generator, at::detail::getDefaultCPUGenerator());
  uint64_t seed;
  {
    std::lock_guard<std::mutex> lock(gen->mutex_);
    seed = gen->random64();
  }
  at::Tensor state = at::empty({2}, like.options().dtype(at::kLong));
  state.data_ptr<int64_t>()[0] = static_cast<int64_t>(seed);
  state.data_ptr<int64_t>()[1] = 0;
  return state;
}

}  // namespace

TORCH_LIBRARY_IMPL(gnsm, CPU, m) {
  m.impl("rng_state", &rng_state_cpu);
}

}  // namespace cpu
}  // namespace gnsm
