"""TensorRT (10 and 11) and TensorRT-RTX, one code path, the module chosen at import.

Build: the recipe's ONNX is parsed into a strongly typed network (the precision comes from the file);
parse errors name the nodes. One optimization profile per concurrent execution context (see
``ProfileSlots``), builder optimization level, workspace limit and auxiliary streams as options, a timing
cache persisted per device next to the engine cache and reused by every build, build progress reported
while TensorRT works, and the serialized plan cached with the TensorRT version and the GPU's name and
compute capability in its key. Builds never run concurrently in one process (the builder is not thread
safe, and parallel builds perturb tactic timing): a process-wide lock, and the timing cache's file lock
across processes. TF32 is off unless asked for: FP32 accuracy is measured in FP32.

Run: the plan is deserialized once per engine; each runner has its own execution context, profile, CUDA
stream and buffers (the harness's CUDA module, shared with ONNX Runtime CUDA): ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``; output shapes read once the input shapes are set; pinned host
buffers for the copies; optionally a CUDA graph per runner, captured again when input shapes change.

TensorRT 10's weak typing is available as an explicit, clearly named legacy path (``legacy_precision``
= fp16 or int8, with an INT8 calibrator and a calibration cache file), never the default; TensorRT 11
removed it, and asking for it there says so.

TensorRT-RTX builds on a CPU-only machine (for the compute capabilities it targets) but its runtime needs
a consumer or workstation GPU: it refuses Hopper.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from filelock import FileLock

from .. import cuda
from ..cache import Cache, Entry
from ..errors import BackendUnavailable, BuildError, HarnessError, ModeUnsupported
from ..profiles import Profile
from .base import Backend, Engine, Runner, RunnerOptions
from .gpu_runner import GpuRunner
from .tensorrt_support import (
    CalibrationFeeder,
    ProfileSlots,
    buffer_nbytes,
    distinct_dim_names,
    numpy_dtype,
    parse_error_message,
    parse_errors,
    profile_shapes,
)

if TYPE_CHECKING:  # the published stubs (tensorrt_stubs) type every call made on a TensorRT object
    import tensorrt as trt

BUILD_LOCK = threading.Lock()  # one build at a time in this process
# RTX targets when building without a GPU (its ComputeCapability enum; it has no Hopper target)
RTX_DEFAULT_TARGETS = ("SM80", "SM86", "SM89", "SM120")

BUILD_OPTIONS: dict[str, Any] = {
    "opt_level": 3,  # builder_optimization_level, 0-5
    "workspace_mb": 0,  # memory pool limit for the workspace; 0: TensorRT's default
    "max_aux_streams": -1,  # -1: TensorRT decides
    "profile_copies": 1,  # optimization profiles, one per concurrent execution context
    "tf32": False,
    "legacy_precision": None,  # TensorRT 10 only: "fp16" or "int8" weak typing on an FP32 model
    "legacy_calibrator": "entropy",  # with legacy int8: entropy or minmax
    "compute_capabilities": None,  # TensorRT-RTX: targets (e.g. ["SM86", "SM89"]); None: the GPU, else defaults
}


def check_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    given = dict(options or {})
    unknown = sorted(set(given) - set(BUILD_OPTIONS))
    if unknown:
        raise BuildError(f"unknown TensorRT build option(s) {', '.join(unknown)}; known: {', '.join(BUILD_OPTIONS)}")
    out = {**BUILD_OPTIONS, **given}
    if not 0 <= int(out["opt_level"]) <= 5:
        raise BuildError(f"TensorRT build option opt_level must be 0-5, got {out['opt_level']!r}")
    if int(out["profile_copies"]) < 1:
        raise BuildError("TensorRT build option profile_copies must be >= 1")
    if out["legacy_precision"] not in (None, "fp16", "int8"):
        raise BuildError(f"legacy_precision must be fp16 or int8, got {out['legacy_precision']!r}")
    if out["legacy_calibrator"] not in ("entropy", "minmax"):
        raise BuildError(f"legacy_calibrator must be entropy or minmax, got {out['legacy_calibrator']!r}")
    return out


class _Progress:
    """Reports build phases on the terminal (past pytest's capture) at most every few seconds."""

    def __init__(self, label: str, every: float = 5.0):
        self.label = label
        self.every = every
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.phases: list[str] = []

    def note(self, phase: str, step: int, steps: int) -> None:
        now = time.perf_counter()
        if now - self.last >= self.every and now - self.t0 >= self.every:
            self.last = now
            stream = sys.__stderr__ or sys.stderr  # past pytest's capture: builds take minutes
            stream.write(f"\n[harness] building {self.label}: {phase} {step}/{steps} ({now - self.t0:.0f} s)\n")
            stream.flush()


def _monitor(mod: Any, progress: _Progress) -> Any:
    class Monitor(mod.IProgressMonitor):
        def __init__(self) -> None:
            mod.IProgressMonitor.__init__(self)
            self.steps: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.steps[phase_name] = num_steps
            progress.phases.append(phase_name)

        def step_complete(self, phase_name: str, step: int) -> bool:
            progress.note(phase_name, step, self.steps.get(phase_name, 0))
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            self.steps.pop(phase_name, None)

    return Monitor()


def _dims(dims: trt.Dims) -> tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))


def _make_logger(mod: Any) -> Any:
    from collections import deque

    class Logger(mod.ILogger):
        def __init__(self) -> None:
            mod.ILogger.__init__(self)
            self.errors: deque[str] = deque(maxlen=20)

        def log(self, severity: Any, msg: str) -> None:
            if severity in (mod.ILogger.INTERNAL_ERROR, mod.ILogger.ERROR):
                self.errors.append(str(msg).strip())

    return Logger()


class TrtEngine(Engine):
    def __init__(self, backend: TensorRTBackend, entry: Entry, profile: Profile, options: dict[str, Any]):
        self.backend = backend
        self.entry = entry
        self.profile = profile
        self.options = options
        self._engine: Any = None
        self._runtime: Any = None
        self._lock = threading.Lock()
        self.slots = ProfileSlots(int(options["profile_copies"]), str(entry.path))

    def deserialized(self) -> trt.ICudaEngine:
        with self._lock:
            if self._engine is None:
                reason = self.backend.unavailable()
                if reason:
                    raise BackendUnavailable(f"{self.backend.name}: {reason}")
                mod = self.backend.module()
                cuda.set_device(0)
                self._runtime = mod.Runtime(self.backend.logger())
                engine = self._runtime.deserialize_cuda_engine(self.entry.path.read_bytes())
                if engine is None:
                    raise BuildError(self.backend._failure(f"deserializing {self.entry.path}"))
                self._engine = engine
            return self._engine

    def runner(self, options: RunnerOptions | None = None) -> Runner:
        return TrtRunner(self, options or RunnerOptions())


class TensorRTBackend(Backend):
    name = "tensorrt"
    module_name = "tensorrt"
    on_gpu = True
    needs_tensorrt = True
    builds_on_cpu = False

    def __init__(self) -> None:
        self._module: Any = None
        self._import_error: str | None = None
        self._logger: Any = None

    def module(self) -> Any:
        if self._module is None and self._import_error is None:
            try:
                mod = importlib.import_module(self.module_name)
                if not hasattr(mod, "Builder"):  # e.g. only tensorrt_stubs' .pyi files: an empty namespace
                    raise ImportError(f"{mod.__name__} has no Builder (type stubs only? the TensorRT libraries are "
                                      "not installed)")
                self._module = mod
            except Exception as exc:  # ImportError, or the libraries' OSError when only stubs are installed
                self._import_error = f"{self.module_name} cannot be imported: {type(exc).__name__}: {exc}"
        if self._module is None:
            raise BackendUnavailable(self._import_error or f"{self.module_name} is not installed")
        return self._module

    def logger(self) -> Any:
        """A logger that keeps TensorRT's last error messages, so that failures can quote them."""
        if self._logger is None:
            self._logger = _make_logger(self.module())
        return self._logger

    def _failure(self, what: str) -> str:
        errors = list(self.logger().errors)
        self.logger().errors.clear()
        if not errors:
            return f"{self.name}: {what} failed (TensorRT gave no message)"
        return f"{self.name}: {what} failed:\n" + "\n".join(f"  {e}" for e in errors[-5:])

    def version(self) -> str:
        return str(self.module().__version__)

    def cannot_build(self) -> str | None:
        try:
            self.module()
        except BackendUnavailable as exc:
            return str(exc)
        if not self.builds_on_cpu:
            return cuda.unavailable()
        return None

    def unavailable(self) -> str | None:
        reason = self.cannot_build()
        if reason:
            return reason
        return cuda.unavailable()

    def device(self) -> dict[str, Any]:
        props = cuda.device_properties(0)
        return {"type": "gpu", "name": props["name"], "compute_capability": props["compute_capability"]}

    def perf_build_options(self, mode: str, concurrency: int) -> dict[str, Any]:
        return {"profile_copies": concurrency} if mode != "serial" and concurrency > 1 else {}

    # -- building

    def key_parts(self, model_hash: str, profile: Profile, options: Mapping[str, Any] | None) -> dict[str, Any]:
        parts = super().key_parts(model_hash, profile, check_options(options))
        parts["onnx_parser"] = self._parser_version()
        return parts

    def _parser_version(self) -> str:
        mod = self.module()
        fn = getattr(mod, "get_nv_onnx_parser_version", None)
        return str(fn()) if callable(fn) else self.version()

    def timing_cache_path(self, cache: Cache) -> Path:
        device = self.device()
        slug = "-".join(str(v) for v in device.values()).replace(" ", "_").replace("/", "_")
        return cache.root / "timing" / f"{self.name}-{self.version()}-{slug}.cache"

    def build(self, model: Path, profile: Profile, cache: Cache, *, label: str, model_hash: str,
              options: Mapping[str, Any] | None = None, calibration: Any = None) -> TrtEngine:
        reason = self.cannot_build()
        if reason:
            raise BackendUnavailable(f"{self.name}: {reason}")
        opts = check_options(options)
        if opts["legacy_precision"]:
            self._check_legacy(opts["legacy_precision"])
        parts = self.key_parts(model_hash, profile, opts)
        feeder = None
        if opts["legacy_precision"] == "int8":
            if calibration is None:
                raise BuildError(f"{self.name}: legacy int8 needs calibration samples")
            parts["calibration"] = calibration.key()
            from ..cache import cache_key

            shapes = {k: calibration.batch_shape(k, calibration.batch) for k in calibration.spec.inputs}
            feeder = CalibrationFeeder((b.feeds for b in calibration.batches()),
                                       cache.root / "calibration" / f"{cache_key(parts)[:16]}.cache", shapes)

        def build(path: Path) -> dict[str, Any]:
            with BUILD_LOCK:
                return self._build_plan(model, profile, opts, cache, label, path, feeder)

        entry = cache.get_or_build("engines", label, parts, "plan.engine", build)
        return TrtEngine(self, entry, profile, opts)

    def _flags(self, legacy: bool) -> int:
        mod = self.module()
        creation = mod.NetworkDefinitionCreationFlag
        if legacy:
            return 0
        # strongly typed: the ONNX file's types are the engine's (TensorRT 11 has nothing else)
        strongly = getattr(creation, "STRONGLY_TYPED", None)
        return 1 << int(strongly) if strongly is not None else 0

    def _build_plan(self, model: Path, profile: Profile, opts: dict[str, Any], cache: Cache, label: str,
                    out: Path, feeder: CalibrationFeeder | None = None) -> dict[str, Any]:
        mod = self.module()
        logger = self.logger()
        legacy = opts["legacy_precision"]
        builder: trt.Builder = mod.Builder(logger)
        network: trt.INetworkDefinition = builder.create_network(self._flags(bool(legacy)))
        parser: trt.OnnxParser = mod.OnnxParser(network, logger)
        logger.errors.clear()
        import onnx

        proto = onnx.load(str(model), load_external_data=False)
        renamed = distinct_dim_names(proto, profile)
        # parse the file itself unless its input dim names had to be made distinct
        ok = (parser.parse(proto.SerializeToString(), str(model)) if renamed
              else parser.parse_from_file(str(model)))
        if not ok:
            raise BuildError(parse_error_message(model, parse_errors(parser)))
        config: trt.IBuilderConfig = builder.create_builder_config()
        config.builder_optimization_level = int(opts["opt_level"])
        if int(opts["max_aux_streams"]) >= 0:
            config.max_aux_streams = int(opts["max_aux_streams"])
        if int(opts["workspace_mb"]) > 0:
            config.set_memory_pool_limit(mod.MemoryPoolType.WORKSPACE, int(opts["workspace_mb"]) << 20)
        tf32 = getattr(mod.BuilderFlag, "TF32", None)
        if tf32 is not None:
            if opts["tf32"]:
                config.set_flag(tf32)
            else:
                config.clear_flag(tf32)
        inputs = {}
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            inputs[tensor.name] = _dims(tensor.shape)
        shapes = profile_shapes(profile, inputs, model=label)
        for _ in range(int(opts["profile_copies"])):
            prof: trt.IOptimizationProfile = builder.create_optimization_profile()
            for name, lo, mid, hi in shapes:
                prof.set_shape(name, mod.Dims(lo), mod.Dims(mid), mod.Dims(hi))
            config.add_optimization_profile(prof)
        self._configure_device(config, opts)
        info: dict[str, Any] = {"tensorrt": self.version(), "inputs": {k: list(v) for k, v in inputs.items()},
                                "layers": network.num_layers, "profiles": int(opts["profile_copies"])}
        if renamed:
            info["input_dims_renamed"] = renamed
        if legacy:
            info.update(self._configure_legacy(builder, config, legacy, opts, shapes, feeder))
        progress = _Progress(label)
        monitor = _monitor(mod, progress) if hasattr(mod, "IProgressMonitor") else None
        if monitor is not None:
            config.progress_monitor = monitor
        timing_file = self._load_timing_cache(config, cache)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise BuildError(self._failure(f"building {model.name} ({label})"))
        out.write_bytes(memoryview(plan).tobytes())
        if timing_file is not None:
            self._save_timing_cache(config, timing_file)
        info["build_phases"] = progress.phases[:20]
        return info

    def _configure_device(self, config: trt.IBuilderConfig, opts: dict[str, Any]) -> None:
        """TensorRT builds for the GPU it runs on; nothing to set."""

    # -- timing cache: one file per TensorRT version and device, shared by every build

    def _load_timing_cache(self, config: trt.IBuilderConfig, cache: Cache) -> Path | None:
        path = self.timing_cache_path(cache)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            data = path.read_bytes() if path.is_file() else b""
        timing = config.create_timing_cache(data)
        config.set_timing_cache(timing, ignore_mismatch=False)
        return path

    def _save_timing_cache(self, config: trt.IBuilderConfig, path: Path) -> None:
        timing = config.get_timing_cache()
        if timing is None:
            return
        data = memoryview(timing.serialize()).tobytes()
        with FileLock(str(path) + ".lock"):
            tmp = path.with_name(path.name + ".part")
            tmp.write_bytes(data)
            tmp.replace(path)

    # -- TensorRT 10's weak typing, opt-in

    def _check_legacy(self, precision: str) -> None:
        mod = self.module()
        flag = {"fp16": "FP16", "int8": "INT8"}[precision]
        if not hasattr(mod.BuilderFlag, flag) or (precision == "int8" and not hasattr(mod, "IInt8EntropyCalibrator2")):
            raise ModeUnsupported(
                f"{self.name} {self.version()} has no weak typing: the {flag} builder flag and the INT8 calibrators "
                "were removed in TensorRT 11 (and TensorRT-RTX never had them). Use the fp16 / int8 recipes, which "
                "put the precision in the ONNX file.")

    def _configure_legacy(self, builder: trt.Builder, config: trt.IBuilderConfig, precision: str,
                          opts: dict[str, Any], shapes: list[Any], feeder: CalibrationFeeder | None) -> dict[str, Any]:
        mod = self.module()
        config.set_flag(mod.BuilderFlag.FP16)
        info: dict[str, Any] = {"legacy_precision": precision}
        if precision == "int8":
            assert feeder is not None
            config.set_flag(mod.BuilderFlag.INT8)
            calib_profile: trt.IOptimizationProfile = builder.create_optimization_profile()
            for name, _lo, mid, _hi in shapes:
                calib_profile.set_shape(name, mod.Dims(mid), mod.Dims(mid), mod.Dims(mid))
            config.set_calibration_profile(calib_profile)
            config.int8_calibrator = make_calibrator(mod, feeder, opts["legacy_calibrator"])
            info["calibration_cache"] = str(feeder.cache_file)
        return info


def make_calibrator(mod: Any, feeder: CalibrationFeeder, method: str) -> Any:
    """A TensorRT 10 INT8 calibrator over a CalibrationFeeder: batches go to device buffers on a stream."""
    base = {"entropy": mod.IInt8EntropyCalibrator2, "minmax": mod.IInt8MinMaxCalibrator}[method]

    class Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.stream = cuda.Stream()
            self.buffers: dict[str, cuda.TensorBuffers] = {}

        def get_batch_size(self) -> int:
            return 1  # explicit batch: the batch is in the tensors' shapes

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = feeder.next_batch(names)
            if batch is None:
                return None
            ptrs = []
            for name in names:
                arr = batch[name]
                buf = self.buffers.get(name)
                if buf is None:
                    buf = self.buffers[name] = cuda.TensorBuffers(arr.shape, arr.dtype)
                buf.host.array[...] = arr
                buf.upload(self.stream)
                ptrs.append(buf.device.ptr)
            self.stream.synchronize()
            return ptrs

        def read_calibration_cache(self) -> bytes | None:
            return feeder.read_cache()

        def write_calibration_cache(self, cache: Any) -> None:
            feeder.write_cache(memoryview(cache).tobytes())

    return Calibrator()


class TensorRTRtxBackend(TensorRTBackend):
    """TensorRT-RTX: the same builder API; builds without a GPU; its runtime refuses Hopper and newer
    datacenter parts. Its timing cache operations are no-ops (deprecated in RTX 1.2), so none is kept."""

    name = "tensorrt_rtx"
    module_name = "tensorrt_rtx_bindings"
    builds_on_cpu = True

    def unavailable(self) -> str | None:
        reason = self.cannot_build()
        if reason:
            return reason
        if cuda.unavailable():
            return f"the TensorRT-RTX runtime needs an NVIDIA GPU ({cuda.unavailable()})"
        cc = cuda.device_properties(0)["compute_capability"]
        targets = self._targets(None)
        if f"SM{cc.replace('.', '')}" not in targets:
            return (f"the TensorRT-RTX runtime does not support this GPU (compute capability {cc}); it targets "
                    f"{', '.join(self._all_targets())}")
        return None

    def _all_targets(self) -> list[str]:
        return [n for n in self.module().ComputeCapability.__members__ if n.startswith("SM")]

    def _targets(self, opts: dict[str, Any] | None) -> list[str]:
        if opts and opts.get("compute_capabilities"):
            return list(opts["compute_capabilities"])
        if cuda.unavailable() is None:
            cc = cuda.device_properties(0)["compute_capability"].replace(".", "")
            return [f"SM{cc}"]
        return list(RTX_DEFAULT_TARGETS)

    def device(self) -> dict[str, Any]:
        """Without a GPU, the engine's identity is the set of compute capabilities it was built for."""
        if cuda.unavailable() is None:
            return super().device()
        return {"type": "rtx-targets", "compute_capabilities": list(RTX_DEFAULT_TARGETS)}

    def key_parts(self, model_hash: str, profile: Profile, options: Mapping[str, Any] | None) -> dict[str, Any]:
        parts = super().key_parts(model_hash, profile, options)
        parts["targets"] = self._targets(check_options(options))
        return parts

    def _configure_device(self, config: Any, opts: dict[str, Any]) -> None:
        # TensorRT-RTX only (TensorRT has no such calls): the compute capabilities the engine is built for
        mod = self.module()
        targets = self._targets(opts)
        unknown = [t for t in targets if t not in mod.ComputeCapability.__members__]
        if unknown:
            raise BuildError(f"tensorrt_rtx: unknown compute capability target(s) {', '.join(unknown)}; "
                             f"known: {', '.join(self._all_targets())}")
        config.num_compute_capabilities = len(targets)
        for i, t in enumerate(targets):
            config.set_compute_capability(getattr(mod.ComputeCapability, t), i)

    def _load_timing_cache(self, config: trt.IBuilderConfig, cache: Cache) -> Path | None:
        return None  # no-ops in TensorRT-RTX


class TrtRunner(GpuRunner):
    """One execution context and optimization profile, on the GPU machinery ORT CUDA shares."""

    def __init__(self, engine: TrtEngine, options: RunnerOptions):
        self.engine = engine
        self.options = options
        trt_engine = engine.deserialized()
        mod = engine.backend.module()
        super().__init__()
        self.context: trt.IExecutionContext | None = None
        slot = engine.slots.acquire()
        self.profile_index: int | None = slot
        self._graph: cuda.Graph | None = None
        context = trt_engine.create_execution_context()
        if context is None:
            self.close()
            raise BuildError(engine.backend._failure(f"creating an execution context for {engine.path}"))
        self.context = context
        if not context.set_optimization_profile_async(slot, self.stream.ptr):
            self.close()
            raise HarnessError(f"{engine.backend.name}: execution context refused optimization profile "
                               f"{slot} of {engine.path}")
        self.stream.synchronize()
        names = [trt_engine.get_tensor_name(i) for i in range(trt_engine.num_io_tensors)]
        is_input = {n: trt_engine.get_tensor_mode(n) == mod.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self._dtypes = {n: numpy_dtype(trt_engine.get_tensor_dtype(n), n) for n in names}

    @property
    def _what(self) -> str:
        return f"{self.engine.backend.name} {self.engine.entry.label}"

    def _stage(self, feeds: Mapping[str, np.ndarray]) -> None:
        mod = self.engine.backend.module()
        context = self.context
        assert context is not None
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise HarnessError(f"{self._what}: feeds lack input(s) {', '.join(missing)}")
        same = all(n in self._inputs and self._inputs[n].shape == tuple(np.shape(feeds[n])) for n in self.input_names)
        if not same:
            self._free_buffers()
            for name in self.input_names:
                arr = np.asarray(feeds[name])
                if arr.dtype != self._dtypes[name]:
                    raise HarnessError(f"{self._what}: input {name!r} is {arr.dtype}, the engine wants "
                                      f"{self._dtypes[name]}")
                tb = cuda.TensorBuffers(arr.shape, arr.dtype)
                self._inputs[name] = tb
                if not context.set_input_shape(name, mod.Dims(arr.shape)):
                    raise HarnessError(f"{self._what}: input {name!r}: shape {list(arr.shape)} is outside the engine's "
                                      f"profile {self.engine.profile.name!r}")
                context.set_tensor_address(name, tb.device.ptr)
            for name in self.output_names:
                shape = _dims(context.get_tensor_shape(name))
                buffer_nbytes(shape, self._dtypes[name], name)  # refuses unknown dims with the reason
                tb = cuda.TensorBuffers(shape, self._dtypes[name])
                self._outputs[name] = tb
                context.set_tensor_address(name, tb.device.ptr)
        for name in self.input_names:
            self._inputs[name].host.array[...] = feeds[name]
        self._upload_inputs()
        self.stream.synchronize()
        if self.options.cuda_graph and (self._graph is None or not same):
            self._capture()

    def _enqueue(self) -> None:
        assert self.context is not None
        if not self.context.execute_async_v3(self.stream.ptr):
            raise HarnessError(self.engine.backend._failure("execute_async_v3"))

    def _capture(self) -> None:
        if self._graph is not None:
            self._graph.close()
        self._enqueue()  # TensorRT applies deferred updates on a first enqueue, outside the capture
        self.stream.synchronize()
        self._graph = cuda.Graph(self.stream, self._enqueue)

    def _execute(self, sync: bool) -> None:
        # enqueue only: GpuRunner synchronizes where a run must be synchronous
        if self._graph is not None:
            self._graph.launch(self.stream)
        else:
            self._enqueue()

    def _free_buffers(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None
        super()._free_buffers()

    def describe(self) -> dict[str, Any]:
        return {"stream": "own", "profile": self.profile_index, "profiles": self.engine.slots.count,
                "tf32": bool(self.engine.options["tf32"]), "cuda_graph": self.options.cuda_graph}

    def close(self) -> None:
        super().close()
        self.context = None
        if self.profile_index is not None:  # also when the context could not be made
            self.engine.slots.release(self.profile_index)
            self.profile_index = None
