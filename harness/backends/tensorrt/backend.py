"""The TensorRT backend (10 and 11): availability, the engine's cache key, and build orchestration.

The serialized plan is cached with the TensorRT and ONNX parser versions, the module it came from, the
CUDA major version of the wheels (the same TensorRT version is published for CUDA 12 and 13) and the
GPU's name and compute capability in its key. Builds never run concurrently in one process (the builder
is not thread safe, and parallel builds perturb tactic timing): a process-wide lock, and the timing
cache's file lock across processes.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ... import cuda
from ...cache import Cache, Entry, cache_key
from ...errors import BackendUnavailable, BuildError
from ...profiles import Profile
from ..base import Backend
from .builder import build_plan
from .calibrator import check_legacy
from .engine import TrtEngine
from .library import MIN_MAJOR, cuda_wheel, failure_message, load_module, make_logger
from .options import check_options
from .timing_cache import TimingCacheFile

if TYPE_CHECKING:  # the published stubs (tensorrt_stubs) type every call made on a TensorRT object
    import tensorrt as trt

BUILD_LOCK = threading.Lock()  # one build at a time in this process


class TensorRTBackend(Backend):
    name = "tensorrt"
    module_names: tuple[str, ...] = ("tensorrt",)
    min_major = MIN_MAJOR
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
                self._module = load_module(self.module_names, min_major=self.min_major)
            except BackendUnavailable as exc:
                self._import_error = str(exc)
        if self._module is None:
            raise BackendUnavailable(self._import_error or f"{self.module_names[0]} is not installed")
        return self._module

    def logger(self) -> Any:
        """A logger that keeps TensorRT's last error messages, so that failures can quote them."""
        if self._logger is None:
            self._logger = make_logger(self.module())
        return self._logger

    def failure(self, what: str) -> str:
        return failure_message(self.name, self.logger(), what)

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

    # -- building

    def key_parts(self, model_hash: str, profile: Profile, options: Mapping[str, Any] | None) -> dict[str, Any]:
        parts = super().key_parts(model_hash, profile, check_options(options))
        mod = self.module()
        parts["module"] = mod.__name__
        parts["cuda_wheel"] = cuda_wheel(mod.__name__)
        parts["onnx_parser"] = self._parser_version()
        return parts

    def _parser_version(self) -> str:
        fn = getattr(self.module(), "get_nv_onnx_parser_version", None)
        return str(fn()) if callable(fn) else self.version()

    def timing_cache_path(self, cache: Cache) -> Path:
        device = self.device()
        slug = "-".join(str(v) for v in device.values()).replace(" ", "_").replace("/", "_")
        return cache.root / "timing" / f"{self.name}-{self.version()}-{cuda_wheel(self.module().__name__)}-{slug}.cache"

    def timing_cache(self, cache: Cache) -> TimingCacheFile | None:
        """The timing cache builds share (None where the library keeps none)."""
        return TimingCacheFile(self.timing_cache_path(cache))

    def configure_device(self, config: trt.IBuilderConfig, opts: dict[str, Any]) -> None:
        """TensorRT builds for the GPU it runs on; nothing to set."""

    def build(self, model: Path, profile: Profile, cache: Cache, *, label: str, model_hash: str,
              options: Mapping[str, Any] | None = None, calibration: Any = None) -> TrtEngine:
        reason = self.cannot_build()
        if reason:
            raise BackendUnavailable(f"{self.name}: {reason}")
        opts = check_options(options)
        if opts["legacy_precision"]:
            check_legacy(self.module(), self.name, opts["legacy_precision"])
        parts = self.key_parts(model_hash, profile, opts)
        calibration_file = None
        if opts["legacy_precision"] == "int8":
            if calibration is None:
                raise BuildError(f"{self.name}: legacy int8 needs calibration samples")
            parts["calibration"] = calibration.key()
            calibration_file = cache.root / "calibration" / f"{cache_key(parts)[:16]}.cache"

        def build(path: Path) -> dict[str, Any]:
            with BUILD_LOCK:
                return build_plan(self, model, profile, opts, cache, label, path, calibration, calibration_file)

        entry = cache.get_or_build("engines", label, parts, "plan.engine", build)

        def rebuild(unusable: Entry, problem: str) -> Entry:
            cache.discard(unusable, problem)
            return cache.get_or_build("engines", label, parts, "plan.engine", build)

        return TrtEngine(self, entry, profile, opts, rebuild)
