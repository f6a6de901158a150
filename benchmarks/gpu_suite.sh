#!/usr/bin/env bash
# The whole harness on a GPU machine (onnxruntime-gpu, cuda-python and nvidia-ml-py installed), ONNX Runtime
# CUDA against the CPU reference. Steps (default: tests accuracy perf graphs stations overhead latency, in this order):
#   tests     the GPU tests: the CUDA module and ONNX Runtime CUDA runners       (tests/gpu)
#   accuracy  the accuracy gates, every bundled model and recipe, 4 workers
#   perf      the perf sweep: serial / multistream / threadpool, batch 1 and opt, N = 2 and 4; its report has
#             trtexec's breakdown (H2D, compute, D2H, enqueue) and the GPU's state (clocks, power, throttling)
#   graphs    the same modes with CUDA graphs on (serial, multistream), against the rows without
#   stations  the bundled stations in every mode (serial, multistream, threadpool, merged) at batches
#             STATION_BATCHES (1,4,8,16,32; each station where its models' profiles admit them)
#   sync      the classifier's serial and multistream rows with the host spinning and blocking (--perf-sync)
#   overhead  benchmarks/overhead.py: the row path against a user's loop, each model at batch 1, opt and max,
#             6 interleaved repetitions (a fresh session per side and repetition: minutes; MODELS splits it)
#   rowcost   benchmarks/row_cost.py: on one runner per configuration, the row's serial mode (with the resource
#             monitor and the load check) against a bare loop, alternating 0.3 s slices: the row path's own cost
#             without a fresh session's luck on either side
#   diagnose  the same on the classifier with the harness's bare loop, the row without sampling and the user's
#             loop twice (A/A: the machine's own noise) beside it
#   setup     benchmarks/ort_setup.py: every ONNX Runtime session setup, timed and accuracy-checked; names the
#             fastest correct one (MODELS=classifier by default: batches 1, 8 and 32, the issue's table)
#   latency   open-loop serving: for LATENCY_MODELS (classifier,ranker) in LATENCY_RECIPES (fp16), every batch
#             of LATENCY_BATCHES (1,8,32) and N of LATENCY_CONCURRENCY (1,2,4), the highest Poisson rate that
#             keeps LATENCY_BOUND (p99<=5ms), searched from the closed-loop capacity (BACKEND; the step runs
#             on ort_cpu too); REPORT.md's "Serving (open loop)" names the best
# and prints a short summary last. Usage: bash benchmarks/gpu_suite.sh [STEP ...]
# Environment: REPORT_DIR (reports/gpu), MODELS (all; diagnose and setup: classifier), PERF_DURATION (0.5 s),
# PYTEST_WORKERS (4), STATIONS (all), STATION_BATCHES (1,4,8,16,32), STATION_RECIPES (fp32; e.g. fp32,fp16),
# BACKEND (ort_cuda; ort_cpu runs the steps that need no GPU on any machine, to try the script).
# Each step's output: REPORT_DIR/STEP.log; overhead, rowcost, diagnose and setup also write JSON under REPORT_DIR/STEP/.
set -uo pipefail
cd "$(dirname "$0")/.."
report=${REPORT_DIR:-reports/gpu}
duration=${PERF_DURATION:-0.5}
workers=${PYTEST_WORKERS:-4}
backend=${BACKEND:-ort_cuda}
models=${MODELS:+--models=$MODELS}
stations=${STATIONS:+--stations=$STATIONS}
steps=${*:-"tests accuracy perf graphs stations overhead latency"}
mkdir -p "$report"
status=0
export PYTHONUNBUFFERED=1
common=(-q -p no:cacheprovider --backends "$backend" --report-dir "$report" $models)
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
    sync) python -m pytest tests/gates/test_perf.py -q -p no:cacheprovider --backends "$backend" \
            --report-dir "$report" --models classifier --perf-recipes fp32 -m perf --perf-duration "$duration" \
            --perf-profiles dynamic --perf-modes serial,multistream --perf-concurrency 2 --perf-batches 1,8,32 \
            --perf-sync spin,block -rs \
            >>"$log" 2>&1 ;;
    overhead) python benchmarks/overhead.py --backend "$backend" ${MODELS:+--models $MODELS} --reps 6 --seconds 1.0 \
                --out "$report/overhead" >"$log" 2>&1 ;;
    rowcost) python benchmarks/row_cost.py --backend "$backend" ${MODELS:+--models $MODELS} --pairs 12 --slice 0.3 \
               --out "$report/rowcost" >"$log" 2>&1 ;;
    diagnose) python benchmarks/overhead.py --backend "$backend" --models "${MODELS:-classifier}" --reps 6 \
                --seconds 1.0 --diagnose --out "$report/diagnose" >"$log" 2>&1 ;;
    setup) python benchmarks/ort_setup.py --backend "$backend" --models "${MODELS:-classifier}" --reps 3 \
             --seconds 1.0 --out "$report/setup" >"$log" 2>&1 ;;
    latency) python -m pytest tests/gates/test_server.py -q -p no:cacheprovider -m perf -rs --report-dir "$report" \
               --backends "$backend" --models "${LATENCY_MODELS:-classifier,ranker}" \
               --perf-recipes "${LATENCY_RECIPES:-fp16}" --perf-profiles dynamic --perf-duration "$duration" \
               --perf-batches "${LATENCY_BATCHES:-1,8,32}" --perf-concurrency "${LATENCY_CONCURRENCY:-1,2,4}" \
               --perf-latency-bound "${LATENCY_BOUND:-p99<=5ms}" >>"$log" 2>&1 ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
  rc=$?
  echo "$step: exit $rc, $(grep -E '(passed|failed|error|skipped|worst|fastest correct)' "$log" | tail -1)"
  [ $rc -eq 0 ] || status=1
done
python -m harness report "$report" >/dev/null
echo "report: $report/REPORT.md"
exit $status
