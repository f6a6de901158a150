"""One execution context on one CUDA stream, on the GPU machinery ONNX Runtime CUDA shares (GpuRunner).

The calls follow trtexec and Polygraphy's runner, in this order: the context's optimization profile
(once, on the runner's stream); then, for each new set of input shapes, every input's shape (and the
values of host-resident shape tensors, which decide output shapes); only then the output shapes; then
every tensor's address (or, for an output whose shape only the run tells, an output allocator); then
``execute_async_v3``. A CUDA graph, when asked for, is captured after a first plain enqueue (which applies
TensorRT's deferred updates) and captured again only when the input shapes change.

A capture TensorRT cannot take (data-dependent shapes, on-device control flow, TensorRT-RTX engines
without user-allocated memory) makes the graph mode skip with TensorRT's message; trtexec warns and runs
without the graph instead, but a mode is never silently replaced here.

Every failure releases what the runner holds, context first (TensorRT may still reference the stream and
buffers it was given), then buffers, events and stream, then its profile slot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ... import cuda
from ...errors import BuildError, HarnessError, ModeUnsupported
from ..base import RunnerOptions
from ..gpu_runner import GpuRunner
from .outputs import HostMirror, make_output_allocator
from .tensors import data_dependent, dims, numpy_dtype

if TYPE_CHECKING:  # the published stubs (tensorrt_stubs) type every call made on a TensorRT object
    import tensorrt as trt

    from .engine import TrtEngine


class TrtRunner(GpuRunner):
    def __init__(self, engine: TrtEngine, options: RunnerOptions):
        self.engine = engine
        self.options = options
        self.context: trt.IExecutionContext | None = None
        self.profile_index: int | None = None
        self._graph: cuda.Graph | None = None
        self._allocator: Any = None
        self._host_tensors: dict[str, cuda.PinnedBuffer] = {}  # host-resident I/O (shape tensors)
        self._mirrors: dict[str, HostMirror] = {}  # data-dependent outputs' host copies
        self._dds: list[str] = []  # outputs with data-dependent shapes, for the bound input shapes
        self._bound: tuple[Any, ...] | None = None
        self._dtypes: dict[str, np.dtype] = {}
        self._on_host: set[str] = set()  # tensors TensorRT reads or writes in host memory
        trt_engine = engine.deserialized()
        self._mod = engine.backend.module()
        super().__init__(options.sync)  # stream and completion event
        try:
            self._open(trt_engine)
        except BaseException:
            self.close()
            raise

    @property
    def _what(self) -> str:
        return f"{self.engine.backend.name} {self.engine.entry.label}"

    def _failure(self, what: str) -> str:
        return self.engine.backend.failure(what)

    def _open(self, trt_engine: trt.ICudaEngine) -> None:
        mod = self._mod
        self.profile_index = self.engine.slots.acquire()
        context: trt.IExecutionContext | None = trt_engine.create_execution_context()
        if context is None:
            raise BuildError(self._failure(f"creating an execution context for {self.engine.path}"))
        self.context = context
        try:  # the binding raises when TensorRT refuses; it never returns False
            ok = context.set_optimization_profile_async(self.profile_index, self.stream.ptr)
        except Exception as exc:
            raise HarnessError(self._failure(f"setting optimization profile {self.profile_index} of "
                                             f"{self.engine.path} ({exc})")) from None
        if ok is False:
            raise HarnessError(self._failure(f"setting optimization profile {self.profile_index} of {self.engine.path}"))
        self.stream.synchronize()
        names = [trt_engine.get_tensor_name(i) for i in range(trt_engine.num_io_tensors)]
        is_input = {n: trt_engine.get_tensor_mode(n) == mod.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self._dtypes = {n: numpy_dtype(trt_engine.get_tensor_dtype(n), n) for n in names}
        # shape tensors live in host memory: TensorRT reads their values to work out shapes
        self._on_host = {n for n in names if trt_engine.get_tensor_location(n) == mod.TensorLocation.HOST
                         or (is_input[n] and trt_engine.is_shape_inference_io(n))}

    def _ctx(self) -> trt.IExecutionContext:
        if self.context is None:
            raise HarnessError(f"{self._what}: the runner is closed")
        return self.context

    def _address(self, name: str, ptr: int) -> None:
        if not self._ctx().set_tensor_address(name, ptr):
            raise HarnessError(self._failure(f"set_tensor_address({name!r})"))

    # -- binding: shapes, then output shapes, then addresses

    def _stage(self, feeds: Mapping[str, np.ndarray]) -> None:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise HarnessError(f"{self._what}: feeds lack input(s) {', '.join(missing)}")
        arrays = {}
        for name in self.input_names:
            arr = np.asarray(feeds[name])
            if arr.dtype != self._dtypes[name]:
                raise HarnessError(f"{self._what}: input {name!r} is {arr.dtype}, the engine wants {self._dtypes[name]}")
            arrays[name] = arr
        key: tuple[Any, ...] = (tuple((n, arrays[n].shape) for n in self.input_names)
               + tuple((n, arrays[n].tobytes()) for n in self.input_names if n in self._on_host))
        changed = key != self._bound
        if changed:
            self._unbind()
            self._bind(arrays)
            self._bound = key
        for name, tb in self._inputs.items():
            tb.host.array[...] = arrays[name]
        self._upload_inputs()
        self.stream.synchronize()
        if self.options.cuda_graph and (self._graph is None or changed):
            self._capture()

    def _bind(self, arrays: dict[str, np.ndarray]) -> None:
        mod, context = self._mod, self._ctx()
        for name in self.input_names:
            if not context.set_input_shape(name, mod.Dims(arrays[name].shape)):
                raise HarnessError(f"{self._what}: input {name!r}: shape {list(arrays[name].shape)} is outside the "
                                   f"engine's profile {self.engine.profile.name!r}")
        for name in self.input_names:
            if name in self._on_host:  # a shape tensor's values: part of the input shapes
                buf = self._host_tensors[name] = cuda.PinnedBuffer(arrays[name].shape, self._dtypes[name])
                buf.array[...] = arrays[name]
                self._address(name, buf.ptr)
        shapes = {name: dims(context.get_tensor_shape(name)) for name in self.output_names}
        self._dds = [n for n in self.output_names if data_dependent(shapes[n])]
        for name in self.input_names:
            if name not in self._on_host:
                tb = self._inputs[name] = cuda.TensorBuffers(arrays[name].shape, self._dtypes[name])
                self._address(name, tb.device.ptr)
        for name in self.output_names:
            if name in self._dds:
                if self._allocator is None:
                    self._allocator = make_output_allocator(mod, self._what)
                if not context.set_output_allocator(name, self._allocator):
                    raise HarnessError(self._failure(f"set_output_allocator({name!r})"))
                self._mirrors[name] = HostMirror(self._dtypes[name])
            elif name in self._on_host:
                host = self._host_tensors[name] = cuda.PinnedBuffer(shapes[name], self._dtypes[name])
                self._address(name, host.ptr)
            else:
                tb = self._outputs[name] = cuda.TensorBuffers(shapes[name], self._dtypes[name])
                self._address(name, tb.device.ptr)

    def _unbind(self) -> None:
        self._bound = None
        self._free_buffers()

    def _free_buffers(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None
        host, self._host_tensors = self._host_tensors, {}
        mirrors, self._mirrors = self._mirrors, {}
        for buf in host.values():
            buf.close()
        for mirror in mirrors.values():
            mirror.close()
        self._dds = []
        super()._free_buffers()

    # -- running

    def _enqueue(self) -> None:
        if not self._ctx().execute_async_v3(self.stream.ptr):
            message = self._failure("execute_async_v3")
            if self._allocator is not None:  # what the output allocator could not do, TensorRT never says
                message += "".join(f"\n  {e}" for e in self._allocator.take_errors())
            raise HarnessError(message)
        if self._dds:
            self._allocator.check(self._dds)

    def _capture(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None
        if self._dds:
            raise ModeUnsupported(f"{self._what}: output(s) {', '.join(self._dds)} have data-dependent shapes: "
                                  "TensorRT allocates them during every run, which a CUDA graph cannot capture")
        context = self._ctx()
        capturable = getattr(context, "is_stream_capturable", None)  # TensorRT-RTX only
        if capturable is not None and not capturable(self.stream.ptr):
            raise ModeUnsupported(f"{self._what}: TensorRT-RTX says the execution context cannot be captured into a "
                                  "CUDA graph on this stream (is_stream_capturable is False)")
        self._enqueue()  # TensorRT applies deferred updates on a first enqueue, outside the capture
        self.stream.synchronize()
        logger = self.engine.backend.logger()
        logger.errors.clear()
        try:
            self._graph = cuda.Graph(self.stream, self._enqueue)
        except Exception as exc:
            detail = str(exc)
            rest = [e for e in logger.errors if e not in detail]  # TensorRT's words, when a CUDA error came first
            logger.errors.clear()
            if rest:
                detail += "\n" + "\n".join(f"  {e}" for e in rest)
            raise ModeUnsupported(f"{self._what}: CUDA graph capture failed, so the CUDA-graph case is skipped "
                                  f"(trtexec would run without the graph): {detail}") from None

    def _execute(self, sync: bool) -> None:
        # enqueue only: GpuRunner synchronizes where a run must be synchronous
        if self._graph is not None:
            self._graph.launch(self.stream)
        else:
            self._enqueue()

    def _download_outputs(self) -> None:
        super()._download_outputs()
        for name, mirror in self._mirrors.items():
            mirror.download(self._allocator.buffers.get(name), self._allocator.shapes[name], self.stream)

    def fetch_outputs(self) -> dict[str, np.ndarray]:
        self._download_outputs()
        self.stream.synchronize()
        out = {}
        for name in self.output_names:
            if name in self._outputs:
                out[name] = self._outputs[name].host.array.copy()
            elif name in self._host_tensors:
                out[name] = self._host_tensors[name].array.copy()
            else:
                out[name] = self._mirrors[name].array().copy()
        return out

    def describe(self) -> dict[str, Any]:
        return {"stream": "own", "profile": self.profile_index, "profiles": self.engine.slots.count,
                "profile_shared": self.engine.slots.shared, "tf32": bool(self.engine.options["tf32"]),
                "cuda_graph": self.options.cuda_graph, "data_dependent_outputs": list(self._dds), "sync": self.sync}

    def close(self) -> None:
        try:
            if self.context is not None:
                try:  # its queued work ends before the context goes
                    if self.stream.handle is not None:
                        self.stream.synchronize()
                finally:
                    if self._graph is not None:
                        self._graph.close()
                        self._graph = None
                    self.context = None  # destroys the context (the runner holds its only reference)
            if self._allocator is not None:
                self._allocator.close()
                self._allocator = None
            super().close()  # buffers, events, stream
        finally:
            if self.profile_index is not None:  # also when the context could not be made
                self.engine.slots.release(self.profile_index)
                self.profile_index = None
