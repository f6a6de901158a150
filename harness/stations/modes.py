"""The station perf modes: how one frame runs every model of a station, over the ordinary Runner interface.

A request is one *frame*: every member model run once on the frame's batch. Frames run back to back, so
every mode is a frame function timed by :func:`harness.timing.run_serial` (warm-up, stop rule, every
frame's latency kept); the modes differ only in what one frame does:

``serial``       one thread calls each member's runner in turn (each member's share of the frame is kept);
``multistream``  one thread submits every member's request (each runner has its own stream, or on the CPU
                 its own session pool), then waits for each;
``threadpool``   one persistent thread per member, each owning its runner; the main thread releases them
                 all on a barrier and the frame ends when the last has finished (results joined per frame);
``merged``       one runner of the merged engine (one graph holding every member): one call per frame.

The interface is the perf modes': ``measure(runners, policy, *, batch, clock) -> Measurement``. A runner
that raises stops the mode at once with :class:`MemberFailed` naming the mode, the runner and the phase;
ModeUnsupported passes through unchanged (the case is skipped with the backend's reason).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from ..backends import Backend, Runner
from ..errors import ModeUnsupported
from ..perf import TIMING, WARMING, RunnerFailed
from ..timing import Clock, Measurement, TimingPolicy, run_serial, warm_up


class MemberFailed(RunnerFailed):
    """A station's runner raised; ``index`` is its place among the runners (the member, or 0 for merged)."""

    def __init__(self, message: str, index: int):
        super().__init__(message)
        self.index = index


@dataclass
class StationMeasurement(Measurement):
    """A Measurement whose requests are frames; serial mode adds each member's mean time within a frame."""

    member_seconds: list[float] | None = None

    @classmethod
    def of(cls, m: Measurement, member_seconds: list[float] | None = None) -> StationMeasurement:
        return cls(**{f.name: getattr(m, f.name) for f in dataclasses.fields(m) if f.init},
                   member_seconds=member_seconds)


def _fail(mode: str, k: int, n: int, phase: str, exc: BaseException) -> NoReturn:
    if isinstance(exc, ModeUnsupported) or not isinstance(exc, Exception):
        raise exc
    raise MemberFailed(f"station {mode} runner {k + 1} of {n} failed {phase}: {type(exc).__name__}: {exc}", k) from exc


def _time_frames(mode: str, frame: Callable[[], None], current: list[int], n: int, policy: TimingPolicy, batch: int,
                 clock: Clock, on_warm: Callable[[], None] | None = None) -> Measurement:
    """Warm up, then time ``frame`` back to back; ``current[0]`` names the runner being called, for errors."""
    phase = WARMING
    try:
        warmed = warm_up(frame, policy.warmup, clock)
        if on_warm is not None:
            on_warm()
        phase = TIMING
        return run_serial(frame, policy, batch=batch, clock=clock, warmed=warmed)
    except BaseException as exc:
        _fail(mode, current[0], n, phase, exc)


class StationMode:
    """One way of running a station's runners on every frame. Small and stateless."""

    name: str = ""
    merged: bool = False  # runs the merged engine (one runner) instead of one runner per member
    perf_mode: str = "serial"  # the perf mode whose CPU split it shares (Backend.runner_threads)

    def runner_threads(self, backend: Backend, runners: int) -> int | None:
        """Host threads each runner may use (the ONNX Runtime CPU split), as the perf mode it resembles."""
        return backend.runner_threads(self.perf_mode, runners)

    def measure(self, runners: list[Runner], policy: TimingPolicy, *, batch: int,
                clock: Clock = time.perf_counter) -> Measurement:
        raise NotImplementedError


class Serial(StationMode):
    """One thread runs the members in turn; the cycle time is the serial sum the other modes are compared with."""

    name = "serial"

    def measure(self, runners: list[Runner], policy: TimingPolicy, *, batch: int,
                clock: Clock = time.perf_counter) -> Measurement:
        calls = [r.timed_call() for r in runners]
        n = len(calls)
        spent = [0.0] * n
        current = [0]

        def frame() -> None:
            t = clock()
            for k, (fn, args) in enumerate(calls):
                current[0] = k
                fn(*args)
                u = clock()
                spent[k] += u - t
                t = u

        def reset() -> None:  # the warm-up's share is not the timed frames'
            spent[:] = [0.0] * n

        m = _time_frames(self.name, frame, current, n, policy, batch, clock, reset)
        return StationMeasurement.of(m, [s / m.iterations for s in spent])


class MultiStream(StationMode):
    """One thread: submit every member's request (each runner its own stream), then wait for each."""

    name = "multistream"
    perf_mode = "multistream"

    def measure(self, runners: list[Runner], policy: TimingPolicy, *, batch: int,
                clock: Clock = time.perf_counter) -> Measurement:
        submits = [r.submit for r in runners]
        waits = [r.wait for r in runners]
        current = [0]

        def frame() -> None:
            for k, submit in enumerate(submits):
                current[0] = k
                submit()
            for k, wait in enumerate(waits):
                current[0] = k
                wait()

        return StationMeasurement.of(_time_frames(self.name, frame, current, len(runners), policy, batch, clock))


class ThreadPool(StationMode):
    """One persistent thread per member, each owning its runner. A frame releases them all through one barrier
    and ends at a second, when the last has finished; a failing runner breaks both barriers, which stops the
    frame at once and the others after their current call."""

    name = "threadpool"
    perf_mode = "threadpool"

    def measure(self, runners: list[Runner], policy: TimingPolicy, *, batch: int,
                clock: Clock = time.perf_counter) -> Measurement:
        n = len(runners)
        go = threading.Barrier(n + 1)
        done = threading.Barrier(n + 1)
        failures: list[tuple[int, BaseException]] = []

        def worker(k: int) -> None:
            try:
                fn, args = runners[k].timed_call()
                while True:
                    go.wait()
                    fn(*args)
                    done.wait()
            except threading.BrokenBarrierError:
                return  # the frames are over, or another runner failed
            except BaseException as exc:  # reported by the main thread, which stops waiting at once
                failures.append((k, exc))
                go.abort()
                done.abort()

        def frame() -> None:
            go.wait()
            done.wait()

        threads = [threading.Thread(target=worker, args=(k,), name=f"harness-station-{k}") for k in range(n)]
        for t in threads:
            t.start()
        phase = WARMING
        m: Measurement | None = None
        try:
            warmed = warm_up(frame, policy.warmup, clock)
            phase = TIMING
            m = run_serial(frame, policy, batch=batch, clock=clock, warmed=warmed)
        except threading.BrokenBarrierError:
            pass  # a worker failed: its error is the one reported
        finally:
            go.abort()  # releases the workers waiting for the next frame
            done.abort()
            for t in threads:
                t.join()
        if failures:
            k, exc = failures[0]
            _fail(self.name, k, n, phase, exc)
        assert m is not None
        return StationMeasurement.of(m)


class Merged(StationMode):
    """The merged engine: one runner whose one call runs every member's graph."""

    name = "merged"
    merged = True

    def measure(self, runners: list[Runner], policy: TimingPolicy, *, batch: int,
                clock: Clock = time.perf_counter) -> Measurement:
        if len(runners) != 1:
            raise ValueError(f"merged mode drives exactly one runner (the merged engine's), got {len(runners)}")
        fn, args = runners[0].timed_call()

        def frame() -> None:
            fn(*args)

        return StationMeasurement.of(_time_frames(self.name, frame, [0], 1, policy, batch, clock))


STATION_MODES: dict[str, StationMode] = {m.name: m for m in (Serial(), MultiStream(), ThreadPool(), Merged())}
