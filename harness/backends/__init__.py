"""Backends by name. Each is imported only when asked for, so a missing library costs nothing."""

from __future__ import annotations

import importlib
from functools import cache

from ..errors import HarnessError
from .base import Backend, Engine, Runner, RunnerOptions

# name -> "module:class"
BACKENDS = {
    "ort_cpu": "harness.backends.ort:OrtCpuBackend",
    "ort_cuda": "harness.backends.ort_cuda:OrtCudaBackend",
    "tensorrt": "harness.backends.tensorrt:TensorRTBackend",
    "tensorrt_rtx": "harness.backends.tensorrt:TensorRTRtxBackend",
}


@cache
def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise HarnessError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    backend: Backend = getattr(importlib.import_module(module), cls)()
    return backend


__all__ = ["BACKENDS", "Backend", "Engine", "Runner", "RunnerOptions", "get_backend"]
