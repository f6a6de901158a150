"""CPU, memory and GPU use during a measurement, and the machine's state, sampled by a background thread.

CPU utilisation is this process's CPU time over the window divided by wall time and by the cores it may
use (100 % = every core busy); peak RSS is sampled. On a GPU machine NVML gives utilisation (mean of the
samples) and device memory used (peak), for the GPU the backend runs on (``gpu_index``: NVML's numbering),
and the mean utilisation of every GPU on the host over the same window (``gpu_util_by_index``), which shows
whether the other GPUs were busy at the same time (one pytest-xdist worker per GPU: harness.devices). The
machine's state (clocks, power, temperature, throttle reasons, other GPU processes; host load and CPU
frequency) and the flags that keep a row from being quoted come from :mod:`harness.machine_state`.

What the sampler costs the measurement: one wake-up per ``interval`` (0.1 s), a few NVML queries and small
``/proc`` reads, each of which releases the GIL while the kernel or the driver works; the CPU frequency
(which reads ``/proc/cpuinfo``, slow on large machines) only at the start and the end. The sampling thread
runs under SCHED_IDLE, so that its wake-ups never take a CPU from a measured thread.
``benchmarks/overhead.py`` measures the row path, sampler included, against a user's loop.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from .environment import cpu_count
from .machine_state import GpuReader, HostReader, MachineState, machine_cpus


def _yield_to_the_measurement() -> None:
    """Put the sampling thread under Linux's SCHED_IDLE policy: when it wakes it never preempts a thread of
    normal priority (a runner thread, ONNX Runtime's pool), it runs on a CPU those leave free. On a busy
    machine a woken sampler would otherwise push one of the measured threads off its CPU, and a parallel
    operator waits for its slowest thread: up to 8 % of a batch-32 classifier's throughput on 2 loaded CPUs.
    Where the policy is not available the thread keeps its priority."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # pid 0: this thread (Linux)
    except (AttributeError, OSError):  # not Linux, or not allowed
        pass


class ResourceMonitor:
    """Samples while used as a context manager; afterwards ``result`` (resources), ``state`` (the machine's
    state) and ``flags`` (why the window's numbers cannot be quoted) hold the window's summary.

    ``nvml`` and ``host`` replace the readers (pynvml, ``/proc``) with others giving the same answers: tests
    inject readings through them. ``max_load``: other processes' runnable threads per CPU above which the
    host counts as overloaded."""

    def __init__(self, interval: float = 0.1, gpu_index: int | None = None, *, nvml: Any = None,
                 host: HostReader | None = None, max_load: float = 1.0):
        self.interval = interval
        self.gpu_index = gpu_index
        self._nvml_module = nvml
        self._host = host or HostReader()
        self.max_load = max_load
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rss_peak = 0
        self._gpu: GpuReader | None = None
        self._state = MachineState(cores=machine_cpus(), max_load=max_load)
        self.result: dict[str, Any] = {}
        self.state: dict[str, Any] = {}
        self.flags: list[str] = []

    def __enter__(self) -> ResourceMonitor:
        import psutil

        self._proc = psutil.Process()
        self._cpu0 = self._proc.cpu_times()
        self._t0 = time.perf_counter()
        self._stop.clear()
        self._state = MachineState(cores=machine_cpus(), max_load=self.max_load)
        mhz = self._host.cpu_mhz()
        if mhz:
            self._state.cpu_mhz.append(mhz)
        if self.gpu_index is not None:
            try:
                nvml = self._nvml_module
                if nvml is None:
                    import pynvml

                    nvml = pynvml
                self._gpu = GpuReader(nvml, self.gpu_index)
                self._state.gpu_fixed = self._gpu.fixed()
            except Exception:  # no NVML: GPU columns stay empty
                self._gpu = None
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="harness-resources", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        _yield_to_the_measurement()
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        try:
            self._rss_peak = max(self._rss_peak, self._proc.memory_info().rss)
        except Exception:  # the process table can hiccup in containers
            pass
        self._state.add_host(self._host.runnable())
        if self._gpu is not None:
            self._state.gpu_samples.append(self._gpu.sample())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        wall = time.perf_counter() - self._t0
        cpu1 = self._proc.cpu_times()
        busy = (cpu1.user - self._cpu0.user) + (cpu1.system - self._cpu0.system)
        st = self._state
        st.load_1m = self._host.load_1m()
        mhz = self._host.cpu_mhz()
        if mhz:
            st.cpu_mhz.append(mhz)
        self.result = {
            "cpu_util": 100.0 * busy / wall / cpu_count() if wall > 0 else None,
            "rss_peak_mb": self._rss_peak / 2**20,
        }
        if self._gpu is not None:
            st.gpu_processes = self._gpu.other_processes(os.getpid())
            util = [s["util"] for s in st.gpu_samples if s.get("util") is not None]
            used = [s["mem_used"] for s in st.gpu_samples if s.get("mem_used") is not None]
            self.result["gpu_util"] = sum(util) / len(util) if util else None
            self.result["gpu_mem_peak_mb"] = max(used) / 2**20 if used else None
            by_index: dict[int, list[float]] = {}
            for s in st.gpu_samples:
                for i, u in enumerate(s.get("util_by_index") or []):
                    if u is not None:
                        by_index.setdefault(i, []).append(u)
            if len(by_index) > 1:
                self.result["gpu_util_by_index"] = {str(i): sum(u) / len(u) for i, u in by_index.items()}
        self.state = st.summary(own_cores=busy / wall if wall > 0 else None)
        self.flags = st.flags(self.state)
