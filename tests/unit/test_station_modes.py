"""The station modes' arithmetic, on workloads of known duration that sleep (releasing the GIL like a backend
call): a frame runs every member once; serial adds their times, the concurrent modes overlap them."""

from __future__ import annotations

import threading
import time

import pytest

from harness.errors import ModeUnsupported
from harness.stations.modes import STATION_MODES, MemberFailed, Merged, MultiStream, Serial, ThreadPool
from harness.timing import TimingPolicy
from tests.unit.test_timing import SLOW, FailingRunner, SleepRunner

POLICY = TimingPolicy(warmup=0.02, min_duration=0.3, min_iters=20)


class CountingRunner(SleepRunner):
    """Counts its calls and the threads they came from."""

    def __init__(self, seconds: float):
        super().__init__(seconds)
        self.calls = 0
        self.threads: set[int] = set()

    def run(self) -> None:
        self.calls += 1
        self.threads.add(threading.get_ident())
        super().run()

    def submit(self) -> None:
        self.calls += 1
        super().submit()


def test_serial_runs_the_members_in_turn_and_keeps_each_ones_share_of_the_frame():
    runners = [SleepRunner(0.004), SleepRunner(0.002), SleepRunner(0.006)]
    m = Serial().measure(runners, POLICY, batch=4)
    # a frame lasts at least the sum of its members (sleeps overshoot on a loaded machine, never undershoot)
    assert m.latencies.min() >= 0.012
    assert m.throughput <= 4 / 0.012 * 1.001
    shares = m.member_seconds
    assert shares is not None and len(shares) == 3
    assert shares[0] >= 0.004 and shares[1] >= 0.002 and shares[2] >= 0.006
    # the shares add up to the frame (the loop reads the clock once more per frame than the members do)
    assert sum(shares) == pytest.approx(float(m.latencies.mean()), rel=0.05)


@pytest.mark.parametrize("mode", [MultiStream(), ThreadPool()])
def test_the_concurrent_modes_overlap_the_members_of_a_frame(mode):
    serial = Serial().measure([SleepRunner(0.01) for _ in range(3)], POLICY, batch=1)
    together = mode.measure([SleepRunner(0.01) for _ in range(3)], POLICY, batch=1)
    # three 10 ms members: a frame lasts at least 10 ms, and overlapping makes it well under the 30 ms serial
    assert together.latencies.min() >= 0.0099
    assert serial.latencies.min() >= 0.03
    assert together.throughput > 1.8 * serial.throughput
    assert together.iterations >= 20 and together.wall >= 0.3


def test_the_thread_pool_gives_each_member_its_own_persistent_thread_and_joins_every_frame():
    runners = [CountingRunner(0.001), CountingRunner(0.003)]
    m = ThreadPool().measure(runners, POLICY, batch=1)
    # one frame = one call of each member: they were called equally often (warm-up frames included)
    assert runners[0].calls == runners[1].calls >= m.iterations + m.warmup_iters
    # each member always ran on one thread, its own, never the caller's
    assert all(len(r.threads) == 1 for r in runners)
    assert runners[0].threads != runners[1].threads and threading.get_ident() not in runners[0].threads
    # joined per frame: a frame waits for the slower member
    assert m.latencies.min() >= 0.003
    assert not [t for t in threading.enumerate() if t.name.startswith("harness-station-")]  # no thread left


def test_merged_drives_exactly_one_runner():
    m = Merged().measure([SleepRunner(0.002)], POLICY, batch=2)
    assert m.latencies.min() >= 0.002 and m.iterations >= 20
    with pytest.raises(ValueError, match="exactly one runner .* got 2"):
        Merged().measure([SleepRunner(0.001), SleepRunner(0.001)], POLICY, batch=1)


@pytest.mark.parametrize("mode, runners, where", [
    ("serial", [None, 0, None], "station serial runner 2 of 3 failed during warm-up"),
    ("multistream", [None, None, 0], "station multistream runner 3 of 3 failed during warm-up"),
    ("threadpool", [0, None, None], "station threadpool runner 1 of 3 failed during warm-up"),
    ("merged", [0], "station merged runner 1 of 1 failed during warm-up"),
])
def test_a_member_failing_stops_the_mode_at_once_and_is_named(mode, runners, where):
    pool = [SleepRunner(0.001) if good is None else FailingRunner(0.001, good) for good in runners]
    t0 = time.perf_counter()
    with pytest.raises(MemberFailed) as err:
        STATION_MODES[mode].measure(pool, SLOW, batch=1)
    assert time.perf_counter() - t0 < 1.0  # not after the 5 s warm-up, nor the 60 s cap
    assert str(err.value) == f"{where}: RuntimeError: enqueue failed: device lost"
    assert err.value.index == runners.index(0)
    assert not [t for t in threading.enumerate() if t.name.startswith("harness-station-")]


@pytest.mark.parametrize("mode", ["serial", "multistream", "threadpool"])
def test_a_member_failing_while_timed_is_named(mode):
    policy = TimingPolicy(warmup=0.01, min_duration=5.0, min_iters=10**6, max_duration=60.0)
    pool = [SleepRunner(0.001), FailingRunner(0.001, 40)]
    with pytest.raises(MemberFailed, match=f"station {mode} runner 2 of 2 failed while timed: RuntimeError"):
        STATION_MODES[mode].measure(pool, policy, batch=1)


def test_a_mode_the_backend_cannot_do_stays_a_skip():
    class NoAsync(SleepRunner):
        def submit(self) -> None:
            raise ModeUnsupported("NoAsync has no asynchronous execution")

    with pytest.raises(ModeUnsupported, match="NoAsync has no asynchronous execution"):
        MultiStream().measure([NoAsync(0.001), NoAsync(0.001)], SLOW, batch=1)
