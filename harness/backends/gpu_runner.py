"""What every GPU runner shares (ONNX Runtime CUDA and TensorRT alike), on the harness's CUDA module.

A runner owns one CUDA stream, a completion event and, per tensor, a device buffer with a pinned host
mirror. Inputs are resident (copied once by ``prepare``) or copied in and out every iteration. ``run`` is
synchronous; ``submit`` queues the work and records the completion event, ``wait`` waits on it. Subclasses
say how to stage a batch (allocate and bind the buffers for its shapes) and how to execute it.

How the host waits (``RunnerOptions.sync``, ``--perf-sync``): ``spin``, CUDA's default wait on the stream or
an event, which spins while the process has fewer CUDA contexts than cores (and yields otherwise): the
lowest latency, one core busy; ``block``, an event created with ``cudaEventBlockingSync``: the thread sleeps
until the GPU signals completion, freeing the core at some cost in latency (trtexec's default; its
``--useSpinWait`` is ``spin``). The completion event records no time, which makes it cheaper to record and
wait on; device times come from :meth:`breakdown`, a pass of its own with timing events, never from the
timed loop.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Mapping

import numpy as np

from .. import cuda
from ..breakdown import Breakdown
from ..errors import HarnessError
from .base import Runner

SYNC_MODES = ("spin", "block")


class GpuRunner(Runner):
    times_gpu = True

    def __init__(self, sync: str = "spin") -> None:
        if sync not in SYNC_MODES:
            raise HarnessError(f"sync must be one of {', '.join(SYNC_MODES)}, got {sync!r}")
        cuda.set_device(0)
        self.sync = sync
        self._inputs: dict[str, cuda.TensorBuffers] = {}
        self._outputs: dict[str, cuda.TensorBuffers] = {}
        self._resident = True
        self._marks: list[cuda.Event] = []  # the breakdown's timing events, made on first use
        made: list[cuda.Stream | cuda.Event] = []
        try:
            self.stream = cuda.Stream()
            made.append(self.stream)
            self._done = cuda.Event(timing=False, blocking=sync == "block")
        except BaseException:
            for handle in reversed(made):  # a runner that could not be made holds nothing
                handle.close()
            raise

    @abstractmethod
    def _stage(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Copy a batch into the input buffers (uploaded, stream synchronized), (re)binding on new shapes."""

    @abstractmethod
    def _execute(self, sync: bool) -> None:
        """Queue one inference on the stream; with ``sync`` the backend may return only once it is done."""

    def _upload_inputs(self) -> None:
        for tb in self._inputs.values():
            tb.upload(self.stream)

    def _download_outputs(self) -> None:
        for tb in self._outputs.values():
            tb.download(self.stream)

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._stage(feeds)
        self._execute(sync=True)
        return self.fetch_outputs()

    def fetch_outputs(self) -> dict[str, np.ndarray]:
        self._download_outputs()
        self.stream.synchronize()
        return {name: tb.host.array.copy() for name, tb in self._outputs.items()}

    def prepare(self, feeds: Mapping[str, np.ndarray], *, resident: bool = True) -> None:
        self._stage(feeds)
        self._resident = resident

    def run(self) -> None:
        if not self._resident:
            self._upload_inputs()
        self._execute(sync=False)
        if not self._resident:
            self._download_outputs()
        self._wait_stream()

    def _wait_stream(self) -> None:
        """Wait until the stream's work is done, the way ``sync`` says."""
        if self.sync == "block":
            self._done.record(self.stream)
            self._done.synchronize()
        else:
            self.stream.synchronize()

    def submit(self) -> None:
        if not self._resident:
            self._upload_inputs()
        self._execute(sync=False)
        if not self._resident:
            self._download_outputs()
        self._done.record(self.stream)

    def wait(self) -> None:
        self._done.synchronize()

    def breakdown(self, iterations: int) -> Breakdown | None:
        """trtexec's breakdown of ``iterations`` requests, one at a time (:mod:`harness.breakdown`)."""
        if not self._marks:
            while len(self._marks) < 4:
                self._marks.append(cuda.Event())
        e0, e1, e2, e3 = self._marks
        s = self.stream
        h2d, compute, d2h, enqueue = [], [], [], []
        clock = time.perf_counter
        for _ in range(iterations):
            e0.record(s)
            self._upload_inputs()
            e1.record(s)
            t0 = clock()
            self._execute(sync=False)
            t1 = clock()
            e2.record(s)
            self._download_outputs()
            e3.record(s)
            e3.synchronize()
            h2d.append(e1.seconds_since(e0))
            compute.append(e2.seconds_since(e1))
            d2h.append(e3.seconds_since(e2))
            enqueue.append(t1 - t0)
        return Breakdown.from_lists(h2d, compute, d2h, enqueue)

    def gpu_times(self, iterations: int) -> list[float]:
        """Compute time of ``iterations`` requests between CUDA events (the breakdown's compute part)."""
        b = self.breakdown(iterations)
        return [] if b is None else [float(x) for x in b.compute]

    def _free_buffers(self) -> None:
        for tb in list(self._inputs.values()) + list(self._outputs.values()):
            tb.close()
        self._inputs, self._outputs = {}, {}

    def close(self) -> None:
        """Free the buffers, then the events and the stream (subclasses release their session or context
        first). Every handle is released even when one fails; the first failure is raised afterwards."""
        first: BaseException | None = None
        try:
            self._free_buffers()
        except Exception as exc:
            first = exc
        handles: list[cuda.Event | cuda.Stream] = [*self._marks, self._done, self.stream]
        for handle in handles:
            try:
                handle.close()
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first
