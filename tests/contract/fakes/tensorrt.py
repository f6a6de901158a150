"""A recording fake of one TensorRT Python module (10.13, 11.1 or TensorRT-RTX 1.7), built per test.

``make_module(world)`` assembles a module with the flavor's classes, enums and functions: what a flavor
lacks is absent, not stubbed (no ``BuilderFlag.FP16`` or INT8 calibrators in 11.x and RTX, no
``EXPLICIT_BATCH`` in 11.x, ``ComputeCapability`` and ``is_stream_capturable`` only in RTX), and enum
values are the flavor's own (``STRONGLY_TYPED`` is 1 in 10.x, 0 in 11.x and RTX).
"""

from __future__ import annotations

import types
from typing import Any

from . import trt_build, trt_runtime
from .world import World

# methods TensorRT calls on the harness's subclasses (checked against the real classes' members or docs)
CALLBACKS = {
    "ILogger": ["log"],
    "IProgressMonitor": ["phase_start", "step_complete", "phase_finish"],
    "IOutputAllocator": ["reallocate_output", "reallocate_output_async", "notify_shape"],
    "IInt8EntropyCalibrator2": ["get_batch_size", "get_batch", "read_calibration_cache", "write_calibration_cache"],
    "IInt8MinMaxCalibrator": ["get_batch_size", "get_batch", "read_calibration_cache", "write_calibration_cache"],
}

DATA_TYPES = {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4, "UINT8": 5, "BF16": 7, "INT64": 8}
SEVERITY = {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4}
RTX_TARGETS = {"NONE": 0, "CURRENT": 1, "SM75": 75, "SM80": 80, "SM86": 86, "SM89": 89, "SM120": 120, "SM121": 121}


class EnumValue:
    def __init__(self, enum: str, name: str, value: int):
        self._enum, self.name, self.value = enum, name, value

    def __int__(self) -> int:
        return self.value

    __index__ = __int__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EnumValue) and (other._enum, other.value) == (self._enum, self.value)

    def __hash__(self) -> int:
        return hash((self._enum, self.value))

    def __repr__(self) -> str:
        return f"<{self._enum}.{self.name}: {self.value}>"


def enum(name: str, members: dict[str, int]) -> type:
    cls = type(name, (), {k: EnumValue(name, k, v) for k, v in members.items()})
    cls.__members__ = {k: getattr(cls, k) for k in members}
    return cls


class _Interface:
    """Base of the classes the harness subclasses: they only need their ``__init__``."""

    def __init__(self) -> None:
        pass


def _copy(cls: type, world: World, mod: Any, drop: set[str]) -> type:
    """``cls`` for this world and flavor: bound to both, without the members the flavor lacks."""
    body = {k: v for k, v in vars(cls).items() if k not in drop and k not in ("__dict__", "__weakref__")}
    return type(cls.__name__, (), {**body, "_world": world, "_mod": mod})


def make_module(world: World) -> types.ModuleType:
    flavor = world.flavor
    mod = types.ModuleType(flavor.module)
    mod.__version__ = flavor.version
    flags = {"TF32": 6}
    if flavor.weak_typing:
        flags.update(FP16=0, INT8=1)
    mod.BuilderFlag = enum("BuilderFlag", flags)
    mod.NetworkDefinitionCreationFlag = enum("NetworkDefinitionCreationFlag", flavor.network_flags)
    mod.MemoryPoolType = enum("MemoryPoolType", {"WORKSPACE": 0})
    mod.DataType = enum("DataType", DATA_TYPES)
    mod.TensorIOMode = enum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    mod.TensorLocation = enum("TensorLocation", {"DEVICE": 0, "HOST": 1})
    severity = enum("Severity", SEVERITY)
    mod.ILogger = type("ILogger", (_Interface,), {"Severity": severity, **{k: getattr(severity, k) for k in SEVERITY},
                                                  "log": lambda self, severity, msg: None})
    for name in ("IProgressMonitor", "IOutputAllocator"):
        setattr(mod, name, type(name, (_Interface,), {}))
    if flavor.weak_typing:
        for name in ("IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator"):
            setattr(mod, name, type(name, (_Interface,), {}))
    if flavor.rtx:
        mod.ComputeCapability = enum("ComputeCapability", RTX_TARGETS)
    drop = set()
    if not flavor.weak_typing:
        drop |= {"int8_calibrator", "set_calibration_profile"}
    if not flavor.rtx:
        drop |= {"num_compute_capabilities", "set_compute_capability", "is_stream_capturable"}
    for cls in (trt_build.Builder, trt_build.INetworkDefinition, trt_build.ITensor, trt_build.OnnxParser,
                trt_build.ParserError, trt_build.IBuilderConfig, trt_build.IOptimizationProfile,
                trt_build.ITimingCache, trt_runtime.Runtime, trt_runtime.ICudaEngine,
                trt_runtime.IExecutionContext):
        setattr(mod, cls.__name__, _copy(cls, world, mod, drop))
    mod.Dims = trt_build.Dims
    mod.IHostMemory = trt_build.IHostMemory
    mod.get_nv_onnx_parser_version = lambda: int(flavor.version.split(".")[0]) * 10000
    world.module = mod
    return mod
