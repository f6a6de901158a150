"""What the row path's own code costs, with the session held fixed: on one runner, short slices of the serial
mode as a ``pytest -m perf`` row runs it alternate with slices of a bare loop over the same call.

    python benchmarks/row_cost.py [--backend ort_cpu|ort_cuda] [--models classifier,ocr_rec,encoder]
                                  [--batches 1,opt,max] [--slice 0.4] [--pairs 16] [--out DIR]

benchmarks/overhead.py compares whole rows with a user's loop, each side on a fresh session: a fair test, but a
fresh session is itself a few per cent to 30 % faster or slower than the next one (kernel choice; on a shared or
virtualized host, which seconds it ran in), so its intervals are wide. This benchmark removes both: one session
per configuration, and the sides take turns in slices of ``--slice`` seconds (each first, middle and last in
rotation), so that a slow second of the host
falls on both alike. Sides, each slice timed as its own code times it:

  bare       ``perf_counter`` around n calls of the runner's timed call (what the row calls, as a user's loop does)
  mode       the serial mode class: time-based warm-up, windows, stop rule, latency per request, the load check's
             requests (excluded from the throughput as the row excludes them), inside the resource monitor
             sampling the process and the GPU; the throughput the row reports
  no monitor the same without the resource monitor (where the mode's cost goes, if it has one)

Prints, per configuration, the median of the paired ratios ``mode / bare`` and ``no monitor / bare`` with
distribution-free 95 % confidence intervals, then the worst. The session's own setup (which model file, which
optimizations, whose stream) is benchmarks/ort_setup.py's question.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.loops import (  # noqa: E402
    add_common_args,
    available_backend,
    bare_rate,
    configs,
    feeds,
    fp32_engine,
    machine,
    median_ci,
    run_main,
    session,
    temp_report_dir,
)
from harness.backends import RunnerOptions  # noqa: E402
from harness.environment import this_gpu_index  # noqa: E402
from harness.load_check import LoadCheck, load_check_for  # noqa: E402
from harness.perf import MODE_CLASSES  # noqa: E402
from harness.resources import ResourceMonitor  # noqa: E402
from harness.timing import TimingPolicy  # noqa: E402

SIDES = ("bare", "mode", "no monitor")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap, "row_cost.json")
    ap.add_argument("--slice", type=float, default=0.4, help="seconds timed per slice and side")
    ap.add_argument("--pairs", type=int, default=16, help="slices of each side per configuration")
    args = ap.parse_args()
    if args.pairs < 1 or args.slice <= 0:
        ap.error("--pairs must be at least 1 and --slice above 0")
    backend = available_backend(args.backend)
    if backend is None:
        return 2
    hs = session(args.backend, seconds=args.slice, min_iters=1, report_dir=args.out or temp_report_dir("row-cost-"),
                 cache_dir=args.cache)
    cfgs, skipped = configs(hs, args.models.split(","), args.batches.split(","))
    for s in skipped:
        print(f"left out: {s}")
    m = machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores, {' '.join(m['cpu_features'])}; load average {m['load_avg']}")
    serial = MODE_CLASSES["serial"]
    policy = TimingPolicy(warmup=0.05, min_duration=args.slice, min_iters=1)
    gpu = this_gpu_index() if backend.on_gpu else None
    results = []
    for c in cfgs:
        spec = hs.model(c.model)
        profile = spec.profiles["dynamic"]
        engine = fp32_engine(hs, backend, c.model)
        rates: dict[str, list[float]] = {s: [] for s in SIDES}
        checked = 0.0
        first = load_check_for(hs, spec, profile, c.batch, 1, True, policy)  # its evaluation batches, loaded once
        with engine.runner(RunnerOptions(threads=backend.runner_threads("serial", 1))) as runner:
            for k in range(args.pairs):
                for side in SIDES[k % 3:] + SIDES[:k % 3]:  # each side first, middle and last in turn
                    # a fresh check per slice, as every row has its own (it keeps a bounded count of requests)
                    check = None if first is None else LoadCheck(first.batches, 1, per_runner=first.per_runner,
                                                                 spread=policy.min_duration, resident=True)
                    runner.prepare(check.feeds(0) if check is not None else feeds(spec, c.batch), resident=True)
                    if side == "bare":
                        rates[side].append(bare_rate(runner, args.slice, c.batch, warmup=policy.warmup))
                        continue
                    monitor = ResourceMonitor(gpu_index=gpu) if side == "mode" else None
                    if monitor is not None:
                        with monitor:
                            meas = serial.measure([runner], policy, batch=c.batch, check=check)
                    else:
                        meas = serial.measure([runner], policy, batch=c.batch, check=check)
                    rates[side].append(meas.throughput)
                    checked = max(checked, meas.wall - meas.timed)
        ratios = {s: median_ci([a / b for a, b in zip(rates[s], rates["bare"])]) for s in SIDES[1:]}
        print(f"{c.label:28s} bare {sorted(rates['bare'])[len(rates['bare']) // 2]:12,.1f}  " + "  ".join(
            f"{s} / bare {r[1]:.3f} ({r[0]:.3f}-{r[2]:.3f})" for s, r in ratios.items())
            + f"  (load check up to {checked * 1e3:.0f} ms per slice, excluded)", flush=True)
        results.append({"model": c.model, "batch": c.batch, "which": c.which, **rates,
                        **{f"{s} / bare": list(r) for s, r in ratios.items()}})
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "row_cost.json").write_text(json.dumps(
            {"backend": args.backend, "slice": args.slice, "pairs": args.pairs, "machine": m,
             "machine_after": machine(), "configs": results}, indent=1))
    measured = [r for r in results if not math.isnan(r["mode / bare"][1])]
    if not measured:
        print("no configuration measured")
        return 1
    worst = min(measured, key=lambda r: r["mode / bare"][1])
    lo, med, hi = worst["mode / bare"]
    print(f"worst: {worst['model']} b{worst['batch']}: the row's mode / a bare loop on the same runner = {med:.3f} "
          f"(95 % CI {lo:.3f}-{hi:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
