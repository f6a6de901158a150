"""The TensorRT Python module: finding it, what its version can do, the wheels it came from, its logger.

The harness never branches on a version number where it can ask the module: weak typing exists where
``BuilderFlag.FP16`` and the INT8 calibrators do (TensorRT 10; removed in 11, absent from TensorRT-RTX);
strongly typed networks are asked for with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` wherever that
flag exists (its value is 1 in TensorRT 10, 0 in 11 and RTX, where it is always on and kept for
compatibility, and trtexec still passes it).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import re
from collections import deque
from typing import Any

from ...errors import BackendUnavailable

MIN_MAJOR = 10  # execute_async_v3 with shared optimization profiles and strongly typed networks


def major(version: str) -> int:
    m = re.match(r"(\d+)", version)
    return int(m.group(1)) if m else 0


def load_module(candidates: tuple[str, ...], *, min_major: int = 0) -> Any:
    """The first of ``candidates`` that imports as a usable TensorRT module; BackendUnavailable saying why
    each one is not."""
    problems = []
    for name in candidates:
        try:
            mod = importlib.import_module(name)
        except Exception as exc:  # ImportError, or the libraries' OSError
            problems.append(f"{name} cannot be imported: {type(exc).__name__}: {exc}")
            continue
        if not hasattr(mod, "Builder"):  # e.g. only tensorrt_stubs' .pyi files: an empty namespace
            problems.append(f"{name} cannot be imported: ImportError: {name} has no Builder (type stubs only? the "
                            "TensorRT libraries are not installed)")
            continue
        version = str(getattr(mod, "__version__", "0"))
        if major(version) < min_major:
            problems.append(f"{name} {version} is older than {min_major}: the harness needs TensorRT {min_major} or "
                            "newer (shared optimization profiles, strongly typed networks)")
            continue
        return mod
    raise BackendUnavailable("; ".join(problems))


def has_weak_typing(mod: Any) -> bool:
    """TensorRT 10's FP16/INT8 builder flags and INT8 calibrators (removed in 11; TensorRT-RTX never had them)."""
    flags = mod.BuilderFlag
    return hasattr(flags, "FP16") and hasattr(flags, "INT8") and hasattr(mod, "IInt8EntropyCalibrator2")


def network_flags(mod: Any, *, strongly_typed: bool) -> int:
    """Flags for ``Builder.create_network``. ``EXPLICIT_BATCH`` is never set: ignored since TensorRT 10,
    removed in 11. Without ``strongly_typed`` (the legacy path) the network is weakly typed: 0."""
    if not strongly_typed:
        return 0
    flag = getattr(mod.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 1 << int(flag) if flag is not None else 0


@functools.cache
def cuda_wheel(module_name: str) -> str:
    """The CUDA major version of the wheels that installed ``module_name`` ("cu12", "cu13"), read from their
    distribution names (tensorrt-cu12-libs, tensorrt_rtx_cu13_bindings...): the same TensorRT version is
    published for CUDA 12 and 13, and their plans are not interchangeable. "unknown" for an install that
    is not from such wheels (e.g. a tarball's wheel)."""
    base = module_name.removesuffix("_bindings")
    tops = {module_name, base, f"{base}_bindings", f"{base}_libs"}
    dists = importlib.metadata.packages_distributions()
    found = set()
    for top in tops:
        for dist in dists.get(top, []):
            m = re.search(r"[-_]cu(\d+)(?:[-_]|$)", dist.lower())
            if m:
                found.add(int(m.group(1)))
    return "+".join(f"cu{v}" for v in sorted(found)) or "unknown"


def make_logger(mod: Any) -> Any:
    """An ``ILogger`` that keeps TensorRT's last error messages, so that failures can quote them."""

    class Logger(mod.ILogger):
        def __init__(self) -> None:
            mod.ILogger.__init__(self)
            self.errors: deque[str] = deque(maxlen=20)

        def log(self, severity: Any, msg: str) -> None:
            if severity in (mod.ILogger.INTERNAL_ERROR, mod.ILogger.ERROR):
                self.errors.append(str(msg).strip())

    return Logger()


def failure_message(backend: str, logger: Any, what: str) -> str:
    """``what`` failed, with TensorRT's last error messages (which are then forgotten)."""
    errors = list(logger.errors)
    logger.errors.clear()
    if not errors:
        return f"{backend}: {what} failed (TensorRT gave no message)"
    return f"{backend}: {what} failed:\n" + "\n".join(f"  {e}" for e in errors[-5:])
