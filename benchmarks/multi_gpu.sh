#!/usr/bin/env bash
# One pytest-xdist worker per GPU against one GPU, on ONNX Runtime CUDA, in one call of at most ~9 minutes:
#   acc-cold   the accuracy gates of every bundled model on all GPUs at once (cold cache: builds everything)
#   perf-all   a perf sweep of every bundled model spread over all GPUs (-n auto --gpus all)
#   perf-one   the same sweep on GPU 0 alone (--gpus 0, no workers)
#   acc-one    the accuracy gates on GPU 0 alone (warm cache)
#   acc-all    the accuracy gates on all GPUs again (warm cache: the fair comparison with acc-one)
#   perf-each  the sweep on every GPU at once, each GPU running every case (--dist each): the same cases side by
#              side in the cross-device report
# then prints a summary last (benchmarks/multi_gpu_summary.py): wall times against one GPU, verdicts on one and
# on all GPUs, NVML utilisation of every GPU while each was timed, throughput on all GPUs against GPU 0 alone.
# Each step gets what is left of BUDGET_S (less a reserve for the summary); one that would not fit is skipped.
# Usage, from the checkout (PYTHONPATH may hold a staged onnxruntime-gpu; the checkout is added to it):
#   bash benchmarks/multi_gpu.sh
# Environment: REPORT_DIR (reports/multi_gpu), BUDGET_S (510), GPUS (all), MODELS (all), PERF_RECIPES (fp32,fp16),
#   PERF_DURATION (0.25), PERF_WARMUP (0.1), STEPS (all six, in this order).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
report=${REPORT_DIR:-reports/multi_gpu}
budget=${BUDGET_S:-510}
gpus=${GPUS:-all}
models=${MODELS:+--models=$MODELS}
steps=${STEPS:-"acc-cold perf-all perf-one acc-one acc-all perf-each"}
reserve=25
mkdir -p "$report"
: >"$report/steps.tsv"
t0=$(date +%s)
common=(tests/gates -p no:cacheprovider -rfE --backends=ort_cuda $models)
perf=(-m perf --perf-recipes="${PERF_RECIPES:-fp32,fp16}" --perf-profiles=dynamic --perf-modes=serial,threadpool
      --perf-concurrency=2 --perf-duration="${PERF_DURATION:-0.25}" --perf-warmup="${PERF_WARMUP:-0.1}")
nvidia-smi -L 2>&1 | sed 's/^/gpu: /'
python - <<'EOF'
from harness.environment import environment, gpus
env = environment()
print(f"host {env['host']}: {env['cpu']}, {env['cores']} CPUs; onnxruntime {env.get('pkg.onnxruntime-gpu') or env.get('pkg.onnxruntime', '?')}; "
      f"NVML GPUs: {', '.join(g['name'] + ' #' + str(g['index']) for g in gpus()) or 'none'}")
EOF
for step in $steps; do
  now=$(date +%s)
  left=$((budget - (now - t0) - reserve))
  # a step must fit, as estimated from an earlier step: GPU 0 alone does what all GPUs shared, and a warm
  # cache spares the builds of the cold run; perf-each runs the whole sweep on each GPU, as perf-one did
  need=30
  case $step in
    perf-one) base=perf-all; num=22 ;;
    acc-one) base=acc-cold; num=9 ;;
    acc-all) base=acc-one; num=7 ;;
    perf-each) base=perf-one; num=11 ;;
    *) base= ;;
  esac
  if [ -n "$base" ] && [ -f "$report/$base.seconds" ]; then need=$(( $(cat "$report/$base.seconds") * num / 10 + 10 )); fi
  if [ "$left" -lt "$need" ]; then
    printf '%s\t\t\tskipped: %s s left of the budget, %s s needed\n' "$step" "$left" "$need" >>"$report/steps.tsv"
    echo "$step: skipped ($left s left, $need s needed)"
    continue
  fi
  out="$report/$step"
  case $step in
    acc-cold|acc-all) args=("${common[@]}" -m accuracy -n auto --gpus="$gpus") ;;
    acc-one) args=("${common[@]}" -m accuracy --gpus=0) ;;
    perf-all) args=("${common[@]}" "${perf[@]}" -n auto --gpus="$gpus") ;;
    perf-one) args=("${common[@]}" "${perf[@]}" --gpus=0) ;;
    perf-each) args=("${common[@]}" "${perf[@]}" -n auto --gpus="$gpus" --dist=each) ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
  start=$(date +%s.%N)
  # SIGINT first: pytest stops after the current test and still merges its rows and writes the report
  timeout -s INT -k 20 "$left" python -m pytest "${args[@]}" --report-dir="$out" >"$out.log" 2>&1
  rc=$?
  seconds=$(python -c "import time; print(round(time.time() - $start, 1))")
  printf '%s\n' "${seconds%.*}" >"$out.seconds"
  last=$(grep -E ' in [0-9.]+s( \(.*\))?( =+)?$' "$out.log" | tail -1 | sed -E 's/^=+ //; s/ =+$//')
  printf '%s\t%s\t%s\t%s\n' "$step" "$seconds" "$rc" "$last" >>"$report/steps.tsv"
  echo "$step: exit $rc in $seconds s: $last"
done
python benchmarks/multi_gpu_summary.py "$report"
