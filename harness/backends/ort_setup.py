"""How an ONNX Runtime session is set up: which model file is the engine, the graph optimization level at
load, and the CUDA execution provider's options. A measured choice, not a habit.

``engine``     ``optimized``: the model ONNX Runtime writes after optimizing it offline (cached; the file may
               hold layouts and fusions for this device); ``source``: the recipe's model itself.
``load``       the graph optimization level when a runner loads the engine: ``off``, ``basic``,
               ``extended`` or ``all``. Loading the offline-optimized file with ``all`` again lets ONNX
               Runtime apply what it cannot save in a file (on CUDA: 1.18x at batch 1, 1.29x at batch 8 on
               an H100 over loading it with optimizations off).
``conv_algo``  CUDA: cuDNN's convolution algorithm search, ``EXHAUSTIVE`` (ONNX Runtime's default),
               ``HEURISTIC`` or ``DEFAULT``.
``nhwc``       CUDA: ``prefer_nhwc``, channels-last kernels where ONNX Runtime has them (baked into the
               offline-optimized file, so part of its cache key).
``arena``      CUDA: how the memory arena grows, ``power_of_two`` or ``as_requested``.
``stream``     CUDA: ``own``, the runner's stream handed over as ``user_compute_stream`` (what the perf modes'
               events and copies need), or ``ort``, the stream ONNX Runtime makes itself (synchronous runs
               only, as a user's loop has it).

Each ORT backend has its default (:data:`DEFAULTS`: the fastest setup that kept accuracy in
``benchmarks/ort_setup.py``, or where none was faster beyond doubt, the session a user writes: the source model
with ``ORT_ENABLE_ALL``); ``--ort-setup k=v,...`` (ini ``harness_ort_setup``) overrides it for both. The
CUDA-only keys do not apply on the CPU and are left out of its rows. Every row records the setup (``setup``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import HarnessError

LEVELS = {"off": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}
CHOICES: dict[str, tuple[str, ...]] = {
    "engine": ("optimized", "source"),
    "load": tuple(LEVELS),
    "conv_algo": ("EXHAUSTIVE", "HEURISTIC", "DEFAULT"),
    "arena": ("power_of_two", "as_requested"),
    "stream": ("own", "ort"),
}
ARENA_STRATEGY = {"power_of_two": "kNextPowerOfTwo", "as_requested": "kSameAsRequested"}
# ONNX Runtime's CUDA execution provider defaults for the options a setup can change (its documentation)
ORT_CUDA_DEFAULTS = {"cudnn_conv_algo_search": "EXHAUSTIVE", "prefer_nhwc": "0", "arena_extend_strategy": "kNextPowerOfTwo"}
CUDA_ONLY = ("conv_algo", "nhwc", "arena", "stream")
_TRUE, _FALSE = ("yes", "true", "on", "1"), ("no", "false", "off", "0")


def setup_options(text: str, *, where: str = "--ort-setup") -> dict[str, str]:
    """``engine=source,load=off`` as {key: value}, the values as written (``off`` is a level here, not a no)."""
    options: dict[str, str] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"{where}: {item!r} is not key=value")
        options[key.strip()] = value.strip()
    return options


@dataclass(frozen=True)
class OrtSetup:
    engine: str = "optimized"
    load: str = "off"
    conv_algo: str = "EXHAUSTIVE"
    nhwc: bool = False
    arena: str = "power_of_two"
    stream: str = "own"

    def with_options(self, options: Mapping[str, Any] | None, *, where: str = "--ort-setup") -> OrtSetup:
        """This setup with ``options`` ({"load": "all", "nhwc": "yes"}) applied; an unknown key or value is an
        error naming ``where``, the key and what it may be."""
        changes: dict[str, Any] = {}
        names = [f.name for f in dataclasses.fields(self)]
        for key, value in (options or {}).items():
            if key not in names:
                raise HarnessError(f"{where}: unknown ONNX Runtime setup key {key!r}; known: {', '.join(names)}")
            if key == "nhwc":
                text = str(value).lower()
                if not isinstance(value, bool) and text not in _TRUE + _FALSE:
                    raise HarnessError(f"{where}: nhwc must be yes or no, got {value!r}")
                changes[key] = value if isinstance(value, bool) else text in _TRUE
                continue
            text = str(value)
            allowed = CHOICES[key]
            match = next((c for c in allowed if c.lower() == text.lower()), None)
            if match is None:
                raise HarnessError(f"{where}: {key} must be one of {', '.join(allowed)}, got {value!r}")
            changes[key] = match
        return dataclasses.replace(self, **changes)

    @classmethod
    def parse(cls, text: str, *, base: OrtSetup | None = None, where: str = "--ort-setup") -> OrtSetup:
        """``engine=source,load=all,conv_algo=HEURISTIC`` on top of ``base``."""
        return (base or cls()).with_options(setup_options(text, where=where), where=where)

    def describe(self, *, gpu: bool) -> dict[str, Any]:
        """The setup as a row records it (the CUDA keys only for a CUDA backend)."""
        out = dataclasses.asdict(self)
        if not gpu:
            for key in CUDA_ONLY:
                out.pop(key)
        return out

    def file_parts(self, *, gpu: bool) -> dict[str, Any]:
        """What decides the engine file's bytes: part of its cache key. The load level, the convolution
        search, the arena and the stream act when a runner loads it, so they rebuild nothing."""
        return {"engine": self.engine, **({"nhwc": self.nhwc} if gpu and self.engine == "optimized" else {})}

    @property
    def label(self) -> str:
        """"optimized+all", "source+all +nhwc +HEURISTIC": the setup in a few words."""
        defaults = OrtSetup()
        words = [f"{self.engine}+{self.load}"]
        if self.nhwc:
            words.append("+nhwc")
        if self.conv_algo != defaults.conv_algo:
            words.append(f"+{self.conv_algo}")
        if self.arena != defaults.arena:
            words.append(f"+arena:{self.arena}")
        if self.stream != defaults.stream:
            words.append("+ort-stream")
        return " ".join(words)

    def cuda_provider_options(self) -> dict[str, str]:
        """The CUDA execution provider's options this setup sets (strings, as ONNX Runtime takes them): only
        those that differ from ONNX Runtime's own defaults (:data:`ORT_CUDA_DEFAULTS`), so that the default
        setup's session is created exactly as a user's is."""
        wanted = {"cudnn_conv_algo_search": self.conv_algo, "prefer_nhwc": "1" if self.nhwc else "0",
                  "arena_extend_strategy": ARENA_STRATEGY[self.arena]}
        return {k: v for k, v in wanted.items() if ORT_CUDA_DEFAULTS[k] != v}


# The fastest setup that kept accuracy, per backend, from benchmarks/ort_setup.py (README, "Measured").
# ort_cpu: on the 2-core development machine (AMD EPYC) no variant was faster than another beyond doubt, and
# every accuracy row (158, INT8 included) is bit-identical under each; the source model with ORT_ENABLE_ALL is
# the session a user writes, so a row times exactly that (on the encoder at batch 32 the offline-optimized file
# loaded with optimizations off ran 0.960 of a user's loop, the source model 1.025, in alternating repetitions).
# ort_cuda: the H100 table (offline-optimized file loaded with ORT_ENABLE_ALL again: 1.18x at batch 1,
# 1.29x at batch 8 over loading it with optimizations off); `bash benchmarks/gpu_suite.sh setup` measures
# every variant on the GPU at hand, and this is the line to change from its numbers.
DEFAULTS: dict[str, OrtSetup] = {
    "ort_cpu": OrtSetup(engine="source", load="all"),
    "ort_cuda": OrtSetup(engine="optimized", load="all"),
}


def default_setup(backend: str) -> OrtSetup:
    return DEFAULTS.get(backend, OrtSetup())


def variants(*, gpu: bool) -> dict[str, OrtSetup]:
    """The setups benchmarks/ort_setup.py measures: the three ways of preparing the graph, and on CUDA each
    execution-provider option that can matter, on top of the best graph preparation (``optimized+all``)."""
    out = {
        "optimized+off": OrtSetup(engine="optimized", load="off"),
        "optimized+all": OrtSetup(engine="optimized", load="all"),
        "source+all": OrtSetup(engine="source", load="all"),
    }
    if gpu:
        base = OrtSetup(engine="optimized", load="all")
        for change in ({"conv_algo": "HEURISTIC"}, {"conv_algo": "DEFAULT"}, {"nhwc": True},
                       {"arena": "as_requested"}, {"stream": "ort"}, {"engine": "source", "nhwc": True}):
            setup = dataclasses.replace(base, **change)
            out[setup.label] = setup
    return out
