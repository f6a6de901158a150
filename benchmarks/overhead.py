"""What a perf row costs: the row path against the loop a user writes by hand, on the bundled models.

    python benchmarks/overhead.py [--backend ort_cpu|ort_cuda] [--models classifier,ocr_rec,encoder]
                                  [--batches 1,opt,max] [--seconds 1.0] [--reps 5] [--sync spin|block]
                                  [--diagnose] [--out DIR] [--target 0.97]

Row path: ``check_perf`` on a real HarnessSession (a temporary report dir, the engine cache), the code a
``pytest -m perf`` serial case runs: samples, recipe, engine from the cache, runner creation, the Serial mode
class, the resource monitor sampling the machine's state, the stop rule, the breakdown pass on a GPU, the row
assembled and written. Its number is the row's samples/s. User's loop: benchmarks/loops.py (the source model
with ORT_ENABLE_ALL, ONNX Runtime's own stream and threads, a fresh session per repetition, perf_counter
around the loop). Every configuration (model x batch 1, opt, max of its dynamic profile) runs both sides in
every repetition, the side that goes first alternating. Printed for each: the ratio of the two sides'
medians, and the median of the per-repetition ratios (each pair measured within a second or two of each
other, so that a load that comes and goes on a shared machine cancels out of it: the verdict) with a
distribution-free 95 % confidence interval; the worst last. ``--diagnose`` adds three more sides that say
where a gap comes from: the bare loop on the harness's own runner (its engine and session setup, no mode, no
monitor), the row path with the monitor idle (no samples but the first and the last), and the user's loop a
second time, whose paired ratio to the first (an A/A comparison: the same code twice) shows how far the
machine's noise alone moves a ratio. Exit status 1 when the worst ratio is below ``--target``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.loops import (  # noqa: E402
    Config,
    Series,
    UserLoop,
    add_common_args,
    available_backend,
    bare_rate,
    configs,
    feeds,
    fp32_engine,
    machine,
    median_ci,
    row_path,
    run_main,
    session,
    temp_report_dir,
)
from harness.backends import RunnerOptions, get_backend  # noqa: E402
from harness.environment import this_gpu_index  # noqa: E402
from harness.resources import ResourceMonitor  # noqa: E402
from harness.session import HarnessSession  # noqa: E402


def harness_bare(hs: HarnessSession, backend_name: str, c: Config, seconds: float, min_iters: int) -> float:
    """The bare loop on the harness's own runner: its engine and setup, the call the Serial mode makes,
    perf_counter around it; no mode class, no monitor, no row."""
    backend = get_backend(backend_name)
    engine = fp32_engine(hs, backend, c.model)
    with engine.runner(RunnerOptions(threads=backend.runner_threads("serial", 1))) as runner:
        runner.prepare(feeds(hs.model(c.model), c.batch), resident=True)
        return bare_rate(runner, seconds, c.batch, min_iters=min_iters)


def _paired(a: list[float], b: list[float]) -> str:
    lo, med, hi = median_ci([x / y for x, y in zip(a, b)])
    return f"{med:.3f} ({lo:.3f}-{hi:.3f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap, "overhead.json (every repetition)")
    ap.add_argument("--seconds", type=float, default=1.0, help="measured per repetition and side")
    ap.add_argument("--min-iters", type=int, default=20)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--sync", default="spin", choices=("spin", "block"), help="GPU: how the row's host waits")
    ap.add_argument("--diagnose", action="store_true",
                    help="also the harness's bare loop, the row without sampling, and the user's loop again (A/A)")
    ap.add_argument("--target", type=float, default=0.97)
    args = ap.parse_args()
    backend = available_backend(args.backend)
    if backend is None:
        return 2
    report = args.out if args.out else temp_report_dir("overhead-")
    hs = session(args.backend, seconds=args.seconds, min_iters=args.min_iters, report_dir=report, cache_dir=args.cache)
    cfgs, skipped = configs(hs, args.models.split(","), args.batches.split(","))
    for s in skipped:
        print(f"left out: {s}")
    before = machine()
    print(f"machine: {before['cpu']}, {before['cores']} cores, {' '.join(before['cpu_features'])}; "
          f"load average {before['load_avg']}")
    sides = ["row", "user"] + (["harness bare", "row, monitor idle", "user again"] if args.diagnose else [])
    data = {c: {s: Series() for s in sides} for c in cfgs}
    other_load: dict[Config, list[float]] = {c: [] for c in cfgs}
    users = {c: UserLoop(args.backend, hs.model(c.model), c.batch) for c in cfgs}
    for rep in range(args.reps):
        for c in cfgs:
            order = sides if rep % 2 == 0 else sides[1::-1] + sides[2:]
            for side in order:
                if side == "row":
                    row = row_path(hs, args.backend, c, sync=args.sync)
                    rate = row.throughput or 0.0
                    load = row.state.get("host_other_load_per_cpu")
                    if load is not None:
                        other_load[c].append(load)
                elif side in ("user", "user again"):
                    rate = users[c].measure(args.seconds, args.min_iters)
                elif side == "harness bare":
                    rate = harness_bare(hs, args.backend, c, args.seconds, args.min_iters)
                else:
                    idle = ResourceMonitor(interval=3600.0, gpu_index=this_gpu_index() if backend.on_gpu else None)
                    rate = row_path(hs, args.backend, c, sync=args.sync, monitor=idle).throughput or 0.0
                data[c][side].rates.append(rate)
            d = data[c]
            print(f"rep {rep} {c.label:28s} " + "  ".join(f"{s} {d[s].rates[-1]:10,.1f}" for s in sides)
                  + f"  ratio {d['row'].rates[-1] / d['user'].rates[-1]:.3f}", flush=True)
    after = machine()
    print(f"\n{args.backend}: row path over the user's loop, medians of {args.reps} interleaved repetitions "
          f"(samples/s)")
    results = []
    for c in cfgs:
        d = data[c]
        lo, paired, hi = median_ci([h / u for h, u in zip(d["row"].rates, d["user"].rates)])
        ratio = d["row"].median / d["user"].median
        extra = ""
        if args.diagnose:  # each a median of paired ratios, as the verdict is
            extra = "".join(f"  {a} / {b} {_paired(d[a].rates, d[b].rates)}" for a, b in (
                ("harness bare", "user"), ("row", "harness bare"), ("row, monitor idle", "row"),
                ("user again", "user")))
        loads = sorted(other_load[c])
        load = loads[len(loads) // 2] if loads else None
        reps = " ".join(f"{h / u:.2f}" for h, u in zip(d["row"].rates, d["user"].rates))
        print(f"{c.label:28s} row {d['row'].median:12,.1f}  user {d['user'].median:12,.1f}  ratio {paired:.3f} "
              f"(95 % CI {lo:.3f}-{hi:.3f}; ratio of medians {ratio:.3f}; other load/CPU "
              f"{'–' if load is None else f'{load:.2f}'})  reps {reps}{extra}")
        results.append({"model": c.model, "batch": c.batch, "which": c.which, "ratio": paired, "ci": [lo, hi],
                        "ratio_of_medians": ratio, "other_load_per_cpu": load, **{s: d[s].rates for s in sides}})
    print(f"load average before {before['load_avg']}, after {after['load_avg']} ({before['cores']} cores)")
    worst = min(results, key=lambda r: r["ratio"])
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "overhead.json").write_text(json.dumps(
            {"backend": args.backend, "sync": args.sync, "seconds": args.seconds, "reps": args.reps,
             "machine_before": before, "machine_after": after, "configs": results}, indent=1))
    print(f"worst: {worst['model']} b{worst['batch']}: row / user's loop = {worst['ratio']:.3f} (median of paired "
          f"ratios, 95 % CI {worst['ci'][0]:.3f}-{worst['ci'][1]:.3f}; ratio of medians "
          f"{worst['ratio_of_medians']:.3f}; target >= {args.target})")
    return 0 if worst["ratio"] >= args.target else 1


if __name__ == "__main__":
    sys.exit(run_main(main))
