"""Server cases: the open-loop mode at offered rates, and the latency-bounded search, as gates of the perf suite.

Generated when ``--perf-modes`` names ``server`` or ``--perf-latency-bound`` is given (``-m perf``; never under
``-n`` unless every worker has a GPU), for every selected model x backend x perf recipe x profile x batch (as
the perf sweep: ``--perf-batches``, default 1 and opt) x N (``--perf-concurrency``) x resident inputs x CUDA
graphs, and then

* per offered rate of ``--server-rates`` (``50%,90%,110%`` of the capacity by default; ``200`` is 200
  requests per second): ``test_server[ranker-ort_cpu-fp32-dynamic-server-b1-n2-r90pct]``;
* with a bound, one search case: ``test_server[ranker-ort_cpu-fp32-dynamic-server-b1-n2-p99le20ms]``.

Each case creates its N runners once, measures their closed-loop capacity (the thread-pool mode on the same
runners: requests per second), then serves (:mod:`harness.server`) at the rate or rates it needs, checked
requests carrying real evaluation inputs through every run (:mod:`harness.load_check`). Its row
(:class:`harness.rows.ServerRow`) keeps every rate run — the throughput-latency curve — and, for a search, the
steps and the statement of how sure the answer is (:mod:`harness.latency_search`). A search that finds no rate
keeping the bound passes and says so (the row's ``offered_rate`` is None): it measured what it was asked to.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .backends import RunnerOptions, get_backend
from .data import SampleSet
from .environment import this_gpu_index
from .errors import HarnessError
from .hostlock import timing
from .latency_search import LatencyBound, SearchPolicy, search
from .load_check import LoadCheckFailure, load_check_for, verify_load
from .perf import MODE_CLASSES, perf_targets
from .recipes import apply_recipe
from .resources import ResourceMonitor
from .rows import ServerRow
from .server import serve
from .session import HarnessSession
from .timing import TimingPolicy

SEARCH = "search"


@dataclass(frozen=True)
class ServerCase:
    model: str
    backend: str
    recipe: str
    profile: str
    batch: int
    concurrency: int
    resident: bool = True
    cuda_graph: bool = False
    rate: str = SEARCH  # "90%" (of capacity), "200" (requests / s) or "search"
    bound: str = ""  # the latency bound of a search

    @property
    def id(self) -> str:
        parts = [self.model, self.backend, self.recipe, self.profile, "server", f"b{self.batch}", f"n{self.concurrency}"]
        if self.rate == SEARCH:
            parts.append(LatencyBound.parse(self.bound).slug)
        else:
            parts.append("r" + self.rate.replace("%", "pct").replace(".", "_"))
        if not self.resident:
            parts.append("copy")
        if self.cuda_graph:
            parts.append("graph")
        return "-".join(parts)


def parse_rate(text: str, capacity: float | None = None, source: str = "--server-rates") -> float:
    """``"90%"`` of ``capacity`` or ``"200"`` requests per second; HarnessError naming the option otherwise."""
    s = text.strip()
    try:
        value = float(s[:-1]) / 100.0 if s.endswith("%") else float(s.removesuffix("/s"))
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise HarnessError(f"{source}: cannot use {text!r}: give requests per second (200) or a share of the measured "
                           "capacity (90%)")
    if s.endswith("%"):
        return value * capacity if capacity is not None else value
    return value


def check_server_options(ps: Any, source: Any) -> None:
    """Refuse a latency bound or an offered rate that cannot be read, naming the option and where it was set."""
    if ps.latency_bound:
        LatencyBound.parse(ps.latency_bound, source("perf_latency_bound"))
    for rate in ps.server_rates:
        parse_rate(rate, source=source("server_rates"))


def server_cases(hs: HarnessSession) -> Iterator[ServerCase]:
    ps = hs.settings.perf
    bound = LatencyBound.parse(ps.latency_bound).text if ps.latency_bound else ""
    if not bound and "server" not in ps.modes:
        return
    for rate in ps.server_rates:
        parse_rate(rate)
    for model, backend, recipe, pname, batches in perf_targets(hs):
        for batch in batches:
            for n in ps.concurrency:
                for resident in ps.resident:
                    for graph in ps.cuda_graph:
                        for rate in [SEARCH] if bound else ps.server_rates:
                            yield ServerCase(model, backend, recipe, pname, batch, n, resident, graph, rate, bound)


def check_server(hs: HarnessSession, case: ServerCase) -> ServerRow:
    """Serve one case; write and return its row (raising LoadCheckFailure when the checked requests differ)."""
    spec = hs.model(case.model)
    recipe = hs.recipe(case.recipe)
    profile = spec.profiles[case.profile]
    backend = get_backend(case.backend)
    ps = hs.settings.perf
    threads = backend.runner_threads("threadpool", case.concurrency)
    row = ServerRow(id=case.id, model=spec.name, backend=backend.name, recipe=recipe.name, profile=profile.name,
                    batch=case.batch, concurrency=case.concurrency, resident=case.resident, cuda_graph=case.cuda_graph,
                    rate=case.rate, bound=case.bound, recipe_kind=recipe.kind, backend_version=backend.version(),
                    threads_per_runner=threads,
                    policy={"warmup_s": ps.warmup, "min_duration_s": ps.duration, "min_iters": ps.min_iters})
    mon = ResourceMonitor(gpu_index=this_gpu_index() if backend.on_gpu else None)
    runners: list[Any] = []
    try:
        samples = SampleSet(spec, profile, size=case.batch)
        samples.check_profile(case.batch)
        feeds = next(samples.batches(case.batch, fill=True)).feeds
        art = apply_recipe(recipe, spec, hs.cache)
        label = f"{spec.name}/{backend.name}/{recipe.name}-{profile.name}"
        engine = backend.build(art.path, profile, hs.cache, label=label, model_hash=art.model_hash,
                               options=hs.build_options(backend, art.build_options,
                                                        backend.perf_build_options("threadpool", case.concurrency)),
                               calibration=art.calibration)
        row.update(engine_key=engine.entry.key, cache_hit=engine.entry.hit)
        policy = TimingPolicy(warmup=ps.warmup, min_duration=ps.duration, min_iters=ps.min_iters)
        check = load_check_for(hs, spec, profile, case.batch, case.concurrency, case.resident, policy)
        options = RunnerOptions(threads=threads, cuda_graph=case.cuda_graph)
        for k in range(case.concurrency):
            runners.append(engine.runner(options))
            runners[-1].prepare(check.feeds(k) if check is not None else feeds, resident=case.resident)
        with timing(), mon:
            capacity_run = MODE_CLASSES["threadpool"].measure(runners, policy, batch=case.batch)
            capacity = capacity_run.throughput / case.batch
            row.capacity = round(capacity, 6)

            def run(rate: float, seconds: float, seed: int) -> Any:
                result = serve(runners, rate, seconds, batch=case.batch, seed=seed, check=check)
                row.points.append(result.summary())
                return result

            if case.rate == SEARCH:
                bound = LatencyBound.parse(case.bound)
                found = search(capacity, bound, run, SearchPolicy(min_seconds=ps.duration,
                                                                  max_seconds=max(1.0, 10 * ps.duration)))
                row.search = found.as_dict()
                row.search["steps_detail"] = [s.as_dict() for s in found.steps]
                reported = found.best.point if found.best else None
                row.offered_rate = round(found.best.rate, 6) if found.best else None
            else:
                rate = parse_rate(case.rate, capacity)
                # long enough for 2,000 requests (a p99 with 20 beyond it), within 1 and 10 times --perf-duration
                seconds = min(10 * ps.duration, max(ps.duration, 2000 / rate))
                result = run(rate, seconds, 0)
                reported = row.points[-1]
                row.offered_rate = round(rate, 6)
                row.latency_hist = result.histogram()
        row.runner = runners[0].describe()
        checked, failure = verify_load(hs, check, engine, spec, recipe, case.id)
    except Exception as exc:
        hs.write_failure(row, exc)
        raise
    finally:
        for r in runners:
            r.close()
    if reported is not None:
        row.throughput = reported["throughput"]
        row.latency_ms = dict(reported["latency_ms"])
    row.resources = mon.result
    row.load_check = checked
    row.status = "fail" if failure else "pass"
    row.message = failure
    hs.write_row(row)
    if failure:
        raise LoadCheckFailure(failure)
    return row
