"""Facts about the machine, for result rows and cache keys.

CPU model, cores and the instruction-set extensions that change results (``harness.cpu_features``), memory,
OS, Python and package versions; GPU name, driver, CUDA version and compute capability through NVML when a GPU
is present (``nvidia-ml-py``). Nothing here imports CUDA itself.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from importlib import metadata
from typing import Any

from .cpu_features import arch_family, cpu_features, int8_kernels

PACKAGES = ("numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorrt-cu12-bindings",
            "tensorrt-cu13-bindings", "tensorrt-rtx-cu13-bindings", "cuda-bindings", "nvidia-cudnn-cu12",
            "nvidia-cudnn-cu13", "pytest", "pytest-xdist")


@functools.cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    """Cores this process may use (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@functools.cache
def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@functools.cache
def gpus() -> tuple[dict[str, Any], ...]:
    """One dict per visible GPU from NVML; empty when there is no GPU or no NVML."""
    try:
        import pynvml
    except ImportError:
        return ()
    try:
        pynvml.nvmlInit()
    except Exception:  # NVML raises its own error types when no driver is loaded
        return ()
    found = []
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            found.append({
                "index": i,
                "name": _text(pynvml.nvmlDeviceGetName(h)),
                "compute_capability": f"{major}.{minor}",
                "memory_gb": round(mem.total / 2**30, 1),
                "driver": driver,
                "cuda_driver": f"{cuda // 1000}.{(cuda % 1000) // 10}",
                "uuid": _text(pynvml.nvmlDeviceGetUUID(h)),
            })
    except Exception:  # a partial NVML (containers) can fail on any call
        pass
    return tuple(found)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@functools.cache
def environment() -> dict[str, Any]:
    """The flat environment fields every result row carries."""
    try:
        import psutil

        mem = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover - psutil is a dependency
        mem = None
    env: dict[str, Any] = {
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_features": list(cpu_features()),
        "cpu_int8_kernels": int8_kernels(),
        "cores": cpu_count(),
        "memory_gb": mem,
    }
    for name, version in package_versions().items():
        env[f"pkg.{name}"] = version
    g = gpus()
    if g:
        env.update({"gpu": g[0]["name"], "gpu_cc": g[0]["compute_capability"], "driver": g[0]["driver"],
                    "cuda_driver": g[0]["cuda_driver"], "gpu_count": len(g)})
        try:
            from . import cuda

            env["cuda_runtime"] = cuda.runtime_version()
        except Exception:  # cuda-python missing or unusable: NVML's facts stand
            pass
        cudnn = next((v for k, v in package_versions().items() if k.startswith("nvidia-cudnn")), None)
        if cudnn:
            env["cudnn"] = cudnn
    return env


def cpu_device() -> dict[str, Any]:
    """The CPU's identity for cache keys: an ORT CPU engine may hold ISA-specific layouts and kernels (NCHWc
    blocks of 8 on AVX2, 16 on AVX-512), and two CPUs sold under one model name can differ in them."""
    return {"type": "cpu", "model": cpu_model(), "arch": platform.machine(), "family": arch_family(),
            "features": list(cpu_features()), "python": sys.implementation.name}
