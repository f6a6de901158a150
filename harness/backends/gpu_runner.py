"""What every GPU runner shares (ONNX Runtime CUDA and TensorRT alike), on the harness's CUDA module.

A runner owns one CUDA stream, a pair of CUDA events and, per tensor, a device buffer with a pinned host
mirror. Inputs are resident (copied once by ``prepare``) or copied in and out every iteration. ``run`` is
synchronous; ``submit`` queues the work between two events and returns, ``wait`` synchronizes on the end
event and keeps the device time between them. Subclasses say how to stage a batch (allocate and bind the
buffers for its shapes) and how to execute it.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping

import numpy as np

from .. import cuda
from .base import Runner


class GpuRunner(Runner):
    times_gpu = True

    def __init__(self) -> None:
        cuda.set_device(0)
        self._inputs: dict[str, cuda.TensorBuffers] = {}
        self._outputs: dict[str, cuda.TensorBuffers] = {}
        self._resident = True
        self._last_gpu: float | None = None
        made: list[cuda.Stream | cuda.Event] = []
        try:
            self.stream = cuda.Stream()
            made.append(self.stream)
            self._start = cuda.Event()
            made.append(self._start)
            self._end = cuda.Event()
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
        self._execute(sync=True)
        if not self._resident:
            self._download_outputs()
        self.stream.synchronize()

    def submit(self) -> None:
        if not self._resident:
            self._upload_inputs()
        self._start.record(self.stream)
        self._execute(sync=False)
        if not self._resident:
            self._download_outputs()
        self._end.record(self.stream)

    def wait(self) -> None:
        self._end.synchronize()
        self._last_gpu = self._end.seconds_since(self._start)

    def last_gpu_seconds(self) -> float | None:
        return self._last_gpu

    def gpu_times(self, iterations: int) -> list[float]:
        """Device time of ``iterations`` requests, each between CUDA events on this runner's stream."""
        out = []
        for _ in range(iterations):
            self.submit()
            self.wait()
            assert self._last_gpu is not None
            out.append(self._last_gpu)
        return out

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
        for handle in (self._start, self._end, self.stream):
            try:
                handle.close()
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first
