#!/usr/bin/env bash
# Compiles every csrc/ops/cuda/*.cu with nvcc -c (no GPU needed) for sm_90 (GNSM_CHECK_ARCHS to change) with the flags the
# CMake build uses (C++ standard: the one torch.utils.cpp_extension uses; override with GNSM_CXX_STD=c++17) plus the half/bfloat16 guards of torch.utils.cpp_extension, warnings as errors.
# Prints one line per file; exits non-zero if any file fails. Usage: scripts/check_cuda_compile.sh [file.cu ...]
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NVCC="${NVCC:-$(command -v nvcc || echo /usr/local/bin/nvcc)}"
PY="${PYTHON:-python}"
if [ ! -x "$NVCC" ]; then echo "check_cuda_compile: nvcc not found (set NVCC=)" >&2; exit 2; fi
# The C++ standard follows the one torch's own extensions use (C++20 from torch 2.10 on, else C++17).
read -r TORCH_DIR PY_INC ABI STD < <("$PY" -c "import os, sysconfig, torch; from torch.utils import cpp_extension as ce; print(os.path.dirname(torch.__file__), sysconfig.get_paths()['include'], int(torch._C._GLIBCXX_USE_CXX11_ABI), 'c++20' if \"'-std=c++20'\" in open(ce.__file__).read() else 'c++17')") || {
  echo "check_cuda_compile: could not import torch from $PY" >&2; exit 2; }
# sm_90 (Hopper, the target GPUs) by default to keep CI short; GNSM_CHECK_ARCHS="80 90" checks more.
ARCHS="${GNSM_CHECK_ARCHS:-90}"
GENCODE=()
for a in $ARCHS; do GENCODE+=("-gencode" "arch=compute_${a},code=sm_${a}"); done
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
STD="${GNSM_CXX_STD:-$STD}"
FLAGS=(-c -std=$STD -O3 --expt-relaxed-constexpr --use_fast_math -lineinfo "${GENCODE[@]}"
  -I"$ROOT/csrc" -I"$TORCH_DIR/include" -I"$TORCH_DIR/include/torch/csrc/api/include" -I"$PY_INC"
  -DTORCH_EXTENSION_NAME=_C -DTORCH_API_INCLUDE_EXTENSION_H "-D_GLIBCXX_USE_CXX11_ABI=$ABI"
  -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__
  -D__CUDA_NO_HALF2_OPERATORS__ -Xcompiler -fPIC -Xcompiler -Wall -Xcompiler -Wno-unused-function
  -Werror all-warnings ${GNSM_CHECK_EXTRA_FLAGS:-})
# A CPU-only torch wheel ships the c10/cuda headers without the CMake-generated cuda_cmake_macros.h
# (it only declares that c10_cuda is a shared library); tell c10 not to look for it.
if [ ! -e "$TORCH_DIR/include/c10/cuda/impl/cuda_cmake_macros.h" ]; then FLAGS+=(-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE); fi
if [ "$#" -gt 0 ]; then FILES=("$@"); else FILES=("$ROOT"/csrc/ops/cuda/*.cu); fi
status=0
for f in "${FILES[@]}"; do
  [ -e "$f" ] || { echo "FAIL  $f (no such file)"; status=1; continue; }
  name="$(basename "$f" .cu)"
  start=$(date +%s)
  if "$NVCC" "${FLAGS[@]}" "$f" -o "$TMP/$name.o" >"$TMP/$name.log" 2>&1; then
    echo "ok    ${f#"$ROOT"/} ($(( $(date +%s) - start ))s, -std=$STD, sm_${ARCHS// /, sm_})"
  else
    echo "FAIL  ${f#"$ROOT"/}"
    sed 's/^/      /' "$TMP/$name.log"
    status=1
  fi
done
exit $status
