"""The builder's timing cache: one file per TensorRT version and device, shared by every build and process.

A build starts from the file's contents. When it ends, the file is read again under its lock and what
other processes saved meanwhile is merged in (``ITimingCache.combine``) before the file is replaced, as
Polygraphy does: pytest-xdist workers building at once each add their tactics instead of overwriting
each other's. The file is replaced atomically, so a crash never leaves half a cache. An unreadable file
is warned about and the build starts from an empty cache.

TensorRT-RTX has no timing cache (its operations are no-ops since RTX 1.2): none is kept there.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock

from ...cache import CacheWarning
from ...errors import BuildError

if TYPE_CHECKING:  # the published stubs (tensorrt_stubs) type every call made on a TensorRT object
    import tensorrt as trt


class TimingCacheFile:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock = FileLock(str(self.path) + ".lock")

    def _read(self) -> bytes:
        with self.lock:
            return self.path.read_bytes() if self.path.is_file() else b""

    def _deserialize(self, config: trt.IBuilderConfig, data: bytes) -> trt.ITimingCache | None:
        try:
            cache: trt.ITimingCache | None = config.create_timing_cache(data)
        except Exception as exc:  # the binding raises on bytes it cannot read
            warnings.warn(CacheWarning(f"timing cache {self.path} is unreadable ({exc}); starting from an empty one"),
                          stacklevel=3)
            return None
        if cache is None:
            warnings.warn(CacheWarning(f"timing cache {self.path} is unreadable; starting from an empty one"),
                          stacklevel=3)
        return cache

    def attach(self, config: trt.IBuilderConfig) -> None:
        """Give the build the file's timing cache (an empty one if there is none yet)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = self._read()
        cache = self._deserialize(config, data) if data else None
        if cache is None:
            cache = config.create_timing_cache(b"")
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            # a cache from another device or version: the file name keys both, so this is a damaged file
            warnings.warn(CacheWarning(f"TensorRT refused timing cache {self.path}; building without its entries"),
                          stacklevel=2)
            if not config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False):
                raise BuildError(f"TensorRT refused an empty timing cache (for {self.path})")

    def save(self, config: trt.IBuilderConfig) -> None:
        """Merge what the file holds now into the build's timing cache, then replace the file with it."""
        cache: trt.ITimingCache | None = config.get_timing_cache()
        if cache is None:
            return
        with self.lock:
            data = self.path.read_bytes() if self.path.is_file() else b""
            if data:
                saved = self._deserialize(config, data)
                if saved is not None and not cache.combine(saved, ignore_mismatch=True):
                    warnings.warn(CacheWarning(f"could not merge timing cache {self.path} into this build's; "
                                               "keeping this build's entries only"), stacklevel=2)
            out = memoryview(cache.serialize()).tobytes()
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.part")
            tmp.write_bytes(out)
            os.replace(tmp, self.path)
