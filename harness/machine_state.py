"""The machine's state while a measurement runs, and whether its numbers can be quoted.

Sampled by :class:`~harness.resources.ResourceMonitor`'s thread during a perf mode's run:

GPU (NVML, the backend's GPU)  SM and memory clocks, power draw (and the enforced limit), temperature, the
                               clock event ("throttle") reasons, and the other processes using the GPU.
host                           runnable threads of other processes, the 1-minute load average, CPU frequency.

**Throttled**: a throttling reason (software power cap, hardware slowdown, software or hardware thermal
slowdown, hardware power brake) in any sample of the window. Idle, application-clock, sync-boost and
display-clock reasons are not throttling.

**Overloaded host**: other processes' runnable threads per CPU, averaged over the window, above
``max_load`` (``--perf-max-load``, 1.0). Linux counts runnable threads machine-wide (``/proc/loadavg``'s
"running/total"), so they are divided by the CPUs the kernel has (not this process's affinity set: in a
container pinned to a few CPUs of a large host, threads elsewhere are not its competition); the harness's own
(``/proc/self/task/*/stat`` in state R: its runner threads, ONNX Runtime's pools, this sampler) are
subtracted, so that the harness's own load never flags it. At 1.0, other processes keep as many threads busy
as there are CPUs: the harness gets half the machine at best. The 1-minute load average is recorded too, but
it lags a half-second window and counts the harness itself; it is the fallback where the runnable count
cannot be read (not Linux).

A flagged row is warned about (``PerfDisturbed``), never chosen as a "winner" in the report, and inconclusive
in ``compare``. Readers are small objects so that tests can inject readings (a fake NVML module, a fake host).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# NVML's clock event reason bits (nvmlClocksEventReason*, formerly nvmlClocksThrottleReason*)
REASONS = {0x1: "idle", 0x2: "application clocks", 0x4: "power cap", 0x8: "hardware slowdown", 0x10: "sync boost",
           0x20: "thermal (software)", 0x40: "thermal (hardware)", 0x80: "power brake (hardware)",
           0x100: "display clocks"}
THROTTLING = 0x4 | 0x8 | 0x20 | 0x40 | 0x80
THROTTLE_NAMES = {name for bit, name in REASONS.items() if bit & THROTTLING}


def machine_cpus() -> int:
    """The CPUs the kernel has: what machine-wide counts of runnable threads compete for."""
    return os.cpu_count() or 1


def _try(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except Exception:  # NVML raises NVMLError_NotSupported & co. per query; /proc can vanish under us
        return None


class HostReader:
    """Reads the host: runnable threads (machine-wide and this process's), load average, CPU frequency."""

    def runnable(self) -> tuple[int, int] | None:
        """(runnable threads machine-wide, this process's runnable threads), None where Linux's counts are
        not readable."""
        try:
            with open("/proc/loadavg") as f:
                total = int(f.read().split()[3].split("/")[0])
            own = 0
            for tid in os.listdir("/proc/self/task"):
                try:
                    with open(f"/proc/self/task/{tid}/stat") as f:
                        stat = f.read()
                except OSError:  # the thread ended meanwhile
                    continue
                own += stat[stat.rindex(")") + 2] == "R"
            return total, own
        except (OSError, ValueError, IndexError):
            return None

    def load_1m(self) -> float | None:
        return _try(lambda: os.getloadavg()[0])

    def cpu_mhz(self) -> float | None:
        import psutil

        freq = _try(psutil.cpu_freq)
        return float(freq.current) if freq and freq.current else None


class GpuReader:
    """Reads one GPU through NVML (``nvml``: the pynvml module, or a fake with its names)."""

    def __init__(self, nvml: Any, index: int):
        self.nvml = nvml
        nvml.nvmlInit()
        self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
        # every GPU of the host, for the utilisation of the others during the window (gpu_util_by_index)
        count = _try(lambda: nvml.nvmlDeviceGetCount()) or 0
        self.all = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]

    def _clock(self, kind: str, default: int) -> Any:
        return getattr(self.nvml, kind, default)

    def sample(self) -> dict[str, Any]:
        n, h = self.nvml, self.handle
        reasons = getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            getattr(n, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
        out: dict[str, Any] = {
            "sm_mhz": _try(lambda: n.nvmlDeviceGetClockInfo(h, self._clock("NVML_CLOCK_SM", 1))),
            "mem_mhz": _try(lambda: n.nvmlDeviceGetClockInfo(h, self._clock("NVML_CLOCK_MEM", 2))),
            "power_w": _try(lambda: n.nvmlDeviceGetPowerUsage(h) / 1e3),
            "temp_c": _try(lambda: n.nvmlDeviceGetTemperature(h, self._clock("NVML_TEMPERATURE_GPU", 0))),
            "reasons": _try(lambda: reasons(h)) if reasons else None,
            "util": _try(lambda: float(n.nvmlDeviceGetUtilizationRates(h).gpu)),
        }
        out["mem_used"] = _try(lambda: int(n.nvmlDeviceGetMemoryInfo(h).used))
        if len(self.all) > 1:
            out["util_by_index"] = [_try(lambda: float(n.nvmlDeviceGetUtilizationRates(g).gpu))  # noqa: B023
                                    for g in self.all]
        return out

    def fixed(self) -> dict[str, Any]:
        """What does not change during a window: the power limit and the SM clock's maximum."""
        n, h = self.nvml, self.handle
        limit = _try(lambda: n.nvmlDeviceGetEnforcedPowerLimit(h))
        return {"power_limit_w": limit / 1e3 if limit is not None else None,
                "sm_max_mhz": _try(lambda: n.nvmlDeviceGetMaxClockInfo(h, self._clock("NVML_CLOCK_SM", 1)))}

    def other_processes(self, own_pid: int) -> list[dict[str, Any]]:
        """Processes with a context on this GPU besides this one (pid, name where visible, memory MB)."""
        n, h = self.nvml, self.handle
        found: dict[int, dict[str, Any]] = {}
        for query in ("nvmlDeviceGetComputeProcesses", "nvmlDeviceGetGraphicsProcesses"):
            listed: Any = _try(lambda: getattr(n, query)(h))  # noqa: B023 - called at once, in this iteration
            for p in listed or []:
                if p.pid == own_pid or p.pid in found:
                    continue
                used = getattr(p, "usedGpuMemory", None)
                name: Any = _try(lambda: n.nvmlSystemGetProcessName(p.pid))  # noqa: B023 - called at once
                found[p.pid] = {"pid": int(p.pid), "name": name.decode() if isinstance(name, bytes) else name,
                                "mem_mb": round(used / 2**20) if isinstance(used, int) else None}
        return list(found.values())


@dataclass
class MachineState:
    """Samples of one window, summarized into a row's ``state`` and ``state_flags``."""

    cores: int
    max_load: float = 1.0
    gpu_samples: list[dict[str, Any]] = field(default_factory=list)
    gpu_fixed: dict[str, Any] = field(default_factory=dict)
    others: list[int] = field(default_factory=list)  # other processes' runnable threads, per sample
    load_1m: float | None = None
    cpu_mhz: list[float] = field(default_factory=list)
    gpu_processes: list[dict[str, Any]] | None = None

    def add_host(self, runnable: tuple[int, int] | None) -> None:
        if runnable is not None:
            total, own = runnable
            self.others.append(max(0, total - own))

    def other_load(self) -> float | None:
        """Other processes' runnable threads per CPU over the window (None where Linux's counts were not
        readable: the summary then falls back on the load average, less this process's CPU use)."""
        if self.others:
            return sum(self.others) / len(self.others) / self.cores
        return None

    def summary(self, own_cores: float | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"host_load_1m": self.load_1m, "host_cpus": self.cores}
        load = self.other_load()
        if load is None and self.load_1m is not None:
            load = max(0.0, self.load_1m - (own_cores or 0.0)) / self.cores
            out["host_other_load_from"] = "load average"
        out["host_other_load_per_cpu"] = load
        if self.cpu_mhz:
            out["host_cpu_mhz"] = sum(self.cpu_mhz) / len(self.cpu_mhz)
        g = self.gpu_samples
        if g or self.gpu_fixed:
            # the mean of each, and the extreme that matters: the lowest clock, the highest power and heat
            for key, extreme, suffix in (("sm_mhz", min, "_min"), ("mem_mhz", min, "_min"),
                                         ("power_w", max, "_max"), ("temp_c", max, "_max")):
                values = [s[key] for s in g if s.get(key) is not None]
                if values:
                    out[f"gpu_{key}"] = sum(values) / len(values)
                    out[f"gpu_{key}{suffix}"] = extreme(values)
            out.update({f"gpu_{k}": v for k, v in self.gpu_fixed.items() if v is not None})
            masks = [s["reasons"] for s in g if s.get("reasons") is not None]
            if masks:
                out["gpu_reasons"] = {name: round(sum(1 for m in masks if m & bit) / len(masks), 3)
                                      for bit, name in REASONS.items() if any(m & bit for m in masks)}
            if self.gpu_processes is not None:
                out["gpu_other_processes"] = self.gpu_processes
            out["gpu_samples"] = len(g)
        return out

    def flags(self, summary: dict[str, Any]) -> list[str]:
        """Why this window's numbers cannot be quoted: throttling, an overloaded host; [] when they can."""
        out = []
        throttled = {name: share for name, share in (summary.get("gpu_reasons") or {}).items()
                     if name in THROTTLE_NAMES}
        if throttled:
            sm = summary.get("gpu_sm_mhz_min")
            out.append("GPU throttled: " + ", ".join(f"{name} in {100 * share:.0f} % of samples"
                                                     for name, share in throttled.items())
                       + (f" (SM clock down to {sm:.0f} MHz)" if sm else ""))
        load = summary.get("host_other_load_per_cpu")
        if load is not None and load > self.max_load:
            out.append(f"host overloaded: other processes kept {load * self.cores:.1f} threads runnable on "
                       f"{self.cores} CPUs ({load:.2f} per CPU > {self.max_load:g})")
        return out
