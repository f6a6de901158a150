"""Building a plan: network (flags per version), builder config, optimization profiles, timing cache.

The recipe's ONNX is parsed into a strongly typed network (the precision comes from the file; TensorRT
10's weak typing only when asked for by name). One optimization profile by default, shared by every
execution context; N copies when ``profile_copies`` asks. TF32 is off unless asked for: FP32 accuracy is
measured in FP32. Build phases are reported on the terminal while TensorRT works.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...cache import Cache
from ...errors import BuildError
from ...profiles import Profile
from .calibrator import calibration_feeder, configure_legacy
from .library import network_flags
from .network import parse_onnx
from .profiles import profile_shapes, profile_values
from .tensors import dims

if TYPE_CHECKING:  # the published stubs (tensorrt_stubs) type every call made on a TensorRT object
    import tensorrt as trt

    from .backend import TensorRTBackend


class Progress:
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


def progress_monitor(mod: Any, progress: Progress) -> Any:
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


def configure(mod: Any, config: trt.IBuilderConfig, opts: dict[str, Any]) -> None:
    """Builder options: optimization level, auxiliary streams, workspace limit, TF32."""
    config.builder_optimization_level = int(opts["opt_level"])
    if int(opts["max_aux_streams"]) >= 0:
        config.max_aux_streams = int(opts["max_aux_streams"])
    if int(opts["workspace_mb"]) > 0:
        config.set_memory_pool_limit(mod.MemoryPoolType.WORKSPACE, int(opts["workspace_mb"]) << 20)
    tf32 = getattr(mod.BuilderFlag, "TF32", None)
    if tf32 is not None:  # on by default in TensorRT's builder config
        if opts["tf32"]:
            config.set_flag(tf32)
        else:
            config.clear_flag(tf32)


def add_profiles(mod: Any, builder: trt.Builder, config: trt.IBuilderConfig, shapes: list[Any], values: list[Any],
                 copies: int) -> None:
    for i in range(copies):
        prof: trt.IOptimizationProfile = builder.create_optimization_profile()
        for name, lo, mid, hi in shapes:
            prof.set_shape(name, mod.Dims(lo), mod.Dims(mid), mod.Dims(hi))
        for name, lo, mid, hi in values:
            prof.set_shape_input(name, list(lo), list(mid), list(hi))
        index = config.add_optimization_profile(prof)
        if index != i:  # -1: TensorRT found the profile invalid
            raise BuildError(f"TensorRT refused optimization profile {i} "
                             f"({', '.join(f'{n}: {list(lo)}..{list(hi)}' for n, lo, _m, hi in shapes)}): "
                             f"add_optimization_profile returned {index}")


def build_plan(backend: TensorRTBackend, model: Path, profile: Profile, opts: dict[str, Any], cache: Cache,
               label: str, out: Path, calibration: Any = None, calibration_cache: Path | None = None) -> dict[str, Any]:
    """Build ``model`` for ``profile`` and write the serialized plan to ``out``; returns build facts."""
    mod = backend.module()
    logger = backend.logger()
    legacy = opts["legacy_precision"]
    builder: trt.Builder = mod.Builder(logger)
    network: trt.INetworkDefinition = builder.create_network(network_flags(mod, strongly_typed=not legacy))
    parser: trt.OnnxParser = mod.OnnxParser(network, logger)
    logger.errors.clear()
    renamed = parse_onnx(parser, model, profile)
    config: trt.IBuilderConfig = builder.create_builder_config()
    configure(mod, config, opts)
    inputs = {}
    shape_tensors = set()
    for i in range(network.num_inputs):
        tensor: trt.ITensor = network.get_input(i)
        inputs[tensor.name] = dims(tensor.shape)
        if tensor.is_shape_tensor:
            shape_tensors.add(tensor.name)
    shapes = profile_shapes(profile, inputs, model=label, shape_tensors=frozenset(shape_tensors))
    values = profile_values(profile, inputs, frozenset(shape_tensors), model=label)
    copies = int(opts["profile_copies"])
    add_profiles(mod, builder, config, shapes, values, copies)
    backend.configure_device(config, opts)
    info: dict[str, Any] = {"tensorrt": backend.version(), "inputs": {k: list(v) for k, v in inputs.items()},
                            "layers": network.num_layers, "profiles": copies}
    if renamed:
        info["input_dims_renamed"] = renamed
    calibrator = None
    try:
        if legacy:
            feeder = None
            if legacy == "int8":
                assert calibration is not None and calibration_cache is not None
                opt = {name: mid for name, _lo, mid, _hi in shapes}
                expected = {name: opt.get(name, shape) for name, shape in inputs.items() if name not in shape_tensors}
                feeder = calibration_feeder(calibration, expected, calibration_cache, label=label)
            facts, calibrator = configure_legacy(mod, builder, config, legacy, opts["legacy_calibrator"], shapes,
                                                 feeder)
            info.update(facts)
        progress = Progress(label)
        if hasattr(mod, "IProgressMonitor"):
            config.progress_monitor = progress_monitor(mod, progress)
        timing = backend.timing_cache(cache)
        if timing is not None:
            timing.attach(config)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise BuildError(backend.failure(f"building {model.name} ({label})"))
        out.write_bytes(memoryview(plan).tobytes())
        if timing is not None:
            timing.save(config)
    finally:
        if calibrator is not None:
            calibrator.close()
    info["build_phases"] = progress.phases[:20]
    return info
