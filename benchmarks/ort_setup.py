"""Which ONNX Runtime session setup is fastest and still accurate: every variant of
harness/backends/ort_setup.py, timed on the row path and checked against the FP32 reference.

    python benchmarks/ort_setup.py [--backend ort_cpu|ort_cuda] [--models classifier,ocr_rec,encoder]
                                   [--batches 1,opt,max] [--seconds 1.0] [--reps 3] [--variants NAME,...]
                                   [--out DIR]

For every variant (the offline-optimized model loaded with optimizations off or with ORT_ENABLE_ALL again,
the source model with ORT_ENABLE_ALL; on CUDA also cuDNN's convolution search, prefer_nhwc, the arena and
ONNX Runtime's own stream): the fp32 accuracy gate of each model (its evaluation set against the ORT FP32
reference within its fp32 budgets, as ``pytest -m accuracy`` runs it) and a serial perf row per configuration
(model x batch 1, opt, max) with ``--ort-setup`` set to the variant, interleaved with the user's loop
(benchmarks/loops.py) in every repetition; medians. Prints samples/s per configuration and variant with its
ratio over the user's loop, each variant's geometric mean over the user's loop, and each variant against the
backend's current default: the median of the paired ratios (the two measured in the same repetition) over
every configuration and repetition, with a distribution-free 95 % confidence interval. The verdict names the
fastest variant that passed every gate and is faster than the default beyond doubt (the whole interval above
1), or keeps the default: the one ``DEFAULTS`` in harness/backends/ort_setup.py should hold for this backend.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.loops import (  # noqa: E402
    Series,
    UserLoop,
    add_common_args,
    available_backend,
    configs,
    machine,
    median_ci,
    row_path,
    run_main,
    session,
    temp_report_dir,
)
from harness.backends.ort_setup import default_setup, variants  # noqa: E402
from harness.checks import AccuracyGateFailure, check_accuracy  # noqa: E402
from harness.session import AccuracyCase  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap, "ort_setup.json")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--min-iters", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--variants", help="comma-separated names (default: all for the backend)")
    args = ap.parse_args()
    backend = available_backend(args.backend)
    if backend is None:
        return 2
    gpu = backend.on_gpu
    every = variants(gpu=gpu)
    names = args.variants.split(",") if args.variants else list(every)
    unknown = [n for n in names if n not in every]
    if unknown:
        print(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(every)}")
        return 2
    report = args.out if args.out else temp_report_dir("ort-setup-")
    sessions = {n: session(args.backend, seconds=args.seconds, min_iters=args.min_iters, report_dir=report,
                           cache_dir=args.cache, ort_setup=every[n].describe(gpu=gpu)) for n in names}
    first = sessions[names[0]]
    cfgs, skipped = configs(first, args.models.split(","), args.batches.split(","))
    for s in skipped:
        print(f"left out: {s}")
    m = machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores, {' '.join(m['cpu_features'])}; load average {m['load_avg']}")
    # accuracy first: a variant that fails a gate cannot be the default, however fast
    accuracy: dict[str, dict[str, str]] = {n: {} for n in names}
    for n in names:
        for model in dict.fromkeys(c.model for c in cfgs):
            try:
                row = check_accuracy(sessions[n], AccuracyCase(model, args.backend, "fp32", "dynamic"))
                accuracy[n][model] = f"{row.status} (p99 rel_l2 {row.metrics.get('rel_l2.p99', float('nan')):.2g})"
            except AccuracyGateFailure as exc:
                accuracy[n][model] = "FAIL: " + str(exc).splitlines()[0]
            except Exception as exc:  # a variant ONNX Runtime cannot load: say so, keep going
                accuracy[n][model] = f"ERROR: {type(exc).__name__}: {str(exc)[:200]}"
            print(f"accuracy {n:32s} {model:12s} {accuracy[n][model]}", flush=True)
    sides = ["user", *names]
    data = {c: {s: Series() for s in sides} for c in cfgs}
    users = {c: UserLoop(args.backend, first.model(c.model), c.batch) for c in cfgs}
    for rep in range(args.reps):
        for c in cfgs:
            order = sides if rep % 2 == 0 else sides[::-1]
            for side in order:
                try:
                    rate = (users[c].measure(args.seconds, args.min_iters) if side == "user" else
                            row_path(sessions[side], args.backend, c).throughput or 0.0)
                except Exception as exc:  # e.g. a setup ONNX Runtime refuses for this model: no number
                    print(f"{side} {c.label}: {type(exc).__name__}: {str(exc)[:200]}")
                    rate = math.nan
                data[c][side].rates.append(rate)
            print(f"rep {rep} {c.label:26s} " + "  ".join(f"{s} {data[c][s].rates[-1]:,.1f}" for s in sides),
                  flush=True)
    print(f"\n{args.backend}: samples/s (medians of {args.reps} interleaved repetitions) and over the user's loop")
    geo: dict[str, float] = {}
    for n in names:
        logs = [math.log(data[c][n].median / data[c]["user"].median) for c in cfgs
                if data[c][n].median > 0 and data[c]["user"].median > 0]
        geo[n] = math.exp(sum(logs) / len(logs)) if logs else math.nan
    for c in cfgs:
        u = data[c]["user"].median
        print(f"{c.label:26s} user {u:12,.1f}  " + "  ".join(
            f"{n} {data[c][n].median:12,.1f} ({data[c][n].median / u:.3f})" for n in names))
    passed = [n for n in names if all(v.split()[0] in ("pass", "unbudgeted") for v in accuracy[n].values())]
    current = default_setup(args.backend)
    default = next((n for n in names if every[n] == current), None)
    versus: dict[str, tuple[float, float, float]] = {}
    for n in names:
        if default is not None:  # paired: the variant and the default measured in the same repetition
            versus[n] = median_ci([a / b for c in cfgs for a, b in zip(data[c][n].rates, data[c][default].rates)
                                   if b > 0 and not math.isnan(a)])
        vs = (f"  over the default {versus[n][1]:.3f} (95 % CI {versus[n][0]:.3f}-{versus[n][2]:.3f})"
              if n in versus and n != default else "  (the current default)" if n == default else "")
        print(f"{n:34s} geometric mean over the user's loop {geo[n]:.3f}  accuracy "
              f"{'pass' if n in passed else 'FAILS'}{vs}")
    # a variant replaces the default only when it is faster beyond doubt; among those, the fastest
    better = [n for n in passed if n != default and n in versus and versus[n][0] > 1.0]
    best = max(better, key=lambda n: versus[n][1]) if better else (default if default in passed else None)
    if best is None:
        ranked = [n for n in sorted(passed, key=lambda n: -geo[n]) if not math.isnan(geo[n])]
        best = ranked[0] if ranked else None
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "ort_setup.json").write_text(json.dumps({
            "backend": args.backend, "machine": m, "seconds": args.seconds, "reps": args.reps,
            "variants": {n: every[n].describe(gpu=gpu) for n in names}, "accuracy": accuracy, "geomean": geo,
            "over_default": {n: list(v) for n, v in versus.items()}, "fastest_correct": best,
            "configs": [{"model": c.model, "batch": c.batch, "which": c.which,
                         **{s: data[c][s].rates for s in sides}} for c in cfgs]}, indent=1))
    if best is None:
        print("no variant passed every accuracy gate")
        return 1
    why = ("no variant is faster than the default beyond doubt: keep it" if best == default else
           f"faster than the default {default} beyond doubt: {versus[best][1]:.3f}x (95 % CI {versus[best][0]:.3f}-"
           f"{versus[best][2]:.3f})" if best in versus else "the default is not among the variants measured")
    print(f"fastest correct setup: {best} = {every[best].describe(gpu=gpu)} ({geo[best]:.3f}x the user's loop, "
          f"geometric mean; {why})")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
