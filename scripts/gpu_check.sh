#!/usr/bin/env bash
# One prepared GPU session (about 10 minutes on an H100/H200): builds gnsm with GNSM_CUDA=ON for the GPU
# present, runs the CUDA tests, compute-sanitizer memcheck and racecheck on a small case, and the two
# benchmarks; every log and JSON goes under one folder, with summary.json (exit status and seconds per
# step, the measured ratios against the targets).
#
#   bash scripts/gpu_check.sh [--dry-run] [--out DIR] [--arch 90]
#
# --dry-run: everything that needs no GPU (environment, nvcc compile of every .cu for the architecture,
# the build where torch has CUDA, the CUDA kernels under CPU emulation), then stops before the first
# step that needs one, printing the commands it would run. Without --arch the architecture is the
# present GPU's compute capability (torch.cuda.get_device_capability), or 90 on a dry run without GPU.
# Steps are independent: a failing step is recorded and the next one runs; the exit status is non-zero
# if any step failed.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python}"
DRY=0
OUT=""
ARCH="${GNSM_GPU_ARCH:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT="$2"; shift ;;
    --arch) ARCH="$2"; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
cd "$ROOT"
OUT="${OUT:-$ROOT/runs/gpu_check_$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SUMMARY="$OUT/steps.tsv"
: > "$SUMMARY"
failed=0

# step NAME TIMEOUT_S CMD...: runs CMD with its output in $OUT/NAME.log, records status and seconds.
step() {
  local name="$1" limit="$2"; shift 2
  local t0 rc
  t0=$(date +%s)
  echo "== $name: $*" | tee -a "$OUT/commands.txt"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$SUMMARY"
  if [ $rc -ne 0 ]; then
    failed=1
    echo "   FAILED (exit $rc, last lines of $OUT/$name.log):"
    tail -n 15 "$OUT/$name.log" | sed 's/^/   | /'
  else
    echo "   ok ($(( $(date +%s) - t0 ))s)"
  fi
  return $rc
}

# Would run NAME CMD...: printed (and recorded) on a dry run instead of running.
gpu_step() {
  if [ $DRY -eq 1 ]; then
    echo "== $1 (dry run, needs a GPU): ${*:3}" | tee -a "$OUT/commands.txt"
    printf '%s\t%s\t%s\n' "$1" "skipped" "0" >> "$SUMMARY"
    return 0
  fi
  step "$@"
}

HAS_GPU=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
TORCH_CUDA=$("$PY" -c "import torch; print(int(torch.version.cuda is not None))" 2>/dev/null || echo 0)
if [ -z "$ARCH" ]; then
  if [ "$HAS_GPU" = 1 ]; then
    ARCH=$("$PY" -c "import torch; a, b = torch.cuda.get_device_capability(); print(f'{a}{b}')")
  elif [ $DRY -eq 1 ]; then
    ARCH=90
  else
    echo "gpu_check: no GPU visible to torch (use --dry-run to check what needs none)" >&2
    exit 2
  fi
fi
echo "gpu_check: output in $OUT (arch sm_$ARCH, GPU visible: $HAS_GPU, torch with CUDA: $TORCH_CUDA, dry run: $DRY)"

step environment 60 bash -c "nvidia-smi || true; nvcc --version || true; '$PY' -c 'import torch; print(torch.__version__, torch.version.cuda)'; git -C '$ROOT' log -1 --oneline || true"
step nvcc_compile 600 env GNSM_CHECK_ARCHS="$ARCH" bash scripts/check_cuda_compile.sh
if [ "$TORCH_CUDA" = 1 ]; then
  step build 900 env GNSM_CUDA=ON CMAKE_ARGS="-DCMAKE_CUDA_ARCHITECTURES=$ARCH" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$PY" -m pip install -q --no-build-isolation -e .
  step build_info 60 "$PY" -c "import json, gnsm.ops as o; i = o.build_info(); print(json.dumps(i)); assert i['cuda'], 'built without CUDA'"
else
  echo "== build: skipped (torch $("$PY" -c 'import torch; print(torch.__version__)') has no CUDA; a GNSM_CUDA=ON build needs a CUDA torch)" \
    | tee -a "$OUT/commands.txt"
  printf 'build\tskipped\t0\n' >> "$SUMMARY"
fi
if [ "$HAS_GPU" = 0 ]; then
  step cuda_emulated 900 bash scripts/test_cuda_emulated.sh -o junit_suite_name=cuda_emulated --junitxml="$OUT/cuda_emulated.xml"
fi

gpu_step cuda_tests 420 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/ops --junitxml="$OUT/cuda_tests.xml"
# A small case of every kernel shape (register widths, generic T = 1 / 32, the block reduction) under
# the sanitizer: each tensor its own allocation so out-of-bounds accesses are seen.
SMALL=(tests/ops/test_cuda_specific.py -k "(parity and (shape0-sizes0 or shape4-sizes4 or shape6-sizes6 or shape7-sizes7 or shape8-sizes8) and not label_dtype1 and not label_dtype2 and not label_dtype3) or test_many_fields")
gpu_step memcheck 300 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 1 \
  --leak-check no --report-api-errors no "$PY" -m pytest -x -q -p no:cacheprovider "${SMALL[@]}"
gpu_step racecheck 300 compute-sanitizer --tool racecheck --error-exitcode 1 --report-api-errors no \
  "$PY" -m pytest -x -q -p no:cacheprovider tests/ops/test_cuda_specific.py -k "loss_forward_backward_parity and mean and (shape0-sizes0 or shape4-sizes4 or shape8-sizes8)"
gpu_step bench_ops 420 "$PY" benchmarks/bench_ops.py --device cuda --repeats 5 --out "$OUT/ops_cuda.json"
gpu_step bench_train 420 "$PY" benchmarks/bench_train.py --device cuda --out "$OUT/train_cuda.json"

"$PY" - "$OUT" "$DRY" <<'EOF'
import json, os, sys
out, dry = sys.argv[1], sys.argv[2] == "1"
steps = []
for line in open(os.path.join(out, "steps.tsv")):
    name, rc, secs = line.rstrip("\n").split("\t")
    steps.append({"step": name, "status": rc if rc == "skipped" else int(rc), "seconds": int(secs)})
summary = {"dry_run": dry, "steps": steps, "targets": {}}
ops_path = os.path.join(out, "ops_cuda.json")
if os.path.exists(ops_path):
    ops = json.load(open(ops_path))
    bw = ops.get("copy_bandwidth_bytes_per_s")
    for name, case in ops.get("cases", {}).items():
        entry = {k: case[k] for k in ("speedup_vs_eager", "speedup_vs_compiled") if k in case}
        if bw and "gnsm_bytes_per_s" in case:
            entry["fraction_of_copy_bandwidth"] = case["gnsm_bytes_per_s"] / bw
        summary["targets"][name] = entry
    summary["target_rule"] = "relax >= 0.70 of copy bandwidth; step >= 8x compiled and >= 15x eager on (2, 8, 160^3)"
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(json.dumps(summary, indent=1))
EOF
echo "gpu_check: $( [ $failed -eq 0 ] && echo ok || echo FAILED ), logs and JSON in $OUT"
exit $failed
