"""The timing core's arithmetic, driven by workloads whose durations are known (a fake clock, or sleeps)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from harness.backends.base import Runner
from harness.errors import HarnessError, ModeUnsupported
from harness.perf import MODE_CLASSES, MultiStream, RunnerFailed, Serial, ThreadPool
from harness.timing import TimingPolicy, run_serial, summarize


class FakeWorkload:
    """A clock and a step: each step advances the clock by the next duration (seconds)."""

    def __init__(self, durations):
        self.now = 100.0
        self._durations = iter(durations)
        self.calls = 0

    def clock(self) -> float:
        return self.now

    def step(self) -> None:
        self.now += next(self._durations)
        self.calls += 1


def steady(d: float):
    while True:
        yield d


def test_warm_up_is_timed_and_discarded():
    def durations():
        yield from [0.01] * 5  # slow first iterations (allocations, JIT, caches)...
        yield from steady(0.001)

    w = FakeWorkload(durations())
    m = run_serial(w.step, TimingPolicy(warmup=0.05, min_duration=0.1, min_iters=10), batch=1, clock=w.clock)
    assert m.warmup_iters == 5 and m.warmup_seconds == pytest.approx(0.05)
    np.testing.assert_allclose(m.latencies, 0.001)
    assert m.iterations == 100 and m.throughput == pytest.approx(1000.0)


@pytest.mark.parametrize("step, min_duration, min_iters, expected", [
    (0.1, 1.0, 20, 20),  # the iteration count binds
    (0.001, 0.5, 20, 500),  # the duration binds
])
def test_the_stop_rule_needs_both_duration_and_iterations(step, min_duration, min_iters, expected):
    w = FakeWorkload(steady(step))
    m = run_serial(w.step, TimingPolicy(warmup=0.0, min_duration=min_duration, min_iters=min_iters), batch=4,
                   clock=w.clock)
    assert m.iterations == expected
    assert m.wall == pytest.approx(expected * step)
    assert m.throughput == pytest.approx(4 / step)
    assert m.stable and not m.capped


def test_fast_steps_are_checked_in_chunks_and_stop_within_a_chunk():
    w = FakeWorkload(steady(1e-5))
    m = run_serial(w.step, TimingPolicy(warmup=0.001, min_duration=0.01, min_iters=10), batch=1, clock=w.clock)
    assert 1000 <= m.iterations < 1000 + 64
    assert m.wall >= 0.01


def test_percentiles_mean_and_throughput_are_those_of_the_recorded_latencies():
    rng = np.random.default_rng(3)
    durations = list(rng.uniform(0.001, 0.003, 1000))
    w = FakeWorkload(iter(durations))
    m = run_serial(w.step, TimingPolicy(warmup=0.0, min_duration=0.0, min_iters=400), batch=8, clock=w.clock)
    d = np.array(durations[1:401])  # the first step was the (zero-second) warm-up
    np.testing.assert_allclose(m.latencies, d)
    s = m.summary()
    for q in (50, 90, 95, 99):
        assert s["latency_ms"][f"p{q}"] == pytest.approx(np.percentile(d, q) * 1e3)
    assert s["latency_ms"]["mean"] == pytest.approx(d.mean() * 1e3)
    assert s["cv"] == pytest.approx(d.std(ddof=1) / d.mean())
    assert s["throughput"] == pytest.approx(8 * 400 / d.sum())


def test_scattered_latencies_are_flagged_unstable():
    w = FakeWorkload(iter([0.001, 0.004] * 500))
    m = run_serial(w.step, TimingPolicy(warmup=0.0, min_duration=0.5, min_iters=20), batch=1, clock=w.clock)
    assert not m.stable and any("CV" in r for r in m.unstable_reasons())


def test_a_few_preempted_iterations_make_a_tail_but_not_an_unstable_run():
    durations = [0.001] * 2000
    for i in range(0, 2000, 500):
        durations[i] = 0.02  # four hiccups
    w = FakeWorkload(iter([0.001] + durations))
    m = run_serial(w.step, TimingPolicy(warmup=0.0, min_duration=0.0, min_iters=2000), batch=1, clock=w.clock)
    assert m.cv > 0.5 and m.cv_robust < 0.01
    assert m.stable and m.percentile(99.9) > 10 * m.percentile(50)


def test_drifting_throughput_is_flagged_unstable():
    w = FakeWorkload(iter([0.001] * 501 + [0.0025] * 400))  # the device slows down half way (thermals)
    m = run_serial(w.step, TimingPolicy(warmup=0.0, min_duration=1.5, min_iters=20), batch=1, clock=w.clock)
    assert m.drift > 0.5
    assert any("drifts" in r for r in m.unstable_reasons())


def test_a_slow_run_stopped_by_the_minimum_iteration_rule_says_its_drift_went_unchecked():
    # 30 iterations of 50 ms, slowing down by half midway: too few for 5 windows of 10, so not "unstable" for
    # drift, and the row says that the check could not run
    w = FakeWorkload(iter([0.05] * 16 + [0.1] * 20))
    m = run_serial(w.step, TimingPolicy(warmup=0.0, min_duration=1.0, min_iters=20), batch=1, clock=w.clock)
    assert m.iterations < 50 and m.drift > 0.2 and not any("drift" in r for r in m.unstable_reasons())
    assert m.stability_notes() == [f"drift not checked: the stop rule ended the run after {m.iterations} "
                                   "iterations, fewer than the 50 (10 per window) the check needs "
                                   "(--perf-min-iters 50 would check it)"]
    assert m.summary()["stability_notes"] == m.stability_notes()
    w = FakeWorkload(steady(0.01))
    m = run_serial(w.step, TimingPolicy(warmup=0.0, min_duration=1.0, min_iters=20), batch=1, clock=w.clock)
    assert m.iterations == 100 and m.stability_notes() == []


def test_a_run_that_cannot_reach_its_iterations_is_capped():
    w = FakeWorkload(steady(1.0))
    m = run_serial(w.step, TimingPolicy(warmup=0.0, min_duration=1.0, min_iters=100, max_duration=5.0), batch=1,
                   clock=w.clock)
    assert m.capped and m.iterations == 5 and any("max_duration" in r for r in m.unstable_reasons())


def test_summarize_orders_concurrent_requests_by_completion():
    m = summarize([0.0, 0.0, 1.0], [2.0, 1.0, 3.0], (0.0, 3.0), batch=2, policy=TimingPolicy())
    assert m.latencies.tolist() == [1.0, 2.0, 2.0] and m.throughput == pytest.approx(2.0)


class SleepRunner(Runner):
    """A workload of known duration that overlaps when run concurrently: it sleeps (releasing the GIL)."""

    input_names = output_names = []

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._until = 0.0

    def infer(self, feeds):
        return {}

    def run(self) -> None:
        time.sleep(self.seconds)

    def submit(self) -> None:
        self._until = time.perf_counter() + self.seconds

    def wait(self) -> None:
        time.sleep(max(0.0, self._until - time.perf_counter()))


def test_concurrent_modes_overlap_requests():
    policy = TimingPolicy(warmup=0.02, min_duration=0.3, min_iters=20)
    serial = Serial().measure([SleepRunner(0.01)], policy, batch=1)
    pool = ThreadPool().measure([SleepRunner(0.01) for _ in range(4)], policy, batch=1)
    streams = MultiStream().measure([SleepRunner(0.01) for _ in range(4)], policy, batch=1)
    # four 10 ms requests in flight: up to four times serial (never more: a request lasts at least 10 ms); at
    # least twice serial even on a loaded machine, where sleeps overshoot (requests that did not overlap would
    # give 1x)
    assert serial.throughput <= 100.5
    for m in (pool, streams):
        assert 2.0 * serial.throughput < m.throughput <= 4 * 100.5
    assert pool.latencies.min() >= 0.01 and streams.latencies.min() >= 0.0099
    assert pool.iterations >= 20 and streams.wall >= 0.3


def test_each_mode_is_a_class_that_says_how_many_runners_it_drives():
    assert set(MODE_CLASSES) == {"serial", "multistream", "threadpool"}
    assert [MODE_CLASSES[m].runner_count(4) for m in ("serial", "multistream", "threadpool")] == [1, 4, 4]
    with pytest.raises(HarnessError, match="serial mode drives exactly one runner, got 2"):
        Serial().measure([SleepRunner(0.001), SleepRunner(0.001)], TimingPolicy(), batch=1)


class FailingRunner(SleepRunner):
    """Sleeps like SleepRunner for ``good`` calls, then raises: a runner whose backend call fails."""

    def __init__(self, seconds: float, good: int):
        super().__init__(seconds)
        self.good = good

    def _call(self) -> None:
        if self.good <= 0:
            raise RuntimeError("enqueue failed: device lost")
        self.good -= 1

    def run(self) -> None:
        self._call()
        super().run()

    def submit(self) -> None:
        self._call()
        super().submit()


# a policy that would take seconds to reach its first measurement and a minute to give up
SLOW = TimingPolicy(warmup=5.0, min_duration=5.0, min_iters=10**6, max_duration=60.0)


@pytest.mark.parametrize("mode, runners, where", [
    ("serial", [0], "serial runner 1 of 1 failed during warm-up"),
    ("multistream", [None, 0, None, None], "multistream runner 2 of 4 failed during warm-up"),
    ("threadpool", [None, 0, None, None], "threadpool runner 2 of 4 failed during warm-up"),
    ("threadpool", [None, None, 3, None], "threadpool runner 3 of 4 failed during warm-up"),
])
def test_a_runner_failing_in_warm_up_stops_its_mode_at_once_and_is_named(mode, runners, where):
    pool = [SleepRunner(0.001) if good is None else FailingRunner(0.001, good) for good in runners]
    t0 = time.perf_counter()
    with pytest.raises(RunnerFailed) as err:
        MODE_CLASSES[mode].measure(pool, SLOW, batch=1)
    assert time.perf_counter() - t0 < 1.0  # not after the 5 s warm-up of the others, nor the 60 s cap
    assert str(err.value) == f"{where}: RuntimeError: enqueue failed: device lost"
    assert isinstance(err.value.__cause__, RuntimeError)


@pytest.mark.parametrize("mode", ["serial", "multistream", "threadpool"])
def test_a_runner_failing_while_timed_is_named(mode):
    policy = TimingPolicy(warmup=0.01, min_duration=5.0, min_iters=10**6, max_duration=60.0)
    n = 1 if mode == "serial" else 3
    # the last runner survives its warm-up (at most 0.01 s of 1 ms calls), then fails
    pool = [SleepRunner(0.001) for _ in range(n - 1)] + [FailingRunner(0.001, 40)]
    t0 = time.perf_counter()
    with pytest.raises(RunnerFailed, match=f"{mode} runner {n} of {n} failed while timed: RuntimeError"):
        MODE_CLASSES[mode].measure(pool, policy, batch=1)
    assert time.perf_counter() - t0 < 1.0


def test_a_mode_the_runner_cannot_do_stays_a_skip():
    class NoAsync(SleepRunner):
        def submit(self) -> None:
            raise ModeUnsupported("NoAsync has no asynchronous execution")

    with pytest.raises(ModeUnsupported, match="NoAsync has no asynchronous execution"):
        MultiStream().measure([NoAsync(0.001), NoAsync(0.001)], SLOW, batch=1)


def test_work_between_chunks_is_left_out_of_the_next_iteration_and_can_replace_the_step():
    # a load check restages the runner between chunks (harness.load_check): 5 ms of work there must not count
    # as the next iteration's latency, and the step it hands back is the one timed from then on
    w = FakeWorkload(steady(0.001))
    other = FakeWorkload(steady(0.002))
    done = []

    def between(t):
        if done:
            return None
        done.append(t)
        w.now += 0.005  # the restaging
        other.now = w.now

        def step():  # the new step advances the same clock by 2 ms
            w.now += 0.002
        return step, ()

    m = run_serial(w.step, TimingPolicy(warmup=0.0, min_duration=0.2, min_iters=10), batch=1, clock=w.clock,
                   between=between)
    assert len(done) == 1
    assert set(np.round(m.latencies * 1e3, 6)) == {1.0, 2.0}  # never 7 ms: the 5 ms between are nobody's
    assert m.latencies.max() == pytest.approx(0.002)
    # nor the throughput's: the timed seconds are the window less the 5 ms, and no window slice looks slow for them
    assert m.timed == pytest.approx(m.window[1] - m.window[0] - 0.005) and m.wall == m.window[1] - m.window[0]
    assert m.summary()["checked_s"] == pytest.approx(0.005)
    assert m.throughput == pytest.approx(m.iterations / m.latencies.sum())
    assert m.drift < 0.6  # slices of 1 ms and 2 ms steps: 2x apart at most, the 5 ms gap adds nothing
