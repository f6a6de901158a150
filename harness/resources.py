"""CPU, memory and GPU use during a measurement, sampled by a background thread.

CPU utilisation is this process's CPU time over the window divided by wall time and by the cores it may
use (100 % = every core busy); peak RSS is sampled. On a GPU machine NVML gives utilisation (mean of the
samples) and device memory used (peak), for the GPU the backend runs on (``gpu_index``: NVML's numbering),
and the mean utilisation of every GPU on the host over the same window (``gpu_util_by_index``), which shows
whether the other GPUs were busy at the same time (one pytest-xdist worker per GPU: harness.devices).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .environment import cpu_count


class ResourceMonitor:
    def __init__(self, interval: float = 0.05, gpu_index: int | None = None):
        self.interval = interval
        self.gpu_index = gpu_index
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rss_peak = 0
        self._gpu_util: list[float] = []
        self._gpu_mem_peak = 0
        self._nvml: Any = None
        self._handle: Any = None
        self._all: list[Any] = []  # every GPU's handle, for gpu_util_by_index
        self._all_util: dict[int, list[float]] = {}
        self.result: dict[str, Any] = {}

    def __enter__(self) -> ResourceMonitor:
        import psutil

        self._proc = psutil.Process()
        self._cpu0 = self._proc.cpu_times()
        self._t0 = time.perf_counter()
        if self.gpu_index is not None:
            try:
                import pynvml

                pynvml.nvmlInit()
                self._nvml = pynvml
                self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.gpu_index)
                self._all = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            except Exception:  # no NVML: GPU columns stay empty
                self._nvml = None
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="harness-resources", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        try:
            self._rss_peak = max(self._rss_peak, self._proc.memory_info().rss)
        except Exception:  # the process table can hiccup in containers
            pass
        if self._nvml is not None:
            try:
                self._gpu_util.append(float(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))
                used = self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used
                self._gpu_mem_peak = max(self._gpu_mem_peak, int(used))
                for i, h in enumerate(self._all):
                    self._all_util.setdefault(i, []).append(float(self._nvml.nvmlDeviceGetUtilizationRates(h).gpu))
            except Exception:
                pass

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        wall = time.perf_counter() - self._t0
        cpu1 = self._proc.cpu_times()
        busy = (cpu1.user - self._cpu0.user) + (cpu1.system - self._cpu0.system)
        self.result = {
            "cpu_util": 100.0 * busy / wall / cpu_count() if wall > 0 else None,
            "rss_peak_mb": self._rss_peak / 2**20,
        }
        if self._nvml is not None:
            self.result["gpu_util"] = sum(self._gpu_util) / len(self._gpu_util) if self._gpu_util else None
            self.result["gpu_mem_peak_mb"] = self._gpu_mem_peak / 2**20
            if len(self._all_util) > 1:
                self.result["gpu_util_by_index"] = {str(i): sum(u) / len(u) for i, u in self._all_util.items() if u}
