"""The timing core: warm-up, stop rule, every iteration recorded, statistics and a stability verdict.

``run_serial`` times one step function back to back. Warm-up runs for ``warmup`` seconds (at least one
iteration) and is discarded. Measurement then runs until both ``min_duration`` seconds and ``min_iters``
iterations are reached (or ``max_duration`` passes: the run is then marked capped). Only one clock read
and one list append happen per iteration — back to back, iteration i lasted ``t[i] - t[i-1]`` — and the
stop rule is checked every chunk of iterations (about a millisecond's worth, from the warm-up's pace).

Concurrent modes record each request's (start, end) themselves and hand them to :func:`summarize`.

Statistics: throughput = samples completed / wall time of the measurement window; latency mean, min,
p50/p90/p95/p99, max, std and coefficient of variation. A run is **unstable** when its coefficient of
variation exceeds ``cv_bound`` or when throughput measured over ``windows`` equal slices of the window
drifts by more than ``drift_bound`` (max minus min, over the median). The verdict uses the robust
coefficient of variation, 1.4826 x MAD / median (equal to std / mean for normally distributed latencies):
the plain one, reported beside it, is dominated by the few iterations an operating system preempts among
thousands, which make a tail (see p99) but not an uncertain throughput. The summary keeps every
iteration's latency as a log-bucket histogram (:mod:`harness.histogram`), from which ``compare`` tests
whether two runs' medians differ.

A run whose iterations are too few for the drift check (fewer than 10 per window: a slow model stopped by
the minimum-iteration rule) is not unstable for that, but its ``stability_notes`` say the check could not
run, and the report says so beside its verdict.

The clock is a parameter so that tests can drive the arithmetic exactly with a fake one. GPU backends add
trtexec's breakdown (H2D, compute, D2H, enqueue; :mod:`harness.breakdown`) from CUDA events in a short pass
after the measurement, so that timing events never slow the timed loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .breakdown import Breakdown
from .histogram import LogHistogram

Clock = Callable[[], float]


@dataclass(frozen=True)
class TimingPolicy:
    warmup: float = 0.3
    min_duration: float = 1.0
    min_iters: int = 20
    max_duration: float = 60.0
    cv_bound: float = 0.25
    drift_bound: float = 0.20
    windows: int = 5


@dataclass
class Measurement:
    """One timed run: every request's latency and the measurement window."""

    latencies: np.ndarray  # seconds, one per request, in completion order
    ends: np.ndarray  # completion times (clock seconds), same order
    window: tuple[float, float]  # (start, end) of the measurement
    batch: int  # samples per request
    policy: TimingPolicy
    warmup_iters: int = 0
    warmup_seconds: float = 0.0
    capped: bool = False
    gpu_seconds: np.ndarray | None = None  # device time per request from events, where measured
    breakdown: Breakdown | None = None  # trtexec's breakdown from a pass after the window, GPU backends
    # (start, end, share): while the mode ran checked requests (harness.load_check) instead of timed ones, the
    # share of its capacity they took (1 where the one host thread stopped issuing, 1/N for one of N threads)
    pauses: list[tuple[float, float, float]] = field(default_factory=list)

    @property
    def iterations(self) -> int:
        return int(self.latencies.size)

    def paused(self, lo: float, hi: float) -> float:
        """Seconds of [lo, hi] the mode spent on checked requests, weighted by the share of it they took."""
        return sum(share * max(0.0, min(b, hi) - max(a, lo)) for a, b, share in self.pauses)

    @property
    def wall(self) -> float:
        """Seconds of the measurement window (what the stop rule measured)."""
        return self.window[1] - self.window[0]

    @property
    def timed(self) -> float:
        """Seconds timed: the window less its checked requests (their staging, run and copies are not the
        engine's throughput; a hand-written loop has none)."""
        return self.wall - self.paused(*self.window)

    @property
    def throughput(self) -> float:
        """Samples per second over the timed seconds of the measurement window."""
        return self.iterations * self.batch / self.timed if self.timed > 0 else math.nan

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q))

    @property
    def mean(self) -> float:
        return float(self.latencies.mean())

    @property
    def std(self) -> float:
        return float(self.latencies.std(ddof=1)) if self.iterations > 1 else 0.0

    @property
    def cv(self) -> float:
        return self.std / self.mean if self.mean > 0 else math.nan

    @property
    def cv_robust(self) -> float:
        med = float(np.median(self.latencies))
        mad = float(np.median(np.abs(self.latencies - med)))
        return 1.4826 * mad / med if med > 0 else math.nan

    def window_throughputs(self) -> list[float]:
        """Throughput in ``policy.windows`` equal time slices of the window, by completion time."""
        k = max(1, self.policy.windows)
        start, end = self.window
        edges = np.linspace(start, end, k + 1)
        counts, _ = np.histogram(self.ends, bins=edges)
        widths = [float(b - a) - self.paused(float(a), float(b)) for a, b in zip(edges[:-1], edges[1:])]
        return [float(c * self.batch / w) if w > 0 else math.nan for c, w in zip(counts, widths)]

    @property
    def drift(self) -> float:
        w = [x for x in self.window_throughputs() if not math.isnan(x)]
        if len(w) < 2 or np.median(w) == 0:
            return 0.0
        return float((max(w) - min(w)) / np.median(w))

    def unstable_reasons(self) -> list[str]:
        reasons = []
        if self.cv_robust > self.policy.cv_bound:
            reasons.append(f"latency CV {self.cv_robust:.2f} (robust) > {self.policy.cv_bound:.2f}")
        # with few requests per slice the counts are too coarse (4 +- 1 is already 25 %): drift says nothing
        if self.drift_checked and self.drift > self.policy.drift_bound:
            reasons.append(f"throughput drifts {100 * self.drift:.0f} % across {self.policy.windows} windows "
                           f"(> {100 * self.policy.drift_bound:.0f} %)")
        if self.capped:
            reasons.append(f"stopped at max_duration {self.policy.max_duration:g} s before {self.policy.min_iters} "
                           "iterations")
        return reasons

    @property
    def drift_checked(self) -> bool:
        return self.iterations >= 10 * self.policy.windows

    def stability_notes(self) -> list[str]:
        """What the stability verdict could not look at."""
        if self.drift_checked:
            return []
        need = 10 * self.policy.windows
        return [f"drift not checked: the stop rule ended the run after {self.iterations} iterations, fewer than the "
                f"{need} (10 per window) the check needs (--perf-min-iters {need} would check it)"]

    @property
    def stable(self) -> bool:
        return not self.unstable_reasons()

    def summary(self) -> dict[str, Any]:
        ms = 1e3
        out: dict[str, Any] = {
            "throughput": self.throughput,
            "iterations": self.iterations,
            "wall_s": self.wall,
            "warmup_iters": self.warmup_iters,
            "warmup_s": self.warmup_seconds,
            "latency_ms": {
                "mean": self.mean * ms, "min": float(self.latencies.min()) * ms,
                "p50": self.percentile(50) * ms, "p90": self.percentile(90) * ms,
                "p95": self.percentile(95) * ms, "p99": self.percentile(99) * ms,
                "max": float(self.latencies.max()) * ms, "std": self.std * ms,
            },
            # every iteration's latency, compactly: what compare's bootstrap test reads
            "latency_hist": LogHistogram.from_values(self.latencies).to_dict(),
            "cv": self.cv,
            "cv_robust": self.cv_robust,
            "window_throughputs": self.window_throughputs(),
            "drift": self.drift,
            "stable": self.stable,
            "unstable_reasons": self.unstable_reasons(),
            "stability_notes": self.stability_notes(),
        }
        if self.pauses:  # the load check's requests: what the throughput left out of the window
            out["checked_s"] = self.wall - self.timed
        if self.breakdown is not None and self.breakdown.iterations:
            out.update(self.breakdown.summary(self.batch))
        elif self.gpu_seconds is not None and self.gpu_seconds.size:
            g = self.gpu_seconds
            out["gpu_ms"] = {"mean": float(g.mean()) * ms, "p50": float(np.percentile(g, 50)) * ms,
                             "p99": float(np.percentile(g, 99)) * ms}
        return out


def warm_up(step: Callable[[], object], seconds: float, clock: Clock = time.perf_counter,
            stop: Callable[[], bool] | None = None) -> tuple[int, float]:
    """Run ``step`` for ``seconds`` (at least once); return iterations and seconds spent. Results discarded.
    ``stop``, where given, ends it early (another runner of the same mode failed)."""
    t0 = clock()
    n = 0
    while True:
        step()
        n += 1
        t = clock()
        if t - t0 >= seconds or (stop is not None and stop()):
            return n, t - t0


Call = tuple[Callable[..., object], tuple[Any, ...]]


def _chunk_runner(call: Call, append: Callable[[float], None], clock: Clock) -> Callable[[range], None]:
    """A loop over a chunk that calls ``fn(*args)`` and records the clock, specialized by arity so that the
    call is made exactly as a hand-written loop makes it (a star-call costs 1-2 % on a 4 us request)."""
    fn, args = call
    if len(args) == 0:
        def loop(chunk: range) -> None:
            for _ in chunk:
                fn()
                append(clock())
    elif len(args) == 1:
        (a,) = args

        def loop(chunk: range) -> None:
            for _ in chunk:
                fn(a)
                append(clock())
    elif len(args) == 2:
        a, b = args

        def loop(chunk: range) -> None:
            for _ in chunk:
                fn(a, b)
                append(clock())
    else:
        def loop(chunk: range) -> None:
            for _ in chunk:
                fn(*args)
                append(clock())
    return loop


def run_serial(step: Callable[[], object] | Call, policy: TimingPolicy, *, batch: int,
               clock: Clock = time.perf_counter, warmed: tuple[int, float] | None = None,
               between: Callable[[float], Call | None] | None = None) -> Measurement:
    """Time a step back to back under ``policy``.

    ``step`` is a callable, or ``(function, args)``: the backend call itself, which the loop then makes
    inline. ``warmed``: the caller has already warmed it up, in that many iterations and seconds.
    ``between(t)``, where given, runs after each chunk (at clock ``t``, outside any timed iteration); when it
    ran something it returns the step to time from then on (harness.load_check restages the runner), and the
    next iteration's latency counts from its return, else None.
    """
    call: Call = step if isinstance(step, tuple) else (step, ())
    fn, args = call
    warm_iters, warm_s = warmed or warm_up(lambda: fn(*args), policy.warmup, clock)
    ends: list[float] = []
    # the stop rule is checked once per chunk of iterations, about every millisecond: per iteration only
    # the call, one clock read and one append remain
    per_step = warm_s / max(warm_iters, 1)
    chunk = range(max(1, min(64, int(1e-3 / per_step)) if per_step > 0 else 64))
    loop = _chunk_runner(call, ends.append, clock)
    start = clock()
    deadline_min = start + policy.min_duration
    deadline_max = start + policy.max_duration
    min_iters = policy.min_iters
    resumed: list[tuple[int, float]] = []  # (iteration, clock) where timing resumed after ``between``
    pauses: list[tuple[float, float, float]] = []
    while True:
        loop(chunk)
        t = ends[-1]
        if t >= deadline_min and (len(ends) >= min_iters or t >= deadline_max):
            break
        if between is not None:
            new = between(t)
            if new is not None:  # it ran something: the step it returns is timed from now on
                loop = _chunk_runner(new, ends.append, clock)
                resumed.append((len(ends), clock()))
                pauses.append((t, resumed[-1][1], 1.0))
    capped = len(ends) < min_iters
    times = np.asarray(ends)
    latencies = np.diff(np.concatenate([[start], times]))
    for i, t in resumed:
        latencies[i] = times[i] - t
    return Measurement(latencies, times, (start, float(times[-1])), batch, policy, warm_iters, warm_s, capped,
                       pauses=pauses)


def summarize(starts: list[float], ends: list[float], window: tuple[float, float], *, batch: int,
              policy: TimingPolicy, warmup_iters: int = 0, warmup_seconds: float = 0.0, capped: bool = False,
              gpu_seconds: list[float] | None = None) -> Measurement:
    """A Measurement from requests recorded by a concurrent mode: (start, end) per request."""
    s = np.asarray(starts, dtype=np.float64)
    e = np.asarray(ends, dtype=np.float64)
    order = np.argsort(e, kind="stable")
    return Measurement(e[order] - s[order], e[order], window, batch, policy, warmup_iters, warmup_seconds, capped,
                       np.asarray(gpu_seconds) if gpu_seconds else None)
