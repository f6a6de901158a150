"""CUDA from Python through cuda-python (``cuda.bindings.runtime``): the harness's one CUDA module.

Device and pinned host buffers, streams, events, asynchronous copies and graph capture, for every GPU
backend (ONNX Runtime CUDA and TensorRT use this same code). Nothing else in the harness imports CUDA.
Every call's status is checked; a failure raises :class:`CudaError` naming the call and CUDA's message.

It needs cuda-python 12.9.1 or newer (``cuda-bindings`` 12.9.1 / 13.x): ``cuda.bindings`` arrived in
12.6.1, and only from 12.9.1 on do the bindings release the GIL while CUDA works, so that a thread
waiting on its stream or event lets the others run (the thread-pool mode would silently serialize
otherwise); 12.9.1 also deprecated ``int(handle)`` in favour of ``get_cuda_native_handle``. An older
install makes the GPU backends unavailable, saying so.
"""

from __future__ import annotations

import ctypes
import functools
import re
from collections.abc import Callable
from importlib import metadata
from typing import Any

import numpy as np

from .errors import HarnessError

MIN_BINDINGS = (12, 9, 1)


class CudaError(HarnessError):
    """A CUDA runtime call failed."""


@functools.cache
def _rt() -> Any:
    from cuda.bindings import runtime

    return runtime


@functools.cache
def _native_handle() -> Callable[[Any], int]:
    from cuda.bindings.utils import get_cuda_native_handle

    return get_cuda_native_handle


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def bindings_problem() -> str | None:
    """Why the installed cuda-python cannot serve the harness (None when it can)."""
    want = ".".join(map(str, MIN_BINDINGS))
    try:
        import cuda.bindings as bindings
    except ImportError:
        try:
            have = metadata.version("cuda-python")
        except metadata.PackageNotFoundError:
            return f"cuda-python is not installed (pip install 'cuda-python>={want}')"
        return f"cuda-python {have} has no cuda.bindings (added in 12.6.1); the harness needs cuda-python >= {want}"
    version = str(getattr(bindings, "__version__", "0"))
    if _version(version) < MIN_BINDINGS:
        return (f"cuda-bindings {version} holds the GIL while it waits for the GPU (stream and event synchronize), "
                f"which would serialize the thread-pool mode; the harness needs cuda-python >= {want}")
    return None


def unavailable() -> str | None:
    """Why CUDA cannot be used here (None when a device is usable)."""
    problem = bindings_problem()
    if problem:
        return problem
    rt = _rt()
    err, count = rt.cudaGetDeviceCount()
    if err != rt.cudaError_t.cudaSuccess:
        return f"no usable CUDA device ({_message(err)})"
    if count == 0:
        return "no CUDA device"
    return None


def _message(err: Any) -> str:
    rt = _rt()
    e, text = rt.cudaGetErrorString(err)
    return f"{getattr(err, 'name', err)}: {text.decode() if isinstance(text, bytes) else text}"


def check(result: Any, call: str) -> Any:
    """Unpack ``(status, *values)`` from a cuda.bindings call, raising on a failed status."""
    rt = _rt()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != rt.cudaError_t.cudaSuccess:
        raise CudaError(f"{call} failed: {_message(err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def set_device(index: int = 0) -> None:
    check(_rt().cudaSetDevice(index), f"cudaSetDevice({index})")


def runtime_version() -> str:
    v = check(_rt().cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")
    return f"{v // 1000}.{(v % 1000) // 10}"


def device_properties(index: int = 0) -> dict[str, Any]:
    props = check(_rt().cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"name": name.rstrip("\x00"), "compute_capability": f"{props.major}.{props.minor}",
            "memory_gb": round(props.totalGlobalMem / 2**30, 1), "sms": props.multiProcessorCount}


class Stream:
    """A non-blocking CUDA stream (does not synchronize with the legacy default stream)."""

    def __init__(self) -> None:
        rt = _rt()
        self.handle = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")

    @property
    def ptr(self) -> int:
        """The cudaStream_t as an integer (what ONNX Runtime and TensorRT take)."""
        return int(_native_handle()(self.handle))

    def synchronize(self) -> None:
        check(_rt().cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def close(self) -> None:
        if self.handle is not None:
            check(_rt().cudaStreamDestroy(self.handle), "cudaStreamDestroy")
            self.handle = None


class Event:
    """A CUDA event. ``timing``: it can be timed against another (``seconds_since``); an event that only
    marks completion is created without timing, which makes recording and waiting on it cheaper.
    ``blocking``: a thread waiting on it sleeps until the GPU signals it (``cudaEventBlockingSync``) instead
    of spinning or yielding as CUDA's default wait does."""

    def __init__(self, *, timing: bool = True, blocking: bool = False) -> None:
        rt = _rt()
        flags = (0 if timing else rt.cudaEventDisableTiming) | (rt.cudaEventBlockingSync if blocking else 0)
        if flags:
            self.handle = check(rt.cudaEventCreateWithFlags(flags), f"cudaEventCreateWithFlags({flags})")
        else:
            self.handle = check(rt.cudaEventCreate(), "cudaEventCreate")

    def record(self, stream: Stream) -> None:
        check(_rt().cudaEventRecord(self.handle, stream.handle), "cudaEventRecord")

    def synchronize(self) -> None:
        check(_rt().cudaEventSynchronize(self.handle), "cudaEventSynchronize")

    def seconds_since(self, start: Event) -> float:
        """Device time between ``start`` and this event (both recorded and this one completed)."""
        ms = check(_rt().cudaEventElapsedTime(start.handle, self.handle), "cudaEventElapsedTime")
        return float(ms) / 1e3

    def close(self) -> None:
        if self.handle is not None:
            check(_rt().cudaEventDestroy(self.handle), "cudaEventDestroy")
            self.handle = None


class DeviceBuffer:
    """Device memory for one tensor (cudaMalloc)."""

    def __init__(self, nbytes: int):
        self.nbytes = int(nbytes)
        self.ptr = int(check(_rt().cudaMalloc(max(self.nbytes, 1)), f"cudaMalloc({self.nbytes})"))

    def close(self) -> None:
        if self.ptr:
            check(_rt().cudaFree(self.ptr), "cudaFree")
            self.ptr = 0


class PinnedBuffer:
    """Page-locked host memory seen as a numpy array (cudaMallocHost): copies from it run asynchronously."""

    def __init__(self, shape: tuple[int, ...], dtype: Any):
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(d) for d in shape)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self.ptr = int(check(_rt().cudaMallocHost(max(self.nbytes, 1)), f"cudaMallocHost({self.nbytes})"))
        raw = (ctypes.c_ubyte * max(self.nbytes, 1)).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=np.uint8, count=self.nbytes).view(self.dtype).reshape(self.shape)

    def close(self) -> None:
        if self.ptr:
            self.array = np.empty(0)
            check(_rt().cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0


def copy_to_device(dst: DeviceBuffer, src: PinnedBuffer, stream: Stream) -> None:
    rt = _rt()
    check(rt.cudaMemcpyAsync(dst.ptr, src.ptr, src.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.handle),
          "cudaMemcpyAsync(host to device)")


def copy_to_host(dst: PinnedBuffer, src: DeviceBuffer, stream: Stream) -> None:
    rt = _rt()
    check(rt.cudaMemcpyAsync(dst.ptr, src.ptr, dst.nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.handle),
          "cudaMemcpyAsync(device to host)")


def copy_device_to_device(dst: DeviceBuffer, src: DeviceBuffer, stream: Stream, nbytes: int) -> None:
    rt = _rt()
    check(rt.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream.handle),
          "cudaMemcpyAsync(device to device)")


def _abandon_capture(stream: Stream) -> None:
    """End a capture whose work failed to enqueue, as trtexec does: an invalidated capture returns no graph,
    another returns one that must not be used (destroyed here); CUDA's error is then cleared so that the
    stream stays usable. Statuses are not raised: the enqueue's own error is the one that matters."""
    rt = _rt()
    err, graph = rt.cudaStreamEndCapture(stream.handle)
    if err == rt.cudaError_t.cudaSuccess and graph is not None:
        rt.cudaGraphDestroy(graph)
    rt.cudaGetLastError()


class Graph:
    """A CUDA graph captured from the work ``enqueue`` puts on a stream, replayed with one launch.

    When ``enqueue`` fails during the capture, the capture is ended and the enqueue's own exception
    propagates (not the capture's CUDA error, which would hide the library's message)."""

    def __init__(self, stream: Stream, enqueue: Callable[[], None]):
        rt = _rt()
        self._graph = self._exec = None
        check(rt.cudaStreamBeginCapture(stream.handle, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
              "cudaStreamBeginCapture")
        try:
            enqueue()
        except BaseException:
            _abandon_capture(stream)
            raise
        self._graph = check(rt.cudaStreamEndCapture(stream.handle), "cudaStreamEndCapture")
        try:
            self._exec = check(rt.cudaGraphInstantiate(self._graph, 0), "cudaGraphInstantiate")
        except BaseException:
            self.close()
            raise

    def launch(self, stream: Stream) -> None:
        check(_rt().cudaGraphLaunch(self._exec, stream.handle), "cudaGraphLaunch")

    def close(self) -> None:
        rt = _rt()
        if self._exec is not None:
            check(rt.cudaGraphExecDestroy(self._exec), "cudaGraphExecDestroy")
            self._exec = None
        if self._graph is not None:
            check(rt.cudaGraphDestroy(self._graph), "cudaGraphDestroy")
            self._graph = None


class TensorBuffers:
    """A tensor's device buffer plus a pinned host mirror, sized for a shape; what runners bind.

    ``device``: device memory made elsewhere (anything with ``ptr``, ``nbytes`` and ``close``, e.g. an
    allocation by the inference library itself), at least the tensor's size; by default a :class:`DeviceBuffer`."""

    def __init__(self, shape: tuple[int, ...], dtype: Any, device: Any = None):
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.host = PinnedBuffer(self.shape, self.dtype)
        try:
            self.device = DeviceBuffer(self.host.nbytes) if device is None else device
        except BaseException:
            self.host.close()
            raise
        if self.device.nbytes < self.host.nbytes:
            self.close()
            raise CudaError(f"device memory of {self.device.nbytes} bytes cannot hold a {self.dtype} tensor of "
                            f"shape {list(self.shape)} ({self.host.nbytes} bytes)")

    @property
    def nbytes(self) -> int:
        return self.host.nbytes

    def upload(self, stream: Stream) -> None:
        copy_to_device(self.device, self.host, stream)

    def download(self, stream: Stream) -> None:
        copy_to_host(self.host, self.device, stream)

    def close(self) -> None:
        self.host.close()
        self.device.close()
