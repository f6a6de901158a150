"""What the harness's timing costs: serial-mode throughput over a bare loop on the same session and inputs.

    python benchmarks/overhead.py [--backend ort_cpu] [--seconds 1.0] [--reps 7]

A tiny model (8 inputs, two 16-wide layers) makes each call a few microseconds, so per-call overhead
dominates: the worst case for a timing harness. The bare loop is what a user writes by hand:
``for _ in range(n): session.run(names, feeds)`` (ort_cpu), or ``session.run_with_iobinding(binding)`` on
device-resident inputs (ort_cuda). Harness and bare loop alternate ``--reps`` times in one run; the ratio of
their median throughputs is printed last. Target: >= 0.98.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.backends import RunnerOptions, get_backend  # noqa: E402
from harness.cache import Cache  # noqa: E402
from harness.profiles import Profile  # noqa: E402
from harness.timing import TimingPolicy, run_serial  # noqa: E402
from tests.helpers import mlp_model  # noqa: E402


def bare_loop(fn, args, n: int) -> float:
    """The hand-written loop: the backend call inline, timed around the whole loop."""
    if len(args) == 2:
        a, b = args
        t0 = time.perf_counter()
        for _ in range(n):
            fn(a, b)
    else:
        (a,) = args
        t0 = time.perf_counter()
        for _ in range(n):
            fn(a)
    return n / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="ort_cpu")
    ap.add_argument("--seconds", type=float, default=1.0, help="per repetition and side")
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    backend = get_backend(args.backend)
    reason = backend.unavailable()
    if reason:
        print(f"{args.backend}: {reason}")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        model = mlp_model(Path(tmp) / "tiny.onnx")
        profile = Profile.from_strings("b1", shapes="x:1x8")
        engine = backend.build(model, profile, Cache(Path(tmp) / "cache"), label="tiny", model_hash="tiny")
        feeds = {"x": np.random.default_rng(0).standard_normal((1, 8)).astype(np.float32)}
        runner = engine.runner(RunnerOptions(threads=1))
        on_gpu = backend.on_gpu
        runner.prepare(feeds, resident=on_gpu)  # GPU: device-resident inputs; CPU: session.run on numpy feeds
        fn, fargs = runner.timed_call()  # the same session, inputs and call the harness's serial mode makes
        policy = TimingPolicy(warmup=0.2, min_duration=args.seconds, min_iters=100)
        probe = bare_loop(fn, fargs, 2000)
        n = max(1000, int(probe * args.seconds))
        harness_rates, bare_rates = [], []
        for rep in range(args.reps):
            h = run_serial(runner.timed_call(), policy, batch=1).throughput
            b = bare_loop(fn, fargs, n)
            harness_rates.append(h)
            bare_rates.append(b)
            print(f"rep {rep}: harness {h:12,.0f} calls/s   bare loop {b:12,.0f} calls/s   ratio {h / b:.4f}")
        runner.close()
    ratio = statistics.median(harness_rates) / statistics.median(bare_rates)
    print(f"{args.backend}: {1e6 / statistics.median(bare_rates):.2f} us per bare call; "
          f"harness serial / bare loop throughput (medians of {args.reps}): {ratio:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
