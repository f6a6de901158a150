"""Outputs whose shape only the run tells (data-dependent shapes: NonZero, NMS...).

Their shape is still unknown (-1) once every input shape is set, so no buffer can be bound in advance.
TensorRT asks an ``IOutputAllocator`` for device memory during ``execute_async_v3`` and tells it the
shape (``reallocate_output_async``, which TensorRT 10 prefers to the deprecated ``reallocate_output``,
and ``notify_shape``), as in Polygraphy's runner and trtexec. The allocator keeps
one device buffer per output, grown when a run needs more, and the runner copies what the run wrote to a
pinned host buffer of the notified shape. TensorRT swallows exceptions raised in these callbacks (its
trampolines are ``noexcept``): the allocator records them and the runner raises them after the run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import cuda
from ...errors import HarnessError
from .tensors import dims


def make_output_allocator(mod: Any, what: str) -> Any:
    class OutputAllocator(mod.IOutputAllocator):
        def __init__(self) -> None:
            mod.IOutputAllocator.__init__(self)
            self.buffers: dict[str, cuda.DeviceBuffer] = {}
            self.shapes: dict[str, tuple[int, ...]] = {}
            self.errors: list[str] = []

        def reallocate_output(self, tensor_name: str, memory: int, size: int, alignment: int) -> int:
            try:
                buf = self.buffers.get(tensor_name)
                if buf is None or buf.nbytes < size:
                    if buf is not None:
                        del self.buffers[tensor_name]
                        buf.close()
                    buf = self.buffers[tensor_name] = cuda.DeviceBuffer(size)
                if alignment and buf.ptr % int(alignment):
                    raise HarnessError(f"device memory at {buf.ptr:#x} is not {alignment}-byte aligned")
                return int(buf.ptr)
            except Exception as exc:  # TensorRT would swallow it: keep it for the runner to raise
                self.errors.append(f"output {tensor_name!r}: allocating {size} bytes failed: {exc}")
                return 0

        def reallocate_output_async(self, tensor_name: str, memory: int, size: int, alignment: int,
                                    stream: int) -> int:
            # the memory is the runner's, allocated outside the stream's work; no stream-ordered allocation
            return self.reallocate_output(tensor_name, memory, size, alignment)

        def notify_shape(self, tensor_name: str, shape: Any) -> None:
            self.shapes[tensor_name] = dims(shape)

        def take_errors(self) -> list[str]:
            errors, self.errors = self.errors, []
            return errors

        def check(self, names: list[str]) -> None:
            """After a run: every data-dependent output was given a shape (and memory, unless it is empty),
            without error."""
            problems = self.take_errors()
            for n in names:
                if n not in self.shapes:
                    problems.append(f"output {n!r}: TensorRT notified no shape")
                elif n not in self.buffers and np.prod(self.shapes[n], dtype=np.int64) > 0:
                    problems.append(f"output {n!r}: TensorRT allocated no memory for shape {list(self.shapes[n])}")
            if problems:
                raise HarnessError(f"{what}: data-dependent output(s) failed: " + "; ".join(problems))

        def close(self) -> None:
            buffers, self.buffers = self.buffers, {}
            for buf in buffers.values():
                buf.close()

    return OutputAllocator()


class HostMirror:
    """A pinned host buffer for a data-dependent output, re-made when the notified shape changes."""

    def __init__(self, dtype: Any):
        self.dtype = np.dtype(dtype)
        self.host: cuda.PinnedBuffer | None = None

    def download(self, src: cuda.DeviceBuffer | None, shape: tuple[int, ...], stream: cuda.Stream) -> None:
        if self.host is None or self.host.shape != tuple(shape):
            self.close()
            self.host = cuda.PinnedBuffer(shape, self.dtype)
        if self.host.nbytes == 0:
            return  # an empty output (NonZero found nothing): nothing to copy, maybe nothing allocated
        if src is None or self.host.nbytes > src.nbytes:
            raise HarnessError(f"output of shape {list(shape)} needs {self.host.nbytes} bytes, TensorRT allocated "
                               f"{0 if src is None else src.nbytes}")
        cuda.copy_to_host(self.host, src, stream)

    def array(self) -> np.ndarray:
        assert self.host is not None, "no run has produced this output yet"
        return self.host.array

    def close(self) -> None:
        if self.host is not None:
            self.host.close()
            self.host = None
