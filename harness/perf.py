"""Perf modes, the cases the plugin generates for them, and the shared perf check.

Each mode is a small class over the Runner interface (``Mode.measure(runners, policy, batch=)``):

``serial``       one runner, one request at a time, back to back.
``multistream``  one host thread keeps N requests in flight on N runners (each with its own stream, or on
                 the CPU its own ONNX Runtime session whose ``run_async`` runs on that session's pool),
                 submitting asynchronously and waiting for completions in submission order.
``threadpool``   N host threads, each owning one runner and running it back to back.

Parameters: batch size, N, inputs resident on the device or copied in every iteration, CUDA graphs on or
off where the backend has them, and on a GPU how the host waits for it (``sync``: spin or block). On the
CPU the cores are split between runners (N x threads <= cores, and at least 2 threads for a session serving
``run_async``; serial mode keeps ONNX Runtime's default pool); the split is recorded in every row. A mode the
backend cannot do raises ModeUnsupported and the test is skipped with the reason. A runner that raises
anything else stops its mode at once, in warm-up as in measurement, with :class:`RunnerFailed` naming the
mode, the runner and the phase ("threadpool runner 2 of 4 failed during warm-up: ...").

The timed loops carry nothing but the backend's call and the clock: no timing events (GPU device times and
trtexec's H2D / compute / D2H / enqueue breakdown come from a pass of their own on the first runner after
the window, :mod:`harness.breakdown`). A row records the machine's state during the run (clocks, throttling,
host load: :mod:`harness.machine_state`); a row measured while throttled or on an overloaded host is
flagged (``state_flags``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

from .backends import Engine, Runner, RunnerOptions, get_backend
from .breakdown import pass_length
from .data import SampleSet, batch_size_of
from .environment import this_gpu_index
from .errors import HarnessError, ModeUnsupported
from .hostlock import timing
from .load_check import LoadCheck, LoadCheckFailure, load_check_for, verify_load
from .recipes import apply_recipe
from .resources import ResourceMonitor
from .rows import PerfRow
from .session import HarnessSession
from .timing import Clock, Measurement, TimingPolicy, run_serial, summarize, warm_up


@dataclass(frozen=True)
class PerfCase:
    model: str
    backend: str
    recipe: str
    profile: str
    mode: str
    batch: int
    concurrency: int = 1
    resident: bool = True
    cuda_graph: bool = False
    sync: str = "spin"  # how the host waits for a GPU: spin (CUDA's default) or block

    @property
    def id(self) -> str:
        parts = [self.model, self.backend, self.recipe, self.profile, self.mode, f"b{self.batch}"]
        if self.mode != "serial":
            parts.append(f"n{self.concurrency}")
        if not self.resident:
            parts.append("copy")
        if self.cuda_graph:
            parts.append("graph")
        if self.sync != "spin":
            parts.append(self.sync)
        return "-".join(parts)


def perf_targets(hs: HarnessSession) -> Iterator[tuple[str, str, str, str, list[int]]]:
    """(model, backend, recipe, profile, batches): each selected model's perf recipes on each backend and profile,
    with the batch sizes its perf and server cases time there (--perf-batches, default 1 and opt; those outside
    the profile left out: a fixed profile has one)."""
    ps = hs.settings.perf
    for spec in hs.models():
        recipes = hs.perf_recipes(spec)
        for backend in hs.backends():
            for recipe in recipes:
                for pname in hs.model_profiles(spec, ps.profiles or hs.settings.profiles):
                    profile = spec.profiles[pname]
                    lo, opt, hi = (batch_size_of(spec, profile, w) for w in ("min", "opt", "max"))
                    yield spec.name, backend, recipe, pname, [b for b in ps.batches or sorted({1, opt}) if lo <= b <= hi]


def perf_cases(hs: HarnessSession) -> Iterator[PerfCase]:
    ps = hs.settings.perf
    unknown = [m for m in ps.modes if m not in MODES and m != "server"]  # server: harness.server_check
    if unknown:
        raise HarnessError(f"--perf-modes names unknown mode(s) {', '.join(unknown)}; known: {', '.join(MODES)}")
    for model, backend, recipe, pname, batches in perf_targets(hs):
        for mode in (m for m in ps.modes if m in MODES):
            for batch in batches:
                for n in ([1] if mode == "serial" else ps.concurrency):
                    for resident in ps.resident:
                        for graph in ps.cuda_graph:
                            for sync in ps.sync:
                                yield PerfCase(model, backend, recipe, pname, mode, batch, n, resident, graph, sync)


# ---------------------------------------------------------------------------------------------- modes


WARMING, TIMING = "during warm-up", "while timed"


class RunnerFailed(RuntimeError):
    """A runner raised while a perf mode drove it; the message names the mode, the runner and the phase."""


def _raise_failed(mode: str, k: int, n: int, phase: str, exc: BaseException) -> NoReturn:
    # a backend that cannot do what the mode asks says so with ModeUnsupported: the case is skipped with
    # that reason, unchanged; KeyboardInterrupt and the like are not a runner's failure
    if isinstance(exc, ModeUnsupported) or not isinstance(exc, Exception):
        raise exc
    raise RunnerFailed(f"{mode} runner {k + 1} of {n} failed {phase}: {type(exc).__name__}: {exc}") from exc


class Mode:
    """One way of driving runners: how many it needs and how it times them. Small and stateless.

    ``measure`` returns the Measurement of the timed window; on runners that time the device
    (``times_gpu``) it also holds trtexec's breakdown, from :meth:`add_breakdown` after the window."""

    name: str = ""

    def runner_count(self, concurrency: int) -> int:
        return concurrency

    def measure(self, runners: list[Runner], policy: TimingPolicy, *, batch: int,
                clock: Clock = time.perf_counter, check: LoadCheck | None = None) -> Measurement:
        """Time the runners; ``check`` (harness.load_check) issues its checked requests from the runners' own
        loops, between timed ones."""
        raise NotImplementedError

    def add_breakdown(self, runners: list[Runner], m: Measurement) -> Measurement:
        """The first runner's breakdown, one request at a time, after the window (never inside it)."""
        if runners and runners[0].times_gpu:
            try:
                m.breakdown = runners[0].breakdown(pass_length(m.iterations))
            except BaseException as exc:
                _raise_failed(self.name, 0, len(runners), "in the breakdown pass after the window", exc)
        return m


class Serial(Mode):
    """One runner, one request at a time, back to back."""

    name = "serial"

    def runner_count(self, concurrency: int) -> int:
        return 1

    def measure(self, runners: list[Runner], policy: TimingPolicy, *, batch: int,
                clock: Clock = time.perf_counter, check: LoadCheck | None = None) -> Measurement:
        if len(runners) != 1:
            raise HarnessError(f"serial mode drives exactly one runner, got {len(runners)}")
        (r,) = runners
        call = r.timed_call()
        fn, args = call
        try:
            warmed = warm_up(lambda: fn(*args), policy.warmup, clock)
        except BaseException as exc:
            _raise_failed(self.name, 0, 1, WARMING, exc)
        between = None
        if check is not None:
            check.begin(clock())

            def between(t: float) -> Any:  # between chunks of timed iterations
                return check.take(0, r) if check.due(0, t) else None
        try:
            m = run_serial(call, policy, batch=batch, clock=clock, warmed=warmed, between=between)
        except BaseException as exc:
            _raise_failed(self.name, 0, 1, TIMING, exc)
        return self.add_breakdown(runners, m)


class MultiStream(Mode):
    """One host thread keeps N requests in flight on N runners: submit on each, wait in submission order,
    resubmit each as it completes, until the stop rule holds; every request's latency is kept."""

    name = "multistream"

    def measure(self, runners: list[Runner], policy: TimingPolicy, *, batch: int,
                clock: Clock = time.perf_counter, check: LoadCheck | None = None) -> Measurement:
        n = len(runners)
        i, phase = 0, WARMING  # which runner is being called, in which phase: for the error message
        try:
            # warm-up: whole rounds of N in flight
            t0 = clock()
            warm = 0
            while True:
                for i in range(n):
                    runners[i].submit()
                for i in range(n):
                    runners[i].wait()
                warm += n
                if clock() - t0 >= policy.warmup:
                    break
            warm_s = clock() - t0
            phase = TIMING
            starts: list[float] = []
            ends: list[float] = []
            submitted = [0.0] * n
            active = [True] * n
            start = clock()
            if check is not None:
                check.begin(start)
            for i, r in enumerate(runners):
                submitted[i] = clock()
                r.submit()
            stopping = capped = False
            i = 0
            while any(active):
                if active[i]:
                    r = runners[i]
                    r.wait()
                    t = clock()
                    starts.append(submitted[i])
                    ends.append(t)
                    if not stopping and t - start >= policy.min_duration and len(ends) >= policy.min_iters:
                        stopping = True
                    if not stopping and t - start >= policy.max_duration:
                        stopping = capped = True
                    if stopping:
                        active[i] = False
                    else:
                        if check is not None and check.due(i, t):
                            check.take(i, r)  # a checked request on this runner, between two timed ones
                        submitted[i] = clock()
                        r.submit()
                i = (i + 1) % n
        except BaseException as exc:
            _raise_failed(self.name, i, n, phase, exc)
        m = summarize(starts, ends, (start, max(ends)), batch=batch, policy=policy, warmup_iters=warm,
                      warmup_seconds=warm_s, capped=capped)
        if check is not None:  # the one host thread ran it: no runner was resubmitted meanwhile
            m.pauses = check.pauses(1.0)
        return self.add_breakdown(runners, m)


class ThreadPool(Mode):
    """N host threads, each owning one runner and running it back to back; all start together after their
    own warm-up, and the main thread stops them once the stop rule holds over all of them. A runner that
    fails stops the others at once, in warm-up as in measurement."""

    name = "threadpool"

    def measure(self, runners: list[Runner], policy: TimingPolicy, *, batch: int,
                clock: Clock = time.perf_counter, check: LoadCheck | None = None) -> Measurement:
        n = len(runners)
        ready = threading.Barrier(n + 1)
        # when each runner's next checked request is due (never, without a check): one comparison per request
        due_at = check.next_at if check is not None else [float("inf")] * n
        go = threading.Barrier(n + 1)
        stop = threading.Event()
        records: list[list[tuple[float, float]]] = [[] for _ in range(n)]
        warm: list[tuple[int, float]] = [(0, 0.0)] * n
        failures: list[tuple[int, str, BaseException]] = []

        def worker(k: int) -> None:
            r = runners[k]
            phase = WARMING
            try:
                fn, args = r.timed_call()
                warm[k] = warm_up(lambda: fn(*args), policy.warmup, clock, stop=stop.is_set)
                ready.wait()
                go.wait()
                phase = TIMING
                rec = records[k]
                while not stop.is_set():
                    a = clock()
                    fn(*args)
                    b = clock()
                    rec.append((a, b))
                    if b >= due_at[k]:
                        fn, args = check.take(k, r)  # type: ignore[union-attr]
            except threading.BrokenBarrierError:
                return  # another runner failed: its error is the one reported
            except BaseException as exc:  # surfaced by the main thread, which stops waiting at once
                failures.append((k, phase, exc))
                stop.set()
                ready.abort()
                go.abort()

        threads = [threading.Thread(target=worker, args=(k,), name=f"harness-runner-{k}") for k in range(n)]
        for t in threads:
            t.start()
        start = clock()
        capped = False
        try:
            ready.wait()
            start = clock()
            if check is not None:
                check.begin(start)
            go.wait()
        except threading.BrokenBarrierError:
            stop.set()
        while not stop.is_set():
            time.sleep(0.002)
            elapsed = clock() - start
            done = sum(len(rec) for rec in records)
            # a thread the others starved of the GIL may not have reached its last checked request yet: wait
            if elapsed >= policy.min_duration and done >= policy.min_iters and not (check and check.pending()):
                break
            if elapsed >= policy.max_duration:
                capped = done < policy.min_iters
                break
        stop.set()
        for t in threads:
            t.join()
        if failures:
            k, phase, exc = failures[0]
            _raise_failed(self.name, k, n, phase, exc)
        pairs = [p for rec in records for p in rec]
        m = summarize([a for a, _ in pairs], [b for _, b in pairs], (start, max(b for _, b in pairs)),
                      batch=batch, policy=policy, warmup_iters=sum(w[0] for w in warm),
                      warmup_seconds=max(w[1] for w in warm), capped=capped)
        if check is not None:  # one runner's thread ran it while the other N - 1 kept running
            m.pauses = check.pauses(1.0 / n)
        return self.add_breakdown(runners, m)


MODE_CLASSES: dict[str, Mode] = {m.name: m for m in (Serial(), MultiStream(), ThreadPool())}
MODES = tuple(MODE_CLASSES)


def measure_mode(engine: Engine, case: PerfCase, feeds: dict[str, Any], policy: TimingPolicy,
                 threads: int | None, monitor: ResourceMonitor, check: LoadCheck | None = None
                 ) -> tuple[Measurement, dict[str, Any]]:
    """Create the mode's runners, stage the batch, time it; returns the measurement and runner facts.
    ``monitor`` samples resources while the mode runs (warm-up and measurement), not while sessions or
    contexts are created."""
    mode = MODE_CLASSES[case.mode]
    options = RunnerOptions(threads=threads, cuda_graph=case.cuda_graph, sync=case.sync)
    runners: list[Runner] = []
    try:
        for _ in range(mode.runner_count(case.concurrency)):
            runners.append(engine.runner(options))
        for k, r in enumerate(runners):  # with a load check, each runner carries its own evaluation batch
            r.prepare(check.feeds(k) if check is not None else feeds, resident=case.resident)
        # timing() waits while another worker on this host builds (harness.hostlock; a no-op otherwise)
        with timing(), monitor:
            m = mode.measure(runners, policy, batch=case.batch, check=check)
        return m, runners[0].describe()
    finally:
        for r in runners:
            r.close()


def check_perf(hs: HarnessSession, case: PerfCase, *, monitor: ResourceMonitor | None = None) -> PerfRow:
    """Time one perf case; write and return its row. ``monitor``: the resource monitor to sample the run with
    (by default one for this backend's device; tests inject readings through their own)."""
    spec = hs.model(case.model)
    recipe = hs.recipe(case.recipe)
    profile = spec.profiles[case.profile]
    backend = get_backend(case.backend)
    ps = hs.settings.perf
    policy = TimingPolicy(warmup=ps.warmup, min_duration=ps.duration, min_iters=ps.min_iters, cv_bound=ps.max_cv,
                          drift_bound=ps.max_drift)
    threads = backend.runner_threads(case.mode, case.concurrency)
    row = PerfRow(
        id=case.id, model=spec.name, backend=backend.name, recipe=recipe.name, profile=profile.name,
        mode=case.mode, batch=case.batch, concurrency=case.concurrency, resident=case.resident,
        cuda_graph=case.cuda_graph, sync=case.sync if backend.on_gpu or case.sync != "spin" else None,
        recipe_kind=recipe.kind, backend_version=backend.version(), threads_per_runner=threads,
        transfers_included=not case.resident,
        policy={"warmup_s": ps.warmup, "min_duration_s": ps.duration, "min_iters": ps.min_iters,
                "max_cv": ps.max_cv, "max_drift": ps.max_drift, "max_load": ps.max_load},
    )
    mon = monitor or ResourceMonitor(gpu_index=this_gpu_index() if backend.on_gpu else None, max_load=ps.max_load)
    try:
        samples = SampleSet(spec, profile, size=case.batch)
        samples.check_profile(case.batch)
        feeds = next(samples.batches(case.batch)).feeds
        art = apply_recipe(recipe, spec, hs.cache)
        label = f"{spec.name}/{backend.name}/{recipe.name}-{profile.name}"
        options = hs.build_options(backend, art.build_options, backend.perf_build_options(case.mode, case.concurrency))
        engine = backend.build(art.path, profile, hs.cache, label=label, model_hash=art.model_hash, options=options,
                               calibration=art.calibration)
        row.update(engine_key=engine.entry.key, cache_hit=engine.entry.hit, setup=engine.describe())
        check = load_check_for(hs, spec, profile, case.batch, MODE_CLASSES[case.mode].runner_count(case.concurrency),
                               case.resident, policy)
        m, runner_facts = measure_mode(engine, case, feeds, policy, threads, mon, check)
        checked, failure = verify_load(hs, check, engine, spec, recipe, case.id)
    except Exception as exc:
        hs.write_failure(row, exc)
        raise
    row.update(m.summary())
    row.runner = runner_facts
    row.resources = mon.result
    row.load_check = checked
    row.state = mon.state
    row.state_flags = mon.flags
    row.status = "pass" if m.stable else "unstable"
    if failure:
        row.update(status="fail", message=failure)
    hs.write_row(row)
    if failure:
        raise LoadCheckFailure(failure)
    return row
