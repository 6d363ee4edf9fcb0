#!/usr/bin/env bash
# Installs gnsm and what it needs, on a fresh machine or one with torch already present.
#   bash scripts/install.sh            # the package (+ PyOD baselines, NIfTI/PNG readers)
#   bash scripts/install.sh test       # ... plus the test dependencies
# torch: an installed torch is kept (e.g. a CUDA build on a GPU machine); otherwise the CPU build
# torch==2.13.0 is installed (on this project's CPU machines it is served from the local disk, no
# multi-GB CUDA download). The extension is built against the installed torch, without build isolation.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-all}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! python -c "import torch" >/dev/null 2>&1; then
  python -m pip install -q "torch==2.13.0"
fi
python -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" ninja
python -m pip install -q --no-build-isolation -e ".[${extras}]"
python -c "import gnsm.ops; print('gnsm installed:', gnsm.ops.build_info())"
