"""Builds the CUDA kernels of csrc/ops/cuda/*.cu as host C++ on top of the emulation header
(tests/cuda_emulation/include/cuda_emulation.h) into one shared library that registers them as the
CPU kernels of a separate op namespace, ``torch.ops.gnsm_emu`` (same schemas as ``torch.ops.gnsm``).

The .cu files are compiled from generated copies that differ from the originals in two mechanical
rewrites only, done here (never by hand):

* ``kernel<<<grid, block, smem, stream>>>(args)`` becomes
  ``::cuda_emu::Launch(grid, block, smem, stream).run(kernel, args)`` (same line count, so compiler
  messages point at the original lines through ``#line``);
* ``TORCH_LIBRARY_IMPL(gnsm, CUDA, m)`` becomes ``TORCH_LIBRARY_IMPL(gnsm, CPU, m)``.

Everything is compiled with ``-Dgnsm=gnsm_emu`` (C++ namespace and op namespace both renamed, so the
library can be loaded next to gnsm._C) and ``-DGNSM_CUDA_EMULATION`` (the shared math header takes its
device branch: __expf/__logf, log1pf in the Gumbel transform; the checks treat every tensor as a CUDA
tensor). The op schemas and input checks (csrc/ops/*.cpp, csrc/utils/checks.cpp) are compiled in as
they are. The emulation's own stand-ins for the c10/cuda and ATen/cuda headers come first on the
include path.

Usage: python tests/cuda_emulation/build.py [--jobs N] [--out DIR]; prints the library's path.
Rebuilds only what changed (dependency files of the compiler).
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
LIB_NAME = "libgnsm_cuda_emu.so"
DEFAULT_OUT = ROOT / "build" / "cuda_emulation"


def rewrite_launches(text: str) -> str:
    """Rewrites every ``name<...><<<cfg>>>(`` into ``::cuda_emu::Launch(cfg).run(name<...>, ``."""
    out, pos = [], 0
    while True:
        start = text.find("<<<", pos)
        if start < 0:
            out.append(text[pos:])
            return "".join(out)
        # The kernel expression ends before optional whitespace; it is an identifier (with ::) followed by
        # an optional balanced template argument list.
        end = start
        while end > 0 and text[end - 1].isspace():
            end -= 1
        k = end
        if text[k - 1] == ">":
            depth = 0
            while k > 0:
                k -= 1
                if text[k] == ">":
                    depth += 1
                elif text[k] == "<":
                    depth -= 1
                    if depth == 0:
                        break
        while k > 0 and (text[k - 1].isalnum() or text[k - 1] in "_:"):
            k -= 1
        kernel = text[k:end]
        if not re.match(r"[A-Za-z_:]", kernel):
            raise SystemExit(f"build.py: cannot find the kernel name before <<< at offset {start}")
        close = text.find(">>>", start)
        cfg = text[start + 3:close]
        paren = close + 3
        while text[paren].isspace():
            paren += 1
        if text[paren] != "(":
            raise SystemExit(f"build.py: expected '(' after >>> at offset {close}")
        after = paren + 1
        rest = text[after:]
        no_args = rest.lstrip().startswith(")")
        out.append(text[pos:k])
        # Keep the newlines that were between the kernel name and its arguments.
        gap = text[end:start] + text[close + 3:paren]
        out.append(f"::cuda_emu::Launch({cfg}).run({kernel}{'' if no_args else ', '}{gap}")
        pos = after


def rewrite(source: Path) -> str:
    text = source.read_text()
    n_impl = len(re.findall(r"TORCH_LIBRARY_IMPL\(\s*gnsm\s*,\s*CUDA\s*,", text))
    text = re.sub(r"TORCH_LIBRARY_IMPL\(\s*gnsm\s*,\s*CUDA\s*,", "TORCH_LIBRARY_IMPL(gnsm, CPU,", text)
    text = rewrite_launches(text)
    if n_impl == 0:
        raise SystemExit(f"build.py: {source} has no TORCH_LIBRARY_IMPL(gnsm, CUDA, m)")
    return f'#line 1 "{source}"\n' + text


def torch_flags(python: str) -> tuple[list[str], list[str], str]:
    code = ("import os, sysconfig, torch; from torch.utils import cpp_extension as ce; "
            "print(os.path.dirname(torch.__file__)); print(sysconfig.get_paths()['include']); "
            "print(int(torch._C._GLIBCXX_USE_CXX11_ABI)); "
            "print('c++20' if \"'-std=c++20'\" in open(ce.__file__).read() else 'c++17')")
    torch_dir, py_inc, abi, std = subprocess.check_output([python, "-c", code], text=True).split()
    includes = [f"-I{HERE / 'include'}", f"-I{ROOT / 'csrc'}", f"-I{torch_dir}/include",
                f"-I{torch_dir}/include/torch/csrc/api/include", f"-I{py_inc}"]
    libs = [f"-L{torch_dir}/lib", "-lc10", "-ltorch_cpu", "-ltorch", f"-Wl,-rpath,{torch_dir}/lib"]
    return includes + [f"-D_GLIBCXX_USE_CXX11_ABI={abi}"], libs, std


def stale(obj: Path, dep: Path) -> bool:
    if not obj.exists() or not dep.exists():
        return True
    t = obj.stat().st_mtime
    deps = dep.read_text().replace("\\\n", " ").split(":", 1)[-1].split()
    return any(not Path(d).exists() or Path(d).stat().st_mtime > t for d in deps)


def write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", os.cpu_count() or 1)))
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--cxx", default=os.environ.get("CXX", "g++"))
    ap.add_argument("--opt", default=os.environ.get("GNSM_EMU_OPT", "-O1"), help="optimization flag (default -O1)")
    args = ap.parse_args()
    out: Path = args.out
    gen = out / "gen"
    gen.mkdir(parents=True, exist_ok=True)
    includes, libs, std = torch_flags(sys.executable)

    cu_files = sorted((ROOT / "csrc" / "ops" / "cuda").glob("*.cu"))
    if not cu_files:
        raise SystemExit("build.py: no csrc/ops/cuda/*.cu")
    for cu in cu_files:
        write_if_changed(gen / (cu.stem + ".cpp"), rewrite(cu))
    # Two translation units of about equal cost (so two cores build them side by side), plus the runtime:
    # the kernels, and the schemas + input checks (csrc/ops/*.cpp, csrc/utils/checks.cpp) as they are.
    kernels = "".join(f'#include "{gen / (cu.stem + ".cpp")}"\n' for cu in cu_files)
    host = "".join(f'#include "{p}"\n' for p in [ROOT / "csrc" / "utils" / "checks.cpp",
                                                 *sorted((ROOT / "csrc" / "ops").glob("*.cpp"))])
    write_if_changed(gen / "unity_kernels.cpp", kernels)
    write_if_changed(gen / "unity_host.cpp", host)
    units = [gen / "unity_kernels.cpp", gen / "unity_host.cpp", HERE / "runtime.cpp"]

    flags = [f"-std={std}", args.opt, "-g0", "-fPIC", "-Wall", "-Wno-unused-function", "-Wno-unknown-pragmas",
             "-Dgnsm=gnsm_emu", "-DGNSM_CUDA_EMULATION", "-DTORCH_EXTENSION_NAME=gnsm_cuda_emu",
             "-DTORCH_API_INCLUDE_EXTENSION_H", "-include", str(HERE / "include" / "cuda_emulation.h"), *includes]

    def compile_unit(src: Path) -> tuple[Path, float]:
        obj = out / (src.stem + ".o")
        dep = out / (src.stem + ".d")
        t0 = time.time()
        if stale(obj, dep):
            cmd = [args.cxx, *flags, "-MMD", "-MF", str(dep), "-c", str(src), "-o", str(obj)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stdout + proc.stderr)
                raise SystemExit(f"build.py: compiling {src.name} failed:\n  {shlex.join(cmd)}")
        return obj, time.time() - t0

    t0 = time.time()
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = list(pool.map(compile_unit, units))
    lib = out / LIB_NAME
    objs = [str(o) for o, _ in results]
    if not lib.exists() or any(Path(o).stat().st_mtime > lib.stat().st_mtime for o in objs):
        subprocess.run([args.cxx, "-shared", "-o", str(lib), *objs, *libs], check=True)
    times = ", ".join(f"{Path(o).stem} {dt:.0f}s" for o, dt in results)
    print(f"cuda emulation: built {lib} in {time.time() - t0:.0f}s ({times})", file=sys.stderr)
    print(lib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
