// The gnsm._C extension module: importing it loads this shared library, whose static initializers
// register the ops (TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL in csrc/ops/); the module itself
// only carries the build facts.
#include <pybind11/pybind11.h>

#include "gnsm_config.h"
#include "utils/checks.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "gnsm compiled ops (registered as torch.ops.gnsm.*) and build facts";
  m.def("build_info", [] {
    py::dict info;
    info["version"] = GNSM_VERSION;
    info["cuda"] = static_cast<bool>(GNSM_WITH_CUDA);
    info["cuda_archs"] = GNSM_CUDA_ARCHS;
    info["torch_version"] = GNSM_TORCH_VERSION;
    // The input bounds every op enforces (gnsm.core mirrors them; a test checks they agree).
    info["max_field_size"] = gnsm::kMaxFieldSize;
    info["max_channels"] = gnsm::kMaxChannels;
    info["tau_min"] = gnsm::kTauMin;
    info["tau_max"] = gnsm::kTauMax;
    return info;
  });
}
