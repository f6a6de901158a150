"""A cached plan, deserialized once (lazily, where a runner needs it), and the runners made from it.

A plan that TensorRT will not deserialize (``None``: written by a library build the key could not tell
apart, or damaged in a way the checksum did not catch) is a cache entry that cannot be used: it is
discarded with a warning and rebuilt once, and only a rebuilt plan that still fails is an error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ... import cuda
from ...cache import Entry
from ...errors import BackendUnavailable, BuildError
from ...profiles import Profile
from ..base import Engine, Runner, RunnerOptions
from .profiles import ProfileSlots

if TYPE_CHECKING:  # the published stubs (tensorrt_stubs) type every call made on a TensorRT object
    import tensorrt as trt

    from .backend import TensorRTBackend


class TrtEngine(Engine):
    def __init__(self, backend: TensorRTBackend, entry: Entry, profile: Profile, options: dict[str, Any],
                 rebuild: Callable[[Entry, str], Entry]):
        self.backend = backend
        self.entry = entry
        self.profile = profile
        self.options = options
        self._rebuild = rebuild
        self._engine: Any = None
        self._runtime: Any = None  # kept alive as long as the engine it deserialized
        self._lock = threading.Lock()
        self.slots = ProfileSlots(int(options["profile_copies"]), str(entry.path))

    def _deserialize(self, runtime: trt.Runtime) -> trt.ICudaEngine | None:
        engine: trt.ICudaEngine | None = runtime.deserialize_cuda_engine(self.entry.path.read_bytes())
        return engine

    def deserialized(self) -> trt.ICudaEngine:
        with self._lock:
            if self._engine is None:
                reason = self.backend.unavailable()
                if reason:
                    raise BackendUnavailable(f"{self.backend.name}: {reason}")
                mod = self.backend.module()
                cuda.set_device(0)
                runtime: trt.Runtime = mod.Runtime(self.backend.logger())
                engine = self._deserialize(runtime)
                if engine is None:
                    problem = self.backend.failure(f"deserializing {self.entry.path}")
                    self.entry = self._rebuild(self.entry, f"TensorRT cannot deserialize the plan: {problem}")
                    self.slots.engine = str(self.entry.path)
                    engine = self._deserialize(runtime)
                    if engine is None:
                        raise BuildError(self.backend.failure(f"deserializing {self.entry.path}, rebuilt just now,"))
                profiles = int(engine.num_optimization_profiles)
                if profiles < self.slots.count:
                    raise BuildError(f"{self.backend.name}: {self.entry.path} has {profiles} optimization profile(s), "
                                     f"{self.slots.count} expected")
                self._runtime, self._engine = runtime, engine
            return self._engine

    def runner(self, options: RunnerOptions | None = None) -> Runner:
        from .runner import TrtRunner

        return TrtRunner(self, options or RunnerOptions())
