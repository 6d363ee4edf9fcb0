#!/usr/bin/env bash
# Runs the GPU-only tests (tests/ops/test_cuda_specific.py) under compute-sanitizer memcheck; on a GPU
# machine with a CUDA build of gnsm. Exits non-zero on any test failure or sanitizer error.
# Usage: scripts/cuda_memcheck.sh [extra pytest args, e.g. -k parity]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SANITIZER="${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)}"
PY="${PYTHON:-python}"
if [ ! -x "$SANITIZER" ]; then echo "cuda_memcheck: compute-sanitizer not found (set COMPUTE_SANITIZER=)" >&2; exit 2; fi
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
  echo "cuda_memcheck: no CUDA device visible to torch" >&2; exit 2; }
cd "$ROOT"
# PyTorch's caching allocator hides out-of-bounds accesses inside its pooled blocks: allocate each tensor
# separately so memcheck sees the real bounds. CUDA graphs need the caching allocator, so that test is
# skipped here (it runs in the plain GPU test run).
export PYTORCH_NO_CUDA_MEMORY_CACHING=1
exec "$SANITIZER" --tool memcheck --error-exitcode 1 --leak-check no --report-api-errors no \
  "$PY" -m pytest -x -q -p no:cacheprovider tests/ops/test_cuda_specific.py -k "not cuda_graph" "$@"
