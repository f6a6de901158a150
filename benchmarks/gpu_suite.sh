#!/usr/bin/env bash
# The whole harness on a GPU machine (onnxruntime-gpu, cuda-python and nvidia-ml-py installed), ONNX Runtime
# CUDA against the CPU reference:
#   1. the GPU tests (CUDA module, ORT CUDA runners)            -> tests/gpu
#   2. the accuracy gates, every bundled model and recipe        -> reports/gpu
#   3. the perf sweep: serial / multistream / threadpool over batch and N, then CUDA graphs on
#   4. benchmarks/overhead.py on ort_cuda (device-resident inputs)
# and prints a short summary last. Usage: bash benchmarks/gpu_suite.sh [STEP ...] (default: all four);
# REPORT_DIR, PERF_DURATION and PYTEST_WORKERS override the defaults.
set -uo pipefail
cd "$(dirname "$0")/.."
report=${REPORT_DIR:-reports/gpu}
duration=${PERF_DURATION:-0.5}
workers=${PYTEST_WORKERS:-4}
steps=${*:-"tests accuracy perf overhead"}
mkdir -p "$report"
status=0
run() { echo "+ $*"; "$@" || status=1; }
export PYTHONUNBUFFERED=1
for step in $steps; do
  case $step in
    tests) run python -m pytest tests/gpu -q -p no:cacheprovider -rs 2>&1 | tee "$report/gpu-tests.log" ;;
    accuracy) run python -m pytest tests/gates -q -p no:cacheprovider -m accuracy --backends ort_cuda \
                --report-dir "$report" -n "$workers" 2>&1 | tee "$report/accuracy.log" ;;
    perf) run python -m pytest tests/gates -q -p no:cacheprovider -m perf --backends ort_cuda \
            --report-dir "$report" --perf-duration "$duration" --perf-concurrency 2,4 2>&1 | tee "$report/perf.log"
          run python -m pytest tests/gates -q -p no:cacheprovider -m perf --backends ort_cuda \
            --report-dir "$report" --perf-duration "$duration" --perf-concurrency 2,4 --perf-cuda-graph yes \
            --perf-modes serial,multistream 2>&1 | tee "$report/perf-graphs.log" ;;
    overhead) run python benchmarks/overhead.py --backend ort_cuda 2>&1 | tee "$report/overhead.log" ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
done
python -m harness report "$report" >/dev/null
echo "==================== summary ===================="
for f in gpu-tests accuracy perf perf-graphs; do
  [ -f "$report/$f.log" ] && echo "$f: $(grep -E '(passed|failed|error)' "$report/$f.log" | tail -1)"
done
[ -f "$report/overhead.log" ] && tail -1 "$report/overhead.log"
echo "report: $report/REPORT.md"
exit $status
