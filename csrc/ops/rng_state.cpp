// Schema of rng_state: the (seed, offset) pair that every random gnsm op is a deterministic function
// of. Drawing it is the only nondeterministic step, so torch.compile and opcheck treat the heavy ops
// as pure functions, and the loss can regenerate the relax call's noise (as flash-attention does).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(gnsm, m) {
  m.set_python_module("gnsm.ops");  // where the fake (meta) implementations live
  m.def("rng_state(Tensor like, Generator? generator=None) -> Tensor", {at::Tag::nondeterministic_seeded});
}
