#!/usr/bin/env bash
# The whole harness on a GPU machine (onnxruntime-gpu, cuda-python and nvidia-ml-py installed), ONNX Runtime
# CUDA against the CPU reference. Steps (default: all, in this order):
#   tests     the GPU tests: the CUDA module and ONNX Runtime CUDA runners       (tests/gpu)
#   accuracy  the accuracy gates, every bundled model and recipe, 4 workers
#   perf      the perf sweep: serial / multistream / threadpool, batch 1 and opt, N = 2 and 4
#   graphs    the same modes with CUDA graphs on (serial, multistream), against the rows without
#   stations  the bundled stations in every mode (serial, multistream, threadpool, merged) at batches
#             STATION_BATCHES (1,4,8,16,32; each station where its models' profiles admit them)
#   overhead  benchmarks/overhead.py on ort_cuda (device-resident inputs)
#   latency   open-loop serving: for LATENCY_MODELS (classifier,ranker) in LATENCY_RECIPES (fp16), every batch
#             of LATENCY_BATCHES (1,8,32) and N of LATENCY_CONCURRENCY (1,2,4), the highest Poisson rate that
#             keeps LATENCY_BOUND (p99<=5ms), searched from the closed-loop capacity (BACKEND: ort_cuda; the
#             step runs on ort_cpu too, BACKEND=ort_cpu); REPORT.md's "Serving (open loop)" names the best
# and prints a short summary last. Usage: bash benchmarks/gpu_suite.sh [STEP ...]
# Environment: REPORT_DIR (reports/gpu), MODELS (all), PERF_DURATION (0.5 s), PYTEST_WORKERS (4),
# STATIONS (all), STATION_BATCHES (1,4,8,16,32), STATION_RECIPES (fp32; e.g. fp32,fp16).
set -uo pipefail
cd "$(dirname "$0")/.."
report=${REPORT_DIR:-reports/gpu}
duration=${PERF_DURATION:-0.5}
workers=${PYTEST_WORKERS:-4}
models=${MODELS:+--models=$MODELS}
stations=${STATIONS:+--stations=$STATIONS}
steps=${*:-"tests accuracy perf graphs stations overhead latency"}
mkdir -p "$report"
status=0
export PYTHONUNBUFFERED=1
common=(-q -p no:cacheprovider --backends ort_cuda --report-dir "$report" $models)
perf=(-m perf --perf-duration "$duration" --perf-concurrency 2,4)
for step in $steps; do
  log="$report/$step.log"
  case $step in
    tests) python -m pytest tests/gpu -q -p no:cacheprovider -rs >"$log" 2>&1 ;;
    accuracy) python -m pytest tests/gates "${common[@]}" -m accuracy -n "$workers" >"$log" 2>&1 ;;
    perf) python -m pytest tests/gates/test_perf.py "${common[@]}" "${perf[@]}" >>"$log" 2>&1 ;;
    graphs) python -m pytest tests/gates/test_perf.py "${common[@]}" "${perf[@]}" --perf-cuda-graph yes \
              --perf-modes serial,multistream >>"$log" 2>&1 ;;
    stations) python -m pytest tests/gates/test_stations.py "${common[@]}" -m perf --perf-duration "$duration" \
                --perf-batches "${STATION_BATCHES:-1,4,8,16,32}" --perf-recipes "${STATION_RECIPES:-fp32}" \
                $stations -rs >>"$log" 2>&1 ;;
    overhead) python benchmarks/overhead.py --backend ort_cuda >"$log" 2>&1 ;;
    latency) python -m pytest tests/gates/test_server.py -q -p no:cacheprovider -m perf -rs --report-dir "$report" \
               --backends "${BACKEND:-ort_cuda}" --models "${LATENCY_MODELS:-classifier,ranker}" \
               --perf-recipes "${LATENCY_RECIPES:-fp16}" --perf-profiles dynamic --perf-duration "$duration" \
               --perf-batches "${LATENCY_BATCHES:-1,8,32}" --perf-concurrency "${LATENCY_CONCURRENCY:-1,2,4}" \
               --perf-latency-bound "${LATENCY_BOUND:-p99<=5ms}" >>"$log" 2>&1 ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
  rc=$?
  echo "$step: exit $rc, $(grep -E '(passed|failed|error|skipped|ratio|medians)' "$log" | tail -1)"
  [ $rc -eq 0 ] || status=1
done
python -m harness report "$report" >/dev/null
echo "report: $report/REPORT.md"
exit $status
