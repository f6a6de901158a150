"""Builds never run while another process on this host is timing: a host-wide readers-writer lock.

When perf cases run on several pytest-xdist workers at once (one per GPU: :mod:`harness.devices`), a worker
that builds something (a recipe's ONNX file, an engine, reference outputs: everything the cache builds)
would load the host's CPUs, memory bandwidth and PCIe bus while another worker times its GPU. So the
controller gives its workers one lock file (``HARNESS_HOST_LOCK``): a timed measurement holds it shared,
a build holds it exclusive. Timed measurements on different GPUs overlap, which is the point; a build waits
until no one is timing, and nobody starts timing while a build runs. A build that is waiting goes first:
new measurements queue behind it at a gate (writer preference), so a steady stream of measurements cannot
starve it.

It is ``flock(2)`` on a file in a local temporary folder: the processes of one session on one host. (Engine
cache locks are another matter: :mod:`harness.sharedfs`.) Without the variable, or without ``fcntl``
(Windows), both context managers do nothing. In one process the lock is reentrant: a build inside a build
holds it once; a build inside a timed measurement is a programming error and says so.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from .errors import HarnessError

ENV = "HARNESS_HOST_LOCK"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def available() -> bool:
    return fcntl is not None


class HostLock:
    """Shared (timing) and exclusive (building) holds on one lock file, with a gate for waiting builders."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.gate = self.path.with_name(self.path.name + ".gate")
        self._mutex = threading.RLock()  # one hold per process at a time; nested holds count depth
        self._depth = 0
        self._exclusive = False
        self._fd: int | None = None

    def _open(self, path: Path) -> int:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)

    @contextlib.contextmanager
    def hold(self, *, exclusive: bool) -> Iterator[None]:
        with self._mutex:
            if self._depth:
                if exclusive and not self._exclusive:
                    raise HarnessError("a build was started inside a timed measurement (harness.hostlock): that "
                                       "would time the build")
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            assert fcntl is not None
            fd = self._open(self.path)
            try:
                gate = self._open(self.gate)
                try:
                    fcntl.flock(gate, fcntl.LOCK_EX)  # a waiting builder holds the gate: newcomers queue here
                    if not exclusive:
                        fcntl.flock(gate, fcntl.LOCK_UN)
                    fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
                finally:
                    os.close(gate)  # closing releases the gate
                self._fd, self._exclusive, self._depth = fd, exclusive, 1
                try:
                    yield
                finally:
                    self._depth, self._fd = 0, None
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


@functools.cache
def _lock(path: str) -> HostLock:
    return HostLock(path)


def host_lock() -> HostLock | None:
    """This session's host lock (from ``HARNESS_HOST_LOCK``), or None when no one else times on this host."""
    path = os.environ.get(ENV)
    return _lock(path) if path and fcntl is not None else None


@contextlib.contextmanager
def building() -> Iterator[None]:
    """Around a build: waits while others time, and keeps them from starting."""
    lock = host_lock()
    if lock is None:
        yield
        return
    with lock.hold(exclusive=True):
        yield


@contextlib.contextmanager
def timing() -> Iterator[None]:
    """Around a timed measurement: waits while someone builds; other measurements run alongside."""
    lock = host_lock()
    if lock is None:
        yield
        return
    with lock.hold(exclusive=False):
        yield
