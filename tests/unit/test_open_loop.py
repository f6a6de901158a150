"""Open-loop serving (harness.server): Poisson arrivals, a FIFO queue over N runners, latency from arrival.

The runners here are plain Python runners whose requests take a known wall time (a sleep, which frees the GIL
as a backend call does): what is under test is the queueing and the clock arithmetic, not a backend.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import pytest

from harness.backends.base import Runner
from harness.perf import ThreadPool
from harness.server import ServerFailed, poisson_arrivals, serve
from harness.timing import TimingPolicy


class SleepRunner(Runner):
    """Every request takes ``service`` seconds; request number ``stall_at`` (1-based) ``stall`` seconds more;
    request number ``fail_at`` raises."""

    input_names: list[str] = []
    output_names: list[str] = []

    def __init__(self, service: float, *, stall_at: int | None = None, stall: float = 0.0, fail_at: int | None = None):
        self.service, self.stall_at, self.stall, self.fail_at = service, stall_at, stall, fail_at
        self.calls = 0

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {}

    def prepare(self, feeds: Mapping[str, np.ndarray], *, resident: bool = True) -> None:
        pass

    def run(self) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("boom")
        time.sleep(self.service + (self.stall if self.calls == self.stall_at else 0.0))


def test_poisson_arrivals_are_seeded_and_come_at_the_rate():
    a = poisson_arrivals(2000.0, 1.0, seed=3)
    assert np.array_equal(a, poisson_arrivals(2000.0, 1.0, seed=3))
    assert not np.array_equal(a, poisson_arrivals(2000.0, 1.0, seed=4))
    assert abs(a.size - 2000) < 5 * np.sqrt(2000) and a.min() >= 0 and a.max() < 1.0 and np.all(np.diff(a) > 0)
    gaps = np.diff(a)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.1)  # exponential gaps: CV 1
    with pytest.raises(ValueError, match="positive number of requests per second"):
        poisson_arrivals(0.0, 1.0)


def test_latency_counts_from_the_scheduled_arrival_so_queueing_behind_a_slow_runner_is_measured():
    # one runner that needs 10 ms per request, offered 200 requests / s: twice its capacity. Each request waits
    # for all those before it, and its latency must say so, while its own service stays 10 ms
    service = 0.010
    run = serve([SleepRunner(service)], 200.0, 0.25, batch=1, seed=1, drain=5.0)
    assert run.unfinished == 0 and run.count > 30
    lat = run.latencies
    ideal = np.empty(run.count)  # a FIFO single-server queue with exactly this service time and these arrivals
    free = 0.0
    for i, a in enumerate(run.arrivals):
        free = max(a, free) + service
        ideal[i] = free - a
    assert np.all(lat >= ideal - 1e-4), "a request's latency must include all its queueing"
    assert np.all(run.ends - run.starts >= service)
    assert lat[-1] > 10 * service and run.quantile(0.99) > 10 * service  # the queue grew past capacity
    s = run.summary()
    assert s["service_ms"]["p50"] == pytest.approx(10.0, abs=5.0)
    # against the typical service time: a loaded machine stretches a few sleeps, not the queue behind them
    assert s["latency_ms"]["p99"] > 10 * s["service_ms"]["p50"] and s["queue_ms"]["p99"] > 50.0
    assert s["arrivals"] == s["completed"] == run.count


def test_a_stall_delays_every_request_that_arrives_during_it_where_a_closed_loop_sees_one_slow_request():
    # coordinated omission: the closed loop (thread pool) simply issues no request while the runner stalls, so one
    # request is slow; open loop, the ~60 requests that arrive during the 0.3 s stall all wait for it
    open_loop = serve([SleepRunner(0.001, stall_at=20, stall=0.3)], 200.0, 0.6, batch=1, seed=2, drain=5.0)
    slow_open = int((open_loop.latencies >= 0.1).sum())
    closed = ThreadPool().measure([SleepRunner(0.001, stall_at=20, stall=0.3)],
                                  TimingPolicy(warmup=0.0, min_duration=0.6, min_iters=20), batch=1)
    slow_closed = int((closed.latencies >= 0.1).sum())
    assert slow_closed <= 2
    assert slow_open >= 20, f"only {slow_open} requests counted the stall"
    assert open_loop.quantile(0.9) > 0.05 > float(np.percentile(closed.latencies, 90))


def test_requests_left_when_the_drain_ends_are_unfinished_and_push_percentiles_to_infinity():
    run = serve([SleepRunner(0.05)], 100.0, 0.3, batch=4, seed=0, drain=0.1)
    assert run.unfinished > 0 and run.completed + run.unfinished == run.count
    assert run.quantile(0.99) == float("inf") and run.within(10.0) == run.completed
    s = run.summary()
    assert s["latency_ms"]["p99"] is None and s["latency_ms"]["mean"] is None and s["unfinished"] == run.unfinished
    assert run.throughput == pytest.approx(run.completed * 4 / run.wall)


def test_a_runner_that_raises_stops_the_server_naming_it():
    with pytest.raises(ServerFailed, match=r"server runner 2 of 2 failed while serving: RuntimeError: boom"):
        serve([SleepRunner(0.001), SleepRunner(0.001, fail_at=3)], 500.0, 0.5, batch=1)
