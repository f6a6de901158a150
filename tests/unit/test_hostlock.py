"""The host lock between pytest-xdist workers: timed measurements side by side, builds never beside them.

Real processes and real flock(2) locks; each records when it held the lock on the system-wide monotonic clock.
"""

from __future__ import annotations

import multiprocessing
import time

import pytest

from harness import hostlock
from harness.errors import HarnessError

pytestmark = pytest.mark.skipif(not hostlock.available(), reason="no fcntl on this platform")


def hold(path: str, kind: str, delay: float, seconds: float, queue) -> None:
    import os

    os.environ[hostlock.ENV] = path
    time.sleep(delay)
    asked = time.monotonic()
    with (hostlock.building() if kind == "build" else hostlock.timing()):
        start = time.monotonic()
        time.sleep(seconds)
        end = time.monotonic()
    queue.put((kind, delay, asked, start, end))


def run(path, plan):
    """Start one process per (kind, delay, seconds); return their (kind, delay) -> (asked, start, end)."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=hold, args=(str(path), kind, delay, seconds, queue)) for kind, delay, seconds in plan]
    for p in procs:
        p.start()
    got = {}
    for _ in procs:
        kind, delay, asked, start, end = queue.get(timeout=30)
        got[(kind, delay)] = (asked, start, end)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return got


def overlap(a, b):
    return min(a[2], b[2]) - max(a[1], b[1])


def test_timed_measurements_run_side_by_side(tmp_path):
    got = run(tmp_path / "host.lock", [("time", 0.0, 0.6), ("time", 0.05, 0.6)])
    a, b = got[("time", 0.0)], got[("time", 0.05)]
    assert overlap(a, b) > 0.4  # two GPUs timed at once


def test_a_build_waits_for_measurements_and_measurements_wait_for_a_build(tmp_path):
    got = run(tmp_path / "host.lock", [("time", 0.0, 0.5), ("build", 0.1, 0.5), ("time", 0.25, 0.3)])
    first, build, late = got[("time", 0.0)], got[("build", 0.1)], got[("time", 0.25)]
    assert overlap(first, build) <= 0 and overlap(late, build) <= 0
    assert build[1] >= first[2] - 0.01  # the build started once the first measurement ended
    # the builder was waiting when the late measurement asked: the late one queued behind it (writer
    # preference), instead of joining the first measurement and keeping the build waiting longer
    assert late[0] < build[1] and late[1] >= build[2] - 0.01


def test_builds_exclude_each_other(tmp_path):
    got = run(tmp_path / "host.lock", [("build", 0.0, 0.3), ("build", 0.05, 0.3)])
    assert overlap(got[("build", 0.0)], got[("build", 0.05)]) <= 0


def test_in_one_process_a_build_inside_a_build_holds_once_and_a_build_inside_a_measurement_is_refused(tmp_path):
    lock = hostlock.HostLock(tmp_path / "host.lock")
    with lock.hold(exclusive=True):
        with lock.hold(exclusive=True):  # a recipe built inside an engine build: no self-deadlock
            pass
    with lock.hold(exclusive=False):
        with pytest.raises(HarnessError, match="a build was started inside a timed measurement"):
            with lock.hold(exclusive=True):
                pass


def test_without_the_variable_nothing_is_locked(monkeypatch):
    monkeypatch.delenv(hostlock.ENV, raising=False)
    assert hostlock.host_lock() is None
    with hostlock.building(), hostlock.timing():
        pass
