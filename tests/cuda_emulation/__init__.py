"""Runs the CUDA kernels of csrc/ops/cuda/ on the CPU: the kernels compiled as host C++ against an
emulation of the CUDA runtime (build.py, include/cuda_emulation.h, runtime.cpp), registered as the CPU
kernels of ``torch.ops.gnsm_emu``, and ``EmulatedCuda``, which sends every ``torch.ops.gnsm`` call made
while it is active to those kernels.

The test suite uses it when ``GNSM_CUDA_EMULATION=1`` and no GPU is present (tests/conftest.py): the
``cuda`` entries of the device grid then run on CPU tensors through the emulated kernels. Tensors stay
CPU tensors, so what the emulation cannot show is device placement (every ``.to("cuda")`` is a no-op)
and real concurrency (fibers switch only at barriers).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

DEFAULT_LIBRARY = Path(__file__).resolve().parents[2] / "build" / "cuda_emulation" / "libgnsm_cuda_emu.so"
_loaded: Path | None = None


def library_path() -> Path:
    """Where the emulated kernels are (``GNSM_CUDA_EMULATION_LIB`` overrides the default build path)."""
    return Path(os.environ.get("GNSM_CUDA_EMULATION_LIB", DEFAULT_LIBRARY))


def load() -> None:
    """Loads the emulated kernels (``torch.ops.gnsm_emu``) once; gnsm's own ops must be loaded first."""
    global _loaded
    if _loaded is not None:
        return
    import gnsm.ops  # noqa: F401  (registers torch.ops.gnsm and its fake/autograd functions first)

    path = library_path()
    if not path.exists():
        raise FileNotFoundError(f"{path}: build it with `python tests/cuda_emulation/build.py`")
    torch.ops.load_library(str(path))
    _loaded = path


def launch_count() -> int:
    """Number of emulated kernel launches so far (on this thread)."""
    return int(torch.ops.cuda_emu.launch_count())


class EmulatedCuda:
    """Inside ``with EmulatedCuda():`` every ``torch.ops.gnsm.<op>`` on CPU tensors runs the emulated
    CUDA kernel ``torch.ops.gnsm_emu.<op>``, and gnsm's Python layer takes its GPU branches.

    The redirection is a CPU kernel registered over gnsm's own for the duration (the dispatcher keeps the
    earlier registration and restores it on exit), so it sits below autograd and works under
    ``torch.compile``: gnsm's autograd formulas run as on a GPU and their backward ops are redirected
    too. An op without a CUDA kernel raises, as it would on a GPU. ``calls`` counts the calls per op.
    """

    def __init__(self) -> None:
        load()
        self.calls: dict[str, int] = {}
        self._lib: torch.library.Library | None = None
        self._saved_grad_in_forward = None

    def _kernel(self, name: str):
        qualified = f"gnsm_emu::{name}"
        if not torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "CPU"):
            def missing(*args, **kwargs):
                raise NotImplementedError(f"gnsm::{name} has no CUDA kernel (nothing registered in csrc/ops/cuda)")
            return missing
        op_name, _, overload = name.partition(".")
        op = getattr(getattr(torch.ops.gnsm_emu, op_name), overload or "default")

        def kernel(*args, **kwargs):
            self.calls[op_name] = self.calls.get(op_name, 0) + 1
            return op(*args, **kwargs)
        return kernel

    def __enter__(self) -> "EmulatedCuda":
        import gnsm.ops as gnsm_ops

        names = [n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("gnsm::")]
        lib = torch.library.Library("gnsm", "IMPL")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Overriding a previously registered kernel": on purpose
            for name in names:
                lib.impl(name, self._kernel(name), "CPU")
        self._lib = lib
        self._saved_grad_in_forward = gnsm_ops._grad_in_forward
        gnsm_ops._grad_in_forward = lambda output: False  # the loss's gradient by the backward kernel
        return self

    def __exit__(self, *exc) -> None:
        import gnsm.ops as gnsm_ops

        gnsm_ops._grad_in_forward = self._saved_grad_in_forward
        if self._lib is not None:
            self._lib._destroy()
            self._lib = None


def emulated_cuda() -> EmulatedCuda:
    """``with emulated_cuda():`` gnsm's ops run the emulated CUDA kernels (see EmulatedCuda)."""
    return EmulatedCuda()


__all__ = ["DEFAULT_LIBRARY", "EmulatedCuda", "emulated_cuda", "launch_count", "library_path", "load"]
