"""The fake TensorRT's build side: Builder, network, ONNX parser, builder config, profiles, timing cache.

The parser reads the real ONNX file (inputs, outputs, which inputs are shape tensors, which output dims
only the run tells); the builder checks what TensorRT checks before it builds (a profile for every dynamic
input, calibration batches for INT8) and writes a "plan" the fake runtime reads back. Class and member
names are the real API's: test_api_names checks them against the stubs, the 11.1 sources and the RTX
bindings. Internal state is in underscored attributes, which those checks skip.
"""

from __future__ import annotations

import json
from typing import Any

import onnx

PLAN_MAGIC = b"FAKEPLAN\n"
ONNX_TYPES = {1: "FLOAT", 10: "HALF", 16: "BF16", 7: "INT64", 6: "INT32", 3: "INT8", 2: "UINT8", 9: "BOOL"}
SUPPORTED_OPS = {"Relu", "Identity", "Mul", "Add", "MatMul", "NonZero", "Reshape", "Transpose", "Cast"}


class IHostMemory(bytes):
    """Serialized bytes (the real one exposes the buffer protocol)."""


class Dims(tuple):
    def __new__(cls, shape: Any = ()) -> Dims:
        return super().__new__(cls, (int(d) for d in shape))


class ITensor:
    name = ""
    shape: Any = None
    is_shape_tensor = False

    def __init__(self, name: str, shape: tuple[int, ...], is_shape_tensor: bool = False):
        self.name = name
        self.shape = Dims(shape)
        self.is_shape_tensor = is_shape_tensor


class INetworkDefinition:
    def __init__(self, flags: int):
        self._flags = flags
        self._inputs: list[ITensor] = []
        self._io: dict[str, Any] = {}
        self._layers = 0

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_layers(self) -> int:
        return self._layers

    def get_input(self, index: int) -> ITensor:
        return self._inputs[index]


class ParserError:
    def __init__(self, index: int, node: Any):
        self._index, self._node = index, node

    def node(self) -> int:
        return self._index

    def node_name(self) -> str:
        return str(self._node.name)

    def node_operator(self) -> str:
        return str(self._node.op_type)

    def desc(self) -> str:
        return f"No importer registered for op: {self._node.op_type}"

    def code(self) -> Any:
        return "UNSUPPORTED_NODE"


def describe_model(model: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Inputs and outputs of an ONNX model as the fake engine serves them."""
    inits = {i.name for i in model.graph.initializer}
    shape_inputs = {n.input[1] for n in model.graph.node if n.op_type == "Reshape"}
    reshaped = {n.output[0]: n.input[1] for n in model.graph.node if n.op_type == "Reshape"}
    inputs, params = [], {}
    for v in model.graph.input:
        if v.name in inits:
            continue
        dims = []
        for axis, d in enumerate(v.type.tensor_type.shape.dim):
            dims.append(d.dim_value if d.HasField("dim_value") else -1)
            if d.HasField("dim_param"):
                params.setdefault(d.dim_param, [v.name, axis])
        inputs.append({"name": v.name, "dtype": ONNX_TYPES[v.type.tensor_type.elem_type], "shape": dims,
                       "shape_tensor": v.name in shape_inputs})
    outputs = []
    for v in model.graph.output:
        rule: Any
        if v.name in reshaped:
            rule = {"values_of": reshaped[v.name]}
        else:
            rule = [d.dim_value if d.HasField("dim_value") else params.get(d.dim_param, "dds")
                    for d in v.type.tensor_type.shape.dim]
        outputs.append({"name": v.name, "dtype": ONNX_TYPES[v.type.tensor_type.elem_type], "rule": rule})
    return inputs, outputs


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: Any):
        self._network, self._logger = network, logger
        self._errors: list[ParserError] = []
        self._world.log("OnnxParser", network._flags)

    def _load(self, model: Any) -> bool:
        self._errors = [ParserError(i, n) for i, n in enumerate(model.graph.node) if n.op_type not in SUPPORTED_OPS]
        if self._errors:
            return False
        inputs, outputs = describe_model(model)
        self._network._inputs = [self._mod.ITensor(i["name"], tuple(i["shape"]), i["shape_tensor"]) for i in inputs]
        self._network._io = {"inputs": inputs, "outputs": outputs, "model": model.graph.name}
        self._network._layers = len(model.graph.node)
        return True

    def parse_from_file(self, model: str) -> bool:
        self._world.log("OnnxParser.parse_from_file", model)
        return self._load(onnx.load(model))

    def parse(self, model: bytes, path: str = "") -> bool:
        self._world.log("OnnxParser.parse", path)
        return self._load(onnx.load_from_string(model))

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> ParserError:
        return self._errors[index]


class IOptimizationProfile:
    def __init__(self) -> None:
        self._shapes: dict[str, list[list[int]]] = {}
        self._values: dict[str, list[list[int]]] = {}

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:  # the real parameter names
        self._world.log("IOptimizationProfile.set_shape", input, tuple(min), tuple(opt), tuple(max))
        self._shapes[input] = [list(min), list(opt), list(max)]

    def set_shape_input(self, input: str, min: Any, opt: Any, max: Any) -> None:
        self._world.log("IOptimizationProfile.set_shape_input", input, tuple(min), tuple(opt), tuple(max))
        self._values[input] = [list(min), list(opt), list(max)]


class ITimingCache:
    def __init__(self, entries: set[str]):
        self._entries = set(entries)

    def serialize(self) -> IHostMemory:
        return IHostMemory(json.dumps(sorted(self._entries)).encode())

    def combine(self, input_cache: ITimingCache, ignore_mismatch: bool) -> bool:
        self._world.log("ITimingCache.combine", sorted(input_cache._entries), ignore_mismatch)
        self._entries |= input_cache._entries
        return True


class IBuilderConfig:
    builder_optimization_level = 3
    max_aux_streams = -1
    progress_monitor: Any = None
    int8_calibrator: Any = None  # TensorRT 10 only
    num_compute_capabilities = 0  # TensorRT-RTX only

    def __init__(self) -> None:
        self._flags: set[str] = {"TF32"}  # on by default, as in TensorRT
        self._profiles: list[IOptimizationProfile] = []
        self._limits: dict[str, int] = {}
        self._timing: ITimingCache | None = None
        self._calibration_profile: IOptimizationProfile | None = None
        self._targets: dict[int, str] = {}

    def set_flag(self, flag: Any) -> None:
        self._world.log("IBuilderConfig.set_flag", flag.name)
        self._flags.add(flag.name)

    def clear_flag(self, flag: Any) -> None:
        self._world.log("IBuilderConfig.clear_flag", flag.name)
        self._flags.discard(flag.name)

    def get_flag(self, flag: Any) -> bool:
        return flag.name in self._flags

    def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
        self._limits[pool.name] = pool_size

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self._world.log("IBuilderConfig.add_optimization_profile", len(self._profiles))
        if self._world.fail_point("add_optimization_profile"):
            return -1
        self._profiles.append(profile)
        return len(self._profiles) - 1

    def set_calibration_profile(self, profile: IOptimizationProfile) -> bool:  # TensorRT 10 only
        self._calibration_profile = profile
        return True

    def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
        data = bytes(serialized_timing_cache)
        if not data:
            return self._mod.ITimingCache(set())
        try:
            return self._mod.ITimingCache(set(json.loads(data)))
        except ValueError:
            raise RuntimeError("Failed to deserialize the timing cache") from None

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        self._world.log("IBuilderConfig.set_timing_cache", sorted(cache._entries), ignore_mismatch)
        self._timing = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self._timing

    def set_compute_capability(self, compute_capability: Any, index: int) -> bool:  # TensorRT-RTX only
        self._world.log("IBuilderConfig.set_compute_capability", compute_capability.name, index)
        if not 0 <= index < self.num_compute_capabilities or compute_capability.name in ("NONE",):
            return False
        self._targets[index] = compute_capability.name
        return True


class Builder:
    def __init__(self, logger: Any):
        self._logger = logger
        self._world.log("Builder")

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        self._world.log("Builder.create_network", flags)
        return self._mod.INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        return self._mod.IBuilderConfig()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return self._mod.IOptimizationProfile()

    def _error(self, message: str) -> None:
        self._logger.log(self._mod.ILogger.ERROR, message)

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> IHostMemory | None:
        world, io = self._world, network._io
        world.log("Builder.build_serialized_network", sorted(config._flags))
        monitor = config.progress_monitor
        if monitor is not None:
            monitor.phase_start("Building engine", None, 1)
            monitor.step_complete("Building engine", 0)
            monitor.phase_finish("Building engine")
        if world.on_build is not None:
            world.on_build()
        dynamic = [i["name"] for i in io["inputs"] if -1 in i["shape"] or i["shape_tensor"]]
        if dynamic and not config._profiles:
            self._error(f"Network has dynamic or shape inputs, but no optimization profile has been defined: {dynamic}")
            return None
        for p in config._profiles:
            for i in io["inputs"]:
                if i["shape_tensor"] and i["name"] not in p._values:
                    self._error(f"Optimization profile is missing values for shape input tensor {i['name']}")
                    return None
        if "INT8" in config._flags:
            calibrator = config.int8_calibrator
            if calibrator is None or config._calibration_profile is None:
                self._error("INT8 without a calibrator or calibration profile")
                return None
            if calibrator.read_calibration_cache() is None:
                names = [i["name"] for i in io["inputs"]]
                batches = 0
                while (ptrs := calibrator.get_batch(names)) is not None:
                    assert len(ptrs) == len(names)
                    batches += 1
                if not batches:
                    self._error("Calibration failure occurred with no scaling factors detected")
                    return None
                calibrator.write_calibration_cache(b"TRT-fake-calibration")
        if world.fail_point("build"):
            self._error("Internal error: fake builder failure (injected)")
            return None
        if config._timing is not None:
            config._timing._entries.add(f"{io['model']}:opt{config.builder_optimization_level}")
        plan = {"version": self._mod.__version__, "flags": network._flags, **io,
                "profiles": [p._shapes for p in config._profiles], "values": [p._values for p in config._profiles], "weak": sorted(config._flags & {"FP16", "INT8"}),
                "targets": [config._targets[i] for i in sorted(config._targets)]}
        return IHostMemory(PLAN_MAGIC + json.dumps(plan).encode())
