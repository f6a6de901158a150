"""Facts about the machine, for result rows and cache keys.

CPU model, cores and the instruction-set extensions that change results (``harness.cpu_features``), memory,
OS, Python and package versions; GPU name, driver, CUDA version and compute capability through NVML when a GPU
is present (``nvidia-ml-py``). Nothing here imports CUDA itself.

The GPU a row names is the one this process computes on, CUDA's device 0: the first entry of
``CUDA_VISIBLE_DEVICES`` when it is set (a GPU index, a UUID or a UUID's prefix), else the first GPU. NVML
ignores that variable and numbers GPUs as ``nvidia-smi`` does (PCI bus order), so an index is read in that
order, which is CUDA's with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (the harness sets it for the workers it pins:
:mod:`harness.devices`) and, on a host whose GPUs are all alike, without it.
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


def visible_entries(env: dict[str, str] | None = None) -> list[str] | None:
    """The entries of ``CUDA_VISIBLE_DEVICES`` (None when it is not set; [] when it hides every GPU)."""
    value = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    entries = [e.strip() for e in value.split(",")]
    # CUDA stops at the first entry it cannot use; "-1" or "" hide everything
    out = []
    for e in entries:
        if not e or e.startswith("-"):
            break
        out.append(e)
    return out


def find_gpu(entry: str, found: tuple[dict[str, Any], ...]) -> dict[str, Any] | None:
    """The NVML facts of the GPU a ``CUDA_VISIBLE_DEVICES`` entry names: an index, or a UUID (or its prefix)."""
    if entry.isdigit():
        i = int(entry)
        return next((g for g in found if g["index"] == i), None)
    wanted = entry if entry.startswith(("GPU-", "MIG-")) else "GPU-" + entry
    matches = [g for g in found if str(g.get("uuid", "")).startswith(wanted)]
    return matches[0] if len(matches) == 1 else None


def current_gpu() -> dict[str, Any] | None:
    """The NVML facts of CUDA's device 0 in this process (None without a GPU)."""
    return gpu_for(visible_entries(), gpus())


def gpu_for(entries: list[str] | None, found: tuple[dict[str, Any], ...]) -> dict[str, Any] | None:
    """The GPU that CUDA's device 0 is under ``CUDA_VISIBLE_DEVICES`` entries (None: the variable is not set).
    An entry NVML's GPU list does not hold (a MIG instance) on a host whose GPUs are all one model gets that
    model's facts, its entry as UUID and no index."""
    if entries is None:
        return found[0] if found else None
    if not entries:
        return None
    gpu = find_gpu(entries[0], found)
    if gpu is None and found and len({g["name"] for g in found}) == 1:
        gpu = {**found[0], "index": None, "uuid": entries[0]}
    return gpu


def this_gpu_index() -> int:
    """NVML's index of the GPU this process computes on (0 where it cannot tell)."""
    gpu = current_gpu()
    return int(gpu["index"]) if gpu is not None and gpu["index"] is not None else 0


def cpu_ranges(cpus: Any) -> str:
    """{0, 1, 2, 5} -> "0-2,5"."""
    spans: list[list[int]] = []
    for c in sorted(set(cpus)):
        if spans and c == spans[-1][1] + 1:
            spans[-1][1] = c
        else:
            spans.append([c, c])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def parse_cpu_ranges(text: str) -> set[int]:
    """"0-2,5" -> {0, 1, 2, 5}; ValueError for anything else."""
    out: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        a, sep, b = part.partition("-")
        lo, hi = int(a), int(b) if sep else int(a)
        if lo < 0 or hi < lo:
            raise ValueError(part)
        out.update(range(lo, hi + 1))
    return out


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
    try:
        env["cpu_affinity"] = cpu_ranges(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        pass
    if os.environ.get("HARNESS_CPUS_FROM"):  # set by harness.devices for a worker it pinned
        env["cpu_affinity_from"] = os.environ["HARNESS_CPUS_FROM"]
    g = gpus()
    mine = current_gpu()
    if g and mine is not None:
        env.update({"gpu": mine["name"], "gpu_cc": mine["compute_capability"], "driver": mine["driver"],
                    "cuda_driver": mine["cuda_driver"], "gpu_count": len(g), "gpu_uuid": mine["uuid"]})
        if mine["index"] is not None:
            env["gpu_index"] = mine["index"]
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
