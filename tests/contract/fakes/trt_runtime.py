"""The fake TensorRT's runtime side: Runtime, engine, execution context.

The context enforces what TensorRT requires of its caller: a profile before shapes, every input shape
(and a shape tensor's values, read from the host address it was given) before output shapes are known,
an address or output allocator for every tensor before ``execute_async_v3``; ``set_optimization_profile_async``
raises when refused, as the binding does. It "computes" through the device pointers it was given (each
output is twice the first input, flattened to the output's size) and, for outputs whose shape only the
run tells, asks the output allocator for memory and notifies the shape. On a capturing stream it records
its work for the graph to replay, or fails the capture when the engine cannot be captured.
"""

from __future__ import annotations

import ctypes
import json
from typing import Any

import numpy as np

from .trt_build import PLAN_MAGIC, Dims

NUMPY = {"FLOAT": np.float32, "HALF": np.float16, "INT64": np.int64, "INT32": np.int32, "INT8": np.int8,
         "UINT8": np.uint8, "BOOL": np.bool_}


def _view(ptr: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = (ctypes.c_ubyte * max(n, 1)).from_address(ptr)
    return np.frombuffer(raw, np.uint8, count=n).view(dtype).reshape(shape)


class Runtime:
    def __init__(self, logger: Any):
        self._logger = logger
        self._world.log("Runtime")

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
        data = bytes(serialized_engine)
        self._world.log("Runtime.deserialize_cuda_engine", len(data))
        if self._world.fail_point("deserialize") or not data.startswith(PLAN_MAGIC):
            self._logger.log(self._mod.ILogger.ERROR, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization "
                                                      "assertion failed (fake)")
            return None
        return self._mod.ICudaEngine(json.loads(data[len(PLAN_MAGIC):]), self._logger)


class ICudaEngine:
    def __init__(self, plan: dict[str, Any], logger: Any):
        self._plan, self._logger = plan, logger
        self._io = {t["name"]: t for t in plan["inputs"] + plan["outputs"]}
        self._inputs = [t["name"] for t in plan["inputs"]]
        self._names = self._inputs + [t["name"] for t in plan["outputs"]]

    @property
    def num_io_tensors(self) -> int:
        return len(self._names)

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._plan["profiles"])

    def get_tensor_name(self, index: int) -> str:
        return self._names[index]

    def get_tensor_mode(self, name: str) -> Any:
        modes = self._mod.TensorIOMode
        return modes.INPUT if name in self._inputs else modes.OUTPUT

    def get_tensor_dtype(self, name: str) -> Any:
        return getattr(self._mod.DataType, self._io[name]["dtype"])

    def get_tensor_location(self, name: str) -> Any:
        where = self._mod.TensorLocation
        return where.HOST if self._io[name].get("shape_tensor") else where.DEVICE

    def is_shape_inference_io(self, name: str) -> bool:
        return bool(self._io[name].get("shape_tensor"))

    def create_execution_context(self) -> IExecutionContext | None:
        self._world.log("ICudaEngine.create_execution_context")
        if self._world.fail_point("create_execution_context"):
            self._logger.log(self._mod.ILogger.ERROR, "out of device memory (injected)")
            return None
        return self._mod.IExecutionContext(self)


class IExecutionContext:
    def __init__(self, engine: ICudaEngine):
        self._engine = engine
        self._profile: int | None = None
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._addresses: dict[str, int] = {}
        self._allocators: dict[str, Any] = {}
        self._world.log("IExecutionContext")

    def __del__(self) -> None:
        self._world.log("IExecutionContext.__del__")

    def _error(self, message: str) -> None:
        self._engine._logger.log(self._mod.ILogger.ERROR, message)

    def set_optimization_profile_async(self, profile_index: int, stream_handle: int) -> bool:
        self._world.log("IExecutionContext.set_optimization_profile_async", profile_index, stream_handle)
        if self._world.fail_point("set_optimization_profile_async") or \
                profile_index >= self._engine.num_optimization_profiles:
            self._error(f"setOptimizationProfileAsync: profile index {profile_index} refused")
            raise RuntimeError("Error in set optimization profile async.")  # what the binding raises
        self._profile = profile_index
        return True

    def set_input_shape(self, name: str, shape: Any) -> bool:
        shape = tuple(int(d) for d in shape)
        self._world.log("IExecutionContext.set_input_shape", name, shape)
        if self._profile is None:
            self._error("set_input_shape before an optimization profile was set")
            return False
        lo, _opt, hi = self._engine._plan["profiles"][self._profile].get(name, [shape, shape, shape])
        if len(shape) != len(lo) or any(not a <= s <= b for a, s, b in zip(lo, shape, hi)):
            self._error(f"setInputShape: {name} {list(shape)} is outside the profile's {lo}..{hi}")
            return False
        self._shapes[name] = shape
        return True

    def _input_shape_known(self, name: str) -> bool:
        """A shape, and for a shape tensor its values, which TensorRT reads from the host address it was given."""
        if name not in self._shapes:
            return False
        if not self._engine._io[name].get("shape_tensor"):
            return True
        return self._world.cuda.memory.get(self._addresses.get(name, 0)) == "host"

    def get_tensor_shape(self, name: str) -> Dims:
        self._world.log("IExecutionContext.get_tensor_shape", name)
        return self._shape(name)

    def _shape(self, name: str) -> Dims:
        t = self._engine._io[name]
        if name in self._engine._inputs:
            return Dims(self._shapes.get(name, t["shape"]))
        rule = t["rule"]
        if isinstance(rule, dict):  # the values of a shape tensor
            src = rule["values_of"]
            if not self._input_shape_known(src):
                return Dims([-1, -1])
            return Dims(_view(self._addresses[src], self._shapes[src], np.int64).tolist())
        dims = []
        for d in rule:
            if isinstance(d, list):
                known = self._input_shape_known(d[0])
                dims.append(self._shapes[d[0]][d[1]] if known else -1)
            else:
                dims.append(-1 if d == "dds" else int(d))
        return Dims(dims)

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self._world.log("IExecutionContext.set_tensor_address", name)
        if self._world.fail_point("set_tensor_address"):
            self._error(f"setTensorAddress: {name} refused (injected)")
            return False
        self._addresses[name] = int(memory)
        return True

    def set_output_allocator(self, name: str, output_allocator: Any) -> bool:
        self._world.log("IExecutionContext.set_output_allocator", name)
        self._allocators[name] = output_allocator
        return True

    def is_stream_capturable(self, stream: int) -> bool:  # TensorRT-RTX only
        self._world.log("IExecutionContext.is_stream_capturable", stream)
        return self._world.rtx_capturable

    def execute_async_v3(self, stream_handle: int) -> bool:
        world = self._world
        stream = world.cuda.streams[stream_handle]
        world.log("IExecutionContext.execute_async_v3", stream_handle, stream.capturing is not None)
        engine = self._engine
        unset = [n for n in engine._inputs if n not in self._shapes]
        unbound = [n for n in engine._names if n not in self._addresses and n not in self._allocators]
        if self._profile is None or unset or unbound or world.fail_point("execute"):
            self._error(f"enqueueV3: profile {self._profile}, input shapes unset {unset}, tensors unbound {unbound}")
            return False
        for name in engine._inputs:  # TensorRT reads shape tensors' values in host memory
            if engine._io[name].get("shape_tensor") and world.cuda.memory.get(self._addresses[name]) != "host":
                self._error(f"enqueueV3: shape tensor {name} must be given in host memory")
                return False
        if stream.capturing is not None and world.capture_fails:
            self._error("enqueueV3: the engine has data-dependent control flow, which cannot be captured into a "
                        "CUDA graph (operation not permitted when stream is capturing)")
            return False
        work = self._work(stream_handle)
        if stream.capturing is not None:
            stream.capturing.append(work)
            return True
        return work()

    def _work(self, stream_handle: int) -> Any:
        """The kernels of one run, bound to the addresses as they are now (what a graph captures)."""
        engine, addresses, shapes = self._engine, dict(self._addresses), dict(self._shapes)
        first = next((n for n in engine._inputs if not engine._io[n].get("shape_tensor")), None)
        outputs = [(n, self._shape(n)) for n in engine._names if n not in engine._inputs]

        def run() -> bool:
            src = _view(addresses[first], shapes[first], NUMPY[engine._io[first]["dtype"]]).ravel()
            for name, shape in outputs:
                dtype = np.dtype(NUMPY[engine._io[name]["dtype"]])
                if -1 in shape:  # data-dependent: the allocator gives memory once the size is known
                    shape = tuple(self._world.dds_rows if d == -1 else d for d in shape)
                    nbytes = int(np.prod(shape)) * dtype.itemsize
                    allocator = self._allocators[name]
                    if not nbytes:  # nothing to write: whether TensorRT asks for memory then is not promised
                        allocator.notify_shape(name, Dims(shape))
                        continue
                    # TensorRT's trampoline calls reallocate_output_async where Python overrides it, else the
                    # deprecated reallocate_output
                    if "reallocate_output_async" in dir(type(allocator)):
                        ptr = allocator.reallocate_output_async(name, 0, nbytes, 256, stream_handle)
                    else:
                        ptr = allocator.reallocate_output(name, 0, nbytes, 256)
                    if not ptr:
                        self._error(f"output allocator gave no memory for {name}")
                        return False
                    allocator.notify_shape(name, Dims(shape))
                    _view(ptr, shape, dtype)[...] = np.arange(int(np.prod(shape))).reshape(shape).astype(dtype)
                    continue
                out = _view(addresses[name], tuple(shape), dtype).reshape(-1)
                out[...] = (2 * np.resize(src, out.size)).astype(dtype)
            return True

        return run
