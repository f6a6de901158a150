"""ONNX Runtime as a backend.

The ORT "engine" is a cached model file, prepared as the backend's setup says (:mod:`.ort_setup`): the
optimized model a session writes (``optimized_model_filepath``) with full graph optimizations (``ort_cuda``'s
default), or the recipe's model itself (``ort_cpu``'s); runners load it at the setup's optimization level. A
fixed profile pins the model's free dimensions (``add_free_dimension_override_by_name``) before optimization,
offline or at load, so the optimizer sees static shapes. The optimized file may hold kernels laid out for this CPU or GPU, so the device is part
of its cache key, and so is what the setup makes of the file.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import Cache, Entry
from ..environment import cpu_count, cpu_device
from ..errors import BackendUnavailable, BuildError, HarnessError, ModeUnsupported
from ..profiles import Profile
from .base import Backend, Engine, Runner, RunnerOptions
from .ort_setup import LEVELS, OrtSetup, default_setup


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailable("onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu)") from None
    onnxruntime.set_default_logger_severity(3)  # errors only: its warnings are noise in test output
    return onnxruntime


# how ONNX Runtime says it cannot run something (not a bug of the model or the harness): the case is skipped
_UNSUPPORTED = ("NOT_IMPLEMENTED", "Could not find an implementation", "is not set",
                "cannot use the CUDA Graph feature", "cannot use the graph capture feature")


# RunnerOptions.extra key: False keeps a session's idle intra-op threads from spin-waiting (ONNX Runtime's
# default is to spin), for callers that run several sessions on the same cores (harness.stations)
INTRA_OP_SPINNING = "intra_op_spinning"


def unsupported(message: str) -> bool:
    return any(marker in message for marker in _UNSUPPORTED)


def free_dimension_overrides(model: Path, profile: Profile) -> dict[str, int]:
    """Values for the model's named free dimensions under a fixed profile ({} for a dynamic one)."""
    if not profile.fixed:
        return {}
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    values: dict[str, set[int]] = {}
    for inp in graph.input:
        if inp.name not in profile.opt:
            continue
        for d, value in zip(inp.type.tensor_type.shape.dim, profile.opt[inp.name]):
            if d.HasField("dim_param"):
                values.setdefault(d.dim_param, set()).add(value)
    # exporters reuse placeholder names such as "?" for unrelated dimensions: a name that would get two
    # different values is left free rather than pinned wrongly
    return {name: v.pop() for name, v in values.items() if len(v) == 1}


def quiet_session_options(ort: Any) -> Any:
    so = ort.SessionOptions()
    so.log_severity_level = 3  # errors only: ORT warns about every node it leaves on the CPU
    return so


class OrtEngine(Engine):
    def __init__(self, backend: OrtBackend, entry: Entry, profile: Profile, overrides: dict[str, int],
                 setup: OrtSetup):
        self.backend = backend
        self.entry = entry
        self.profile = profile
        self.overrides = overrides
        self.setup = setup

    def runner(self, options: RunnerOptions | None = None) -> Runner:
        return self.backend.make_runner(self, options or RunnerOptions())

    def describe(self) -> dict[str, Any]:
        return self.setup.describe(gpu=self.backend.on_gpu)


class OrtBackend(Backend):
    """Shared by the CPU and CUDA flavours: building (optimizing) and session creation."""

    provider = "CPUExecutionProvider"
    takes_ort_setup = True

    def version(self) -> str:
        return str(_ort().__version__)

    def unavailable(self) -> str | None:
        try:
            ort = _ort()
        except BackendUnavailable as exc:
            return str(exc)
        if self.provider not in ort.get_available_providers():
            return f"onnxruntime {ort.__version__} has no {self.provider} (available: {', '.join(ort.get_available_providers())})"
        return None

    def provider_options(self, options: RunnerOptions | None = None, setup: OrtSetup | None = None) -> dict[str, Any]:
        return {}

    def setup(self, options: Mapping[str, Any] | None = None) -> OrtSetup:
        """This backend's default setup with the user's ``ort_setup`` build option (``--ort-setup``) applied."""
        return default_setup(self.name).with_options((options or {}).get("ort_setup"))

    def session(self, model: Path, *, optimize_to: Path | None = None, overrides: Mapping[str, int] | None = None,
                options: RunnerOptions | None = None, provider_options: dict[str, Any] | None = None,
                level: str = "off", setup: OrtSetup | None = None) -> Any:
        """A session on ``model``: with ``optimize_to``, optimizing it fully and writing the result there;
        otherwise at optimization ``level`` (off, basic, extended, all)."""
        ort = _ort()
        so = quiet_session_options(ort)
        if optimize_to is not None:
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.optimized_model_filepath = str(optimize_to)
        else:
            so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
        for dim, value in (overrides or {}).items():
            so.add_free_dimension_override_by_name(dim, int(value))
        if options is not None and options.threads:
            so.intra_op_num_threads = int(options.threads)
            so.inter_op_num_threads = 1
        spinning = options.extra.get(INTRA_OP_SPINNING) if options is not None else None
        if spinning is not None:  # several sessions taking turns on the same cores: idle pools must not spin
            so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        popts = provider_options if provider_options is not None else self.provider_options(options, setup)
        return ort.InferenceSession(str(model), so, providers=[(self.provider, popts)])

    def build(self, model: Path, profile: Profile, cache: Cache, *, label: str, model_hash: str,
              options: Mapping[str, Any] | None = None, calibration: Any = None) -> OrtEngine:
        reason = self.unavailable()
        if reason:
            raise BackendUnavailable(reason)
        overrides = free_dimension_overrides(model, profile)
        setup = self.setup(options)
        # the setup's load-time parts (optimization level at load, CUDA options) rebuild nothing
        parts = self.key_parts(model_hash, profile, {k: v for k, v in (options or {}).items() if k != "ort_setup"})
        parts["free_dimension_overrides"] = overrides
        parts["setup"] = setup.file_parts(gpu=self.on_gpu)

        def build(path: Path) -> dict[str, Any]:
            try:
                if setup.engine == "source":  # the recipe's model is the engine; a session checks it loads
                    shutil.copyfile(model, path)
                    self.session(path, overrides=overrides, level=setup.load, setup=setup)
                else:
                    self.session(model, optimize_to=path, overrides=overrides, setup=setup)
            except Exception as exc:  # ORT raises its own exception types, all with a useful message
                msg = str(exc)
                if unsupported(msg):
                    raise ModeUnsupported(f"{self.name} cannot run {model.name}: {msg.strip()[:400]}") from None
                raise BuildError(f"{self.name}: building {model} failed: {msg.strip()}") from None
            return {"free_dimension_overrides": overrides, "setup": parts["setup"]}

        entry = cache.get_or_build("engines", label, parts, "model.onnx", build)
        return OrtEngine(self, entry, profile, overrides, setup)

    def make_runner(self, engine: OrtEngine, options: RunnerOptions) -> Runner:
        return OrtCpuRunner(self, engine, options)


class OrtCpuBackend(OrtBackend):
    name = "ort_cpu"

    def device(self) -> dict[str, Any]:
        return cpu_device()

    def unsupported_recipe(self, recipe_kind: str) -> str | None:
        if recipe_kind == "bf16":
            return "ONNX Runtime's CPU provider has no bfloat16 kernels for most operators"
        return super().unsupported_recipe(recipe_kind)

    def runner_threads(self, mode: str, runners: int) -> int | None:
        """Split the cores: N runners x threads <= cores; a session serving run_async needs a pool of >= 2.
        Serial mode leaves the pool to ONNX Runtime (None): its default, one thread per physical core, each
        pinned to its core, is what a user's session gets, which is what benchmarks/overhead.py compares a row
        with (on the 2-core development machine as fast as the same number of threads set explicitly:
        README, "Measured")."""
        cores = cpu_count()
        if mode == "serial":
            return None
        if mode == "multistream":
            return max(2, cores // runners)
        return max(1, cores // runners)


class OrtCpuRunner(Runner):
    """One ORT session on the CPU.

    ``run`` calls ``session.run`` on the prepared feeds; with ``resident`` inputs are bound once as
    OrtValues through I/O binding, so an iteration converts nothing. ``submit``/``wait`` use
    ``run_async``, which runs the request on the session's own thread pool and signals completion.
    """

    def __init__(self, backend: OrtBackend, engine: OrtEngine, options: RunnerOptions):
        if options.cuda_graph:
            raise ModeUnsupported("CUDA graphs need a GPU backend; ort_cpu has none")
        if options.sync != "spin":
            raise ModeUnsupported(f"--perf-sync {options.sync}: ort_cpu computes on the calling thread, which never "
                                  "waits for a device")
        self.options = options
        try:
            self.session = backend.session(engine.path, overrides=engine.overrides, options=options,
                                           level=engine.setup.load, setup=engine.setup)
        except Exception as exc:  # a cached engine that ORT cannot load: say which and why
            raise BuildError(f"{backend.name}: cannot load engine {engine.path}: {str(exc).strip()[:500]}") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._feeds: dict[str, np.ndarray] = {}
        self._binding: Any = None
        self._done = threading.Event()
        self._error: str | None = None
        self._result: Any = None

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, dict(feeds))
        return dict(zip(self.output_names, outs))

    def prepare(self, feeds: Mapping[str, np.ndarray], *, resident: bool = True) -> None:
        self._feeds = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
        self._binding = None
        self._result = None
        if resident:
            ort = _ort()
            binding = self.session.io_binding()
            for name, arr in self._feeds.items():
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr))
            for name in self.output_names:
                binding.bind_output(name)
            self._binding = binding

    def run(self) -> None:
        self._result = None
        if self._binding is not None:
            self.session.run_with_iobinding(self._binding)
        else:
            self._result = self.session.run(self.output_names, self._feeds)

    def fetch_outputs(self) -> dict[str, np.ndarray]:
        """The outputs of the last ``run`` or ``submit``/``wait`` of the prepared batch."""
        if self._result is not None:  # a run without binding, or run_async: ORT handed the outputs over
            return dict(zip(self.output_names, self._result))
        if self._binding is None:
            raise HarnessError("ort_cpu: no outputs to fetch: run or submit the prepared batch first")
        return dict(zip(self.output_names, self._binding.copy_outputs_to_cpu()))

    def timed_call(self) -> tuple[Any, tuple[Any, ...]]:
        if self._binding is not None:
            return self.session.run_with_iobinding, (self._binding,)
        return self.session.run, (self.output_names, self._feeds)

    def _callback(self, result: Any, _user_data: Any, err: str) -> None:
        self._result = result
        self._error = err or None
        self._done.set()

    def submit(self) -> None:
        if self.options.threads == 1:
            # with one intra-op thread ORT has no pool: the caller computes, and run_async has nowhere to go
            raise ModeUnsupported("ort_cpu: run_async needs a session with at least 2 intra-op threads")
        self._done.clear()
        self._result = None
        self.session.run_async(self.output_names, self._feeds, self._callback, None)

    def wait(self) -> None:
        self._done.wait()
        if self._error:
            raise RuntimeError(f"ort_cpu asynchronous run failed: {self._error}")

    def describe(self) -> dict[str, Any]:
        facts: dict[str, Any]
        if self.options.threads:
            facts = {"threads": self.options.threads}
        else:
            import psutil

            facts = {"threads": "ONNX Runtime's default (one per physical core, pinned)",
                     "physical_cores": psutil.cpu_count(logical=False)}
        if INTRA_OP_SPINNING in self.options.extra:
            facts[INTRA_OP_SPINNING] = bool(self.options.extra[INTRA_OP_SPINNING])
        return facts

    def close(self) -> None:
        self._binding = None
        self.session = None
