#!/usr/bin/env bash
# Runs the CUDA kernels (csrc/ops/cuda/*.cu) on the CPU: builds them as host C++ against the CUDA
# emulation (tests/cuda_emulation/build.py, incremental), then runs the cuda entries of the
# device-parametrized op tests (tests/ops) through them. Prints
#   CUDA kernels under CPU emulation: N passed, M skipped
# and exits non-zero if the build or any test fails. Needs no GPU (where one is present, run
# tests/ops on it instead). Usage: scripts/test_cuda_emulated.sh [extra pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python}"
cd "$ROOT"
start=$(date +%s)
"$PY" tests/cuda_emulation/build.py >/dev/null
built=$(date +%s)
export GNSM_CUDA_EMULATION=1
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/ops tests/cuda_emulation "$@" \
  | tee "$log" || status=$?
line="$(grep -E '^CUDA kernels under CPU emulation: ' "$log" | tail -1 || true)"
if [ -z "$line" ]; then echo "test_cuda_emulated: pytest printed no emulation summary" >&2; exit 1; fi
echo "$line (build $((built - start))s, tests $(( $(date +%s) - built ))s)"
exit $status
