"""Open-loop serving: latency from arrival below, near and above capacity (harness.server).

    python benchmarks/server_load.py [--model classifier] [--backend ort_cpu] [--recipe fp32] [--batch 1]
        [--runners 2] [--loads 25,50,75,90,100,110,125] [--seconds 4]

Builds (or takes from the engine cache) the bundled model's engine, measures the closed-loop capacity of N
runners (the thread-pool mode: requests per second), then offers Poisson arrivals at each load, a share of that
capacity, for ``--seconds`` and prints per load the rate offered and served, latency from scheduled arrival
(p50, p90, p99, max), the queueing and service p99, the harness's own dispatch lag and unfinished requests.
The capacity is measured again at the end: on a shared machine it moves, and the loads are shares of the first.
Below capacity latency stays near the service time; past it the queue, and latency, grow for as long as
requests arrive.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.backends import RunnerOptions, get_backend  # noqa: E402
from harness.data import SampleSet  # noqa: E402
from harness.environment import cpu_count, environment  # noqa: E402
from harness.perf import ThreadPool  # noqa: E402
from harness.recipes import apply_recipe  # noqa: E402
from harness.server import serve  # noqa: E402
from harness.session import HarnessSession, Settings  # noqa: E402
from harness.timing import TimingPolicy  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="classifier")
    ap.add_argument("--backend", default="ort_cpu")
    ap.add_argument("--recipe", default="fp32")
    ap.add_argument("--profile", default="dynamic")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runners", type=int, default=2)
    ap.add_argument("--loads", default="25,50,75,90,100,110,125", help="percent of the measured capacity")
    ap.add_argument("--seconds", type=float, default=4.0, help="of arrivals per load")
    args = ap.parse_args()
    backend = get_backend(args.backend)
    reason = backend.unavailable()
    if reason:
        print(f"{args.backend}: {reason}")
        return 2
    cache = Path(os.environ.get("HARNESS_CACHE_DIR", ROOT / ".cache" / "harness"))
    hs = HarnessSession(Settings(registry=ROOT / "fixtures" / "models.toml", report_dir=ROOT / "reports",
                                 cache_dir=cache))
    spec = hs.model(args.model)
    profile = spec.profiles[args.profile]
    recipe = hs.recipe(args.recipe)
    art = apply_recipe(recipe, spec, hs.cache)
    engine = backend.build(art.path, profile, hs.cache, label=f"{spec.name}/{backend.name}/{recipe.name}-{profile.name}",
                           model_hash=art.model_hash, options=hs.build_options(backend, art.build_options))
    samples = SampleSet(spec, profile, size=args.batch)
    feeds = next(samples.batches(args.batch, fill=True)).feeds
    threads = backend.runner_threads("threadpool", args.runners)
    runners = [engine.runner(RunnerOptions(threads=threads)) for _ in range(args.runners)]
    for r in runners:
        r.prepare(feeds)
    env = environment()
    print(f"{spec.name} {recipe.name} on {backend.name}, batch {args.batch}, {args.runners} runners x {threads} "
          f"thread(s); {env.get('cpu', platform.processor())}, {cpu_count()} cores, "
          f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    policy = TimingPolicy(warmup=0.5, min_duration=2.0, min_iters=200)
    capacity = ThreadPool().measure(runners, policy, batch=args.batch).throughput / args.batch
    print(f"closed-loop capacity: {capacity:,.1f} requests/s")
    head = ("load", "offered/s", "served/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "queue p99", "service p99",
            "lag p50", "unfinished")
    print(" ".join(f"{h:>11}" for h in head))
    for pct in (float(x) for x in args.loads.split(",")):
        run = serve(runners, capacity * pct / 100.0, args.seconds, batch=args.batch, warmup=0.1, seed=int(pct))
        s = run.summary()
        lat = s["latency_ms"]

        def ms(v: float | None) -> str:
            return "unfinished" if v is None else f"{v:.3g}"

        cells = [f"{pct:g} %", f"{s['rate']:,.1f}", f"{s['throughput'] / args.batch:,.1f}", ms(lat["p50"]),
                 ms(lat["p90"]), ms(lat["p99"]), ms(lat["max"]), ms(s.get("queue_ms", {}).get("p99")),
                 ms(s.get("service_ms", {}).get("p99")), ms(s.get("dispatch_lag_ms", {}).get("p50")),
                 str(s["unfinished"])]
        print(" ".join(f"{c:>11}" for c in cells), flush=True)
    again = ThreadPool().measure(runners, policy, batch=args.batch).throughput / args.batch
    print(f"closed-loop capacity afterwards: {again:,.1f} requests/s; load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for r in runners:
        r.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
