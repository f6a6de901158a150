"""Open-loop serving: requests arrive by a Poisson process at a target rate and queue for N runners.

The closed-loop modes (serial, multistream, threadpool) issue a request when the previous one finishes, so a
slow request delays the next one's *start* and its waiting is never measured: coordinated omission. A server
does not get to choose: requests arrive when clients send them. Here arrival times are drawn up front
(exponential gaps at ``rate`` requests per second, from a seeded generator), and each request's latency is
measured **from its scheduled arrival** to its completion: time spent queued behind earlier requests counts,
however late the harness itself got to it.

N runners, one host thread each (a runner is never shared between threads), serve one FIFO queue: a free runner
takes the oldest request not yet taken, waits for its arrival if it has not arrived, and runs it. That is an
M/G/N queue: below capacity latency stays near the service time; past it the queue, and latency, grow for as
long as requests keep arriving. Arrivals stop after ``duration`` seconds; requests still queued are served
until ``drain`` seconds later, and any left then are *unfinished*: their latency counts as infinite (a
percentile that reaches them is reported as such, never as the survivors' numbers).

Waits are ``time.sleep``: a spinning thread would hold the GIL from the runners' threads returning from the
backend. So a request that finds its runner idle starts a little after its arrival; that *dispatch lag* is part
of its latency (it is the harness's own floor, a few tens of microseconds) and is reported apart.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backends import Runner
from .errors import ModeUnsupported
from .histogram import LogHistogram
from .timing import Clock, warm_up

MS = 1e3


def poisson_arrivals(rate: float, duration: float, seed: int = 0) -> np.ndarray:
    """Arrival times in [0, duration) of a Poisson process of ``rate`` per second: exponential gaps, seeded."""
    if not rate > 0 or not math.isfinite(rate):
        raise ValueError(f"an arrival rate must be a positive number of requests per second, got {rate!r}")
    rng = np.random.default_rng(seed)
    expected = rate * duration
    times = np.cumsum(rng.exponential(1.0 / rate, size=int(expected + 6 * math.sqrt(expected) + 16)))
    while times[-1] < duration:  # rare: more arrivals than six standard deviations above the mean
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1.0 / rate, size=len(times)))])
    return times[times < duration]


@dataclass
class ServerRun:
    """One open-loop run: every request's scheduled arrival, start and end (NaN where it never ran), in seconds
    from the run's start."""

    rate: float  # offered requests per second
    batch: int  # samples per request
    runners: int
    duration: float  # seconds during which requests arrive
    arrivals: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    idle: np.ndarray  # True where the request found its runner waiting for it (its start lag is the harness's)
    warmup_seconds: float = 0.0

    @property
    def count(self) -> int:
        return int(self.arrivals.size)

    @property
    def completed(self) -> int:
        return int(np.isfinite(self.ends).sum())

    @property
    def unfinished(self) -> int:
        return self.count - self.completed

    @property
    def latencies(self) -> np.ndarray:
        """From scheduled arrival to completion; +inf for a request that never completed."""
        lat = self.ends - self.arrivals
        return np.where(np.isfinite(lat), lat, np.inf)

    def within(self, seconds: float) -> int:
        """How many requests completed within ``seconds`` of their arrival."""
        return int((self.latencies <= seconds).sum())

    def quantile(self, q: float) -> float:
        """The q-quantile of latency over every request (inf when it falls among unfinished ones)."""
        lat = np.sort(self.latencies)
        if lat.size == 0:
            return math.nan
        return float(np.percentile(lat, 100 * q, method="higher")) if np.isinf(lat[-1]) else \
            float(np.percentile(lat, 100 * q))

    @property
    def wall(self) -> float:
        done = self.ends[np.isfinite(self.ends)]
        return float(done.max()) if done.size else self.duration

    @property
    def throughput(self) -> float:
        """Samples completed per second, from the first arrival to the last completion."""
        return self.completed * self.batch / self.wall if self.wall > 0 else math.nan

    def summary(self) -> dict[str, Any]:
        """A point of the throughput-latency curve, in ms (a latency among unfinished requests is None)."""
        def ms(v: float) -> float | None:
            return None if not math.isfinite(v) else round(v * MS, 6)

        lat = self.latencies
        finite = lat[np.isfinite(lat)]
        queue = (self.starts - self.arrivals)[np.isfinite(self.starts)]
        service = (self.ends - self.starts)[np.isfinite(self.ends)]
        lag = (self.starts - self.arrivals)[self.idle & np.isfinite(self.starts)]
        out: dict[str, Any] = {
            "rate": round(self.rate, 6), "arrivals": self.count, "arrival_rate": round(self.count / self.duration, 6),
            "completed": self.completed, "unfinished": self.unfinished, "duration_s": round(self.duration, 6),
            "throughput": round(self.throughput, 6),
            "latency_ms": {"mean": ms(float(finite.mean())) if finite.size and not self.unfinished else None,
                           **{f"p{q:g}": ms(self.quantile(q / 100)) for q in (50, 90, 95, 99)},
                           "max": ms(float(lat.max())) if lat.size else None},
        }
        for name, values in (("queue_ms", queue), ("service_ms", service), ("dispatch_lag_ms", lag)):
            if values.size:
                out[name] = {"p50": ms(float(np.percentile(values, 50))), "p99": ms(float(np.percentile(values, 99)))}
        return out

    def histogram(self) -> dict[str, Any] | None:
        finite = self.latencies[np.isfinite(self.latencies)]
        return LogHistogram.from_values(finite).to_dict() if finite.size else None


class ServerFailed(RuntimeError):
    """A runner raised while serving; the message names the runner."""


def serve(runners: list[Runner], rate: float, duration: float, *, batch: int, warmup: float = 0.0,
          drain: float | None = None, seed: int = 0, clock: Clock = time.perf_counter,
          sleep: Callable[[float], None] = time.sleep, check: Any = None) -> ServerRun:
    """Serve Poisson arrivals at ``rate`` for ``duration`` seconds with one thread per runner (each warmed up for
    ``warmup`` seconds first); queued requests are served until ``drain`` seconds after the last arrival (default:
    as long again as the arrivals, at least a second). ``check``: a :class:`harness.load_check.LoadCheck` whose
    checked requests each runner issues between requests."""
    arrivals = poisson_arrivals(rate, duration, seed)
    n, size = len(runners), arrivals.size
    drain = max(duration, 1.0) if drain is None else drain
    starts = np.full(size, np.nan)
    ends = np.full(size, np.nan)
    idle = np.zeros(size, dtype=bool)
    lock = threading.Lock()
    taken = [0]  # the next request to take
    t0 = [0.0]
    stop = threading.Event()
    ready = threading.Barrier(n + 1)
    go = threading.Barrier(n + 1)
    failures: list[tuple[int, str, BaseException]] = []
    warmed = [0.0] * n

    def worker(k: int) -> None:
        r = runners[k]
        phase = "during warm-up"
        try:
            fn, args = r.timed_call()
            if warmup > 0:
                warmed[k] = warm_up(lambda: fn(*args), warmup, clock, stop=stop.is_set)[1]
            ready.wait()
            go.wait()
            phase = "while serving"
            start, deadline = t0[0], t0[0] + duration + drain
            while not stop.is_set():
                with lock:
                    i = taken[0]
                    if i >= size:
                        return
                    taken[0] = i + 1
                due = start + arrivals[i]
                now = clock()
                if now < due:
                    idle[i] = True
                    sleep(due - now)
                s = clock()
                if s > deadline:  # the drain is over: this request and those after it stay unfinished
                    stop.set()
                    return
                fn(*args)
                e = clock()
                starts[i], ends[i] = s - start, e - start
                if check is not None and check.due(k, e):
                    fn, args = check.take(k, r)  # between two requests: it delays the queue, as real work would
        except threading.BrokenBarrierError:
            return
        except BaseException as exc:
            failures.append((k, phase, exc))
            stop.set()
            ready.abort()
            go.abort()

    threads = [threading.Thread(target=worker, args=(k,), name=f"harness-server-{k}") for k in range(n)]
    for t in threads:
        t.start()
    try:
        ready.wait()
        t0[0] = clock() + 0.002  # the first arrival after every thread is past the barrier
        if check is not None:
            check.begin(t0[0])
        go.wait()
    except threading.BrokenBarrierError:
        pass
    for t in threads:
        t.join()
    if failures:
        k, phase, exc = failures[0]
        if isinstance(exc, ModeUnsupported) or not isinstance(exc, Exception):
            raise exc
        raise ServerFailed(f"server runner {k + 1} of {n} failed {phase}: {type(exc).__name__}: {exc}") from exc
    return ServerRun(rate, batch, n, duration, arrivals, starts, ends, idle, max(warmed))
