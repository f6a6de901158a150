"""A recording fake of the harness's CUDA module (harness/cuda.py), installed in its place.

Device memory is host memory here (numpy arrays at real addresses), so what the fake TensorRT engine
"computes" through the pointers it was given can be checked; copies happen at once. Every stream, event,
buffer and graph is tracked until closed (``live``), streams know whether they are capturing, and a graph
replays the work its capture recorded. Its contract is the real module's: a graph whose enqueue fails
ends the capture and lets the enqueue's exception through.
"""

from __future__ import annotations

import ctypes
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np

from harness import cuda as real
from harness.cuda import CudaError

from .world import World

# the names installed over harness.cuda's (checked against its real names by test_api_names)
FAKED = ("unavailable", "set_device", "device_properties", "runtime_version", "Stream", "Event", "DeviceBuffer",
         "PinnedBuffer", "TensorBuffers", "Graph", "copy_to_device", "copy_to_host", "copy_device_to_device")


class FakeCuda:
    def __init__(self, world: World):
        self.world = world
        self.live: dict[str, set[int]] = {k: set() for k in ("Stream", "Event", "DeviceBuffer", "PinnedBuffer",
                                                              "Graph")}
        self.streams: dict[int, Any] = {}  # by cudaStream_t value, for the fake TensorRT
        self.memory: dict[int, str] = {}  # live allocations by address: "device" or "host"
        ids = itertools.count(1)
        fake = self

        def made(kind: str) -> int:
            if world.fail_point(f"cuda.{kind}"):
                raise CudaError(f"{kind} creation failed: cudaErrorMemoryAllocation (injected)")
            handle = next(ids)
            fake.live[kind].add(handle)
            return handle

        def gone(kind: str, handle: int) -> None:
            fake.live[kind].discard(handle)
            world.log(f"cuda.{kind}.close", handle)

        class Stream:
            def __init__(self) -> None:
                self.handle: int | None = made("Stream")
                self.capturing: list[Callable[[], None]] | None = None
                self._ptr = 0x5000 + self.handle
                fake.streams[self._ptr] = self
                world.log("cuda.Stream", self.handle)

            @property
            def ptr(self) -> int:
                return self._ptr

            def synchronize(self) -> None:
                if self.handle is None:
                    raise CudaError("cudaStreamSynchronize on a destroyed stream")
                world.log("cuda.Stream.synchronize", self.handle)

            def close(self) -> None:
                if self.handle is not None:
                    gone("Stream", self.handle)
                    self.handle = None

        class Event:
            def __init__(self, *, timing: bool = True, blocking: bool = False) -> None:
                self.handle: int | None = made("Event")
                self.timing, self.blocking = timing, blocking
                world.log("cuda.Event", self.handle, timing, blocking)

            def record(self, stream: Stream) -> None:
                world.log("cuda.Event.record", self.handle, stream.handle)

            def synchronize(self) -> None:
                world.log("cuda.Event.synchronize", self.handle)

            def seconds_since(self, start: Event) -> float:
                if not (self.timing and start.timing):
                    raise CudaError("cudaEventElapsedTime: cudaErrorInvalidResourceHandle (an event without timing)")
                return 1e-3

            def close(self) -> None:
                if self.handle is not None:
                    gone("Event", self.handle)
                    self.handle = None

        class DeviceBuffer:
            def __init__(self, nbytes: int):
                self.nbytes = int(nbytes)
                self._id = made("DeviceBuffer")
                self._mem = np.zeros(max(self.nbytes, 1) + 256, np.uint8)
                base = int(self._mem.ctypes.data)
                self.ptr = base + (-base % 256)  # cudaMalloc's alignment
                fake.memory[self.ptr] = "device"

            def close(self) -> None:
                if self.ptr:
                    gone("DeviceBuffer", self._id)
                    fake.memory.pop(self.ptr, None)
                    self.ptr = 0

        class PinnedBuffer:
            def __init__(self, shape: tuple[int, ...], dtype: Any):
                self.dtype = np.dtype(dtype)
                self.shape = tuple(int(d) for d in shape)
                self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
                self._id = made("PinnedBuffer")
                self._mem = np.zeros(max(self.nbytes, 1), np.uint8)
                self.ptr = int(self._mem.ctypes.data)
                fake.memory[self.ptr] = "host"
                self.array = self._mem[:self.nbytes].view(self.dtype).reshape(self.shape)

            def close(self) -> None:
                if self.ptr:
                    gone("PinnedBuffer", self._id)
                    fake.memory.pop(self.ptr, None)
                    self.ptr = 0
                    self.array = np.empty(0)

        def copy(dst: int, src: int, nbytes: int, what: str, stream: Stream) -> None:
            world.log(f"cuda.{what}", stream.handle, nbytes)
            ctypes.memmove(dst, src, nbytes)

        def copy_to_device(dst: DeviceBuffer, src: PinnedBuffer, stream: Stream) -> None:
            copy(dst.ptr, src.ptr, src.nbytes, "copy_to_device", stream)

        def copy_to_host(dst: PinnedBuffer, src: DeviceBuffer, stream: Stream) -> None:
            copy(dst.ptr, src.ptr, dst.nbytes, "copy_to_host", stream)

        def copy_device_to_device(dst: DeviceBuffer, src: DeviceBuffer, stream: Stream, nbytes: int) -> None:
            copy(dst.ptr, src.ptr, nbytes, "copy_device_to_device", stream)

        class TensorBuffers:
            def __init__(self, shape: tuple[int, ...], dtype: Any):
                self.shape = tuple(int(d) for d in shape)
                self.dtype = np.dtype(dtype)
                self.host = PinnedBuffer(self.shape, self.dtype)
                try:
                    self.device = DeviceBuffer(self.host.nbytes)
                except BaseException:
                    self.host.close()
                    raise

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

        class Graph:
            def __init__(self, stream: Stream, enqueue: Callable[[], None]):
                world.log("cuda.Graph.begin_capture", stream.handle)
                stream.capturing = []
                try:
                    enqueue()
                except BaseException:
                    stream.capturing = None
                    world.log("cuda.Graph.abandon_capture", stream.handle)
                    raise
                self._work, stream.capturing = stream.capturing, None
                self._id: int | None = made("Graph")
                world.log("cuda.Graph.end_capture", stream.handle, len(self._work))

            def launch(self, stream: Stream) -> None:
                world.log("cuda.Graph.launch", stream.handle)
                for work in self._work:
                    work()

            def close(self) -> None:
                if self._id is not None:
                    gone("Graph", self._id)
                    self._id = None

        def unavailable() -> str | None:
            return None if world.gpu else "no CUDA device (fake)"

        def set_device(index: int = 0) -> None:
            world.log("cuda.set_device", index)

        def device_properties(index: int = 0) -> dict[str, Any]:
            return {"name": world.gpu_name, "compute_capability": world.compute_capability, "memory_gb": 24.0,
                    "sms": 128}

        def runtime_version() -> str:
            return "13.0"

        for name, obj in dict(Stream=Stream, Event=Event, DeviceBuffer=DeviceBuffer, PinnedBuffer=PinnedBuffer,
                              TensorBuffers=TensorBuffers, Graph=Graph, copy_to_device=copy_to_device,
                              copy_to_host=copy_to_host, copy_device_to_device=copy_device_to_device,
                              unavailable=unavailable, set_device=set_device, device_properties=device_properties,
                              runtime_version=runtime_version).items():
            setattr(self, name, obj)

    def install(self, monkeypatch: Any) -> None:
        for name in FAKED:
            monkeypatch.setattr(real, name, getattr(self, name))

    def leaks(self) -> dict[str, int]:
        """Handles made and never closed, by kind."""
        return {k: len(v) for k, v in self.live.items() if v}
