"""The machine's state in a perf row: readings injected into the resource monitor (a fake NVML module, a fake
host) drive the harness's own logic: throttling and an overloaded host are flagged, the rest is recorded."""

from __future__ import annotations

import os
import threading
import time
import types

import pytest

from harness.machine_state import HostReader, machine_cpus
from harness.resources import ResourceMonitor


class FakeNvml:
    """pynvml's names, answering from a script of readings (one per sample; the last repeats)."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0

    last: FakeNvml | None = None  # the newest one, whose script watch() waits for

    def __init__(self, readings, processes=(), *, old_names=False, gpus=1, others_util=40):
        FakeNvml.last = self
        self.readings = list(readings)
        self.sampled = 0
        procs = [types.SimpleNamespace(pid=pid, usedGpuMemory=mb * 2**20) for pid, mb in processes]

        def memory(h):
            self.sampled += 1  # the last query of a sample: the next sample reads the next reading
            return types.SimpleNamespace(used=3 * 2**30)

        def unsupported(h):
            raise RuntimeError("NVMLError_NotSupported")  # a query the device does not answer stays out

        names = {
            "nvmlInit": lambda: None,
            "nvmlDeviceGetHandleByIndex": lambda i: ("gpu", i),
            "nvmlDeviceGetClockInfo": lambda h, kind: self.now()["sm"] if kind == self.NVML_CLOCK_SM else 2619,
            "nvmlDeviceGetMaxClockInfo": lambda h, kind: 1980,
            "nvmlDeviceGetPowerUsage": lambda h: self.now()["mw"],
            "nvmlDeviceGetEnforcedPowerLimit": lambda h: 700_000,
            "nvmlDeviceGetTemperature": lambda h, kind: self.now()["temp"],
            # drivers before 535 only know the "throttle" name
            ("nvmlDeviceGetCurrentClocksThrottleReasons" if old_names else "nvmlDeviceGetCurrentClocksEventReasons"):
                lambda h: self.now()["reasons"],
            "nvmlDeviceGetCount": lambda: gpus,
            # the measured GPU (index 0 here) reads from the script; the host's other GPUs are busy at others_util
            "nvmlDeviceGetUtilizationRates": lambda h: types.SimpleNamespace(
                gpu=self.now().get("util", 90) if h == ("gpu", 0) else others_util),
            "nvmlDeviceGetMemoryInfo": memory,
            "nvmlDeviceGetComputeProcesses": lambda h: procs,
            "nvmlDeviceGetGraphicsProcesses": unsupported,
            "nvmlSystemGetProcessName": lambda pid: f"proc{pid}".encode(),
        }
        for name, fn in names.items():
            setattr(self, name, fn)

    def now(self):
        return self.readings[min(self.sampled, len(self.readings) - 1)]


class FakeHost(HostReader):
    def __init__(self, total: int, own: int, load: float = 0.5, mhz: float | None = 3000.0):
        self.total, self.own, self.load, self.mhz = total, own, load, mhz

    def runnable(self):
        return None if self.total < 0 else (self.total, self.own)

    def load_1m(self):
        return self.load

    def cpu_mhz(self):
        return self.mhz


COOL = {"sm": 1980, "mw": 300_000, "temp": 45, "reasons": 0x0}
IDLE = {**COOL, "reasons": 0x1}


def watch(monitor: ResourceMonitor, seconds: float = 0.05) -> ResourceMonitor:
    """Run the monitor for ``seconds`` and, on a loaded machine, on until a fake GPU's whole script was read."""
    fake = FakeNvml.last
    FakeNvml.last = None
    with monitor:
        time.sleep(seconds)
        deadline = time.monotonic() + 10.0
        while fake is not None and fake.sampled < len(fake.readings) and time.monotonic() < deadline:
            time.sleep(0.01)
    return monitor


def test_a_gpu_slowed_by_heat_is_flagged_with_the_reason_and_its_share_of_samples():
    hot = {"sm": 1410, "mw": 690_000, "temp": 88, "reasons": 0x40 | 0x20}
    nvml = FakeNvml([COOL, hot, hot, hot])
    mon = watch(ResourceMonitor(interval=0.005, gpu_index=0, nvml=nvml, host=FakeHost(2, 2)))
    st = mon.state
    assert st["gpu_sm_mhz_min"] == 1410 and st["gpu_sm_max_mhz"] == 1980 and st["gpu_temp_c_max"] == 88
    assert st["gpu_power_w_max"] == pytest.approx(690) and st["gpu_power_limit_w"] == pytest.approx(700)
    share = st["gpu_reasons"]["thermal (hardware)"]
    assert 0.5 <= share < 1.0 and st["gpu_reasons"]["thermal (software)"] == share  # the first sample was cool
    assert len(mon.flags) == 1 and mon.flags[0].startswith("GPU throttled: thermal (software) in")
    assert "thermal (hardware)" in mon.flags[0] and "SM clock down to 1410 MHz" in mon.flags[0]


@pytest.mark.parametrize("bit, name", [(0x4, "power cap"), (0x8, "hardware slowdown"),
                                       (0x80, "power brake (hardware)")])
def test_power_and_hardware_slowdowns_are_throttling_too(bit, name):
    mon = watch(ResourceMonitor(interval=0.005, gpu_index=0, nvml=FakeNvml([{**COOL, "reasons": bit}], old_names=True),
                                host=FakeHost(1, 1)))
    assert mon.flags == [f"GPU throttled: {name} in 100 % of samples (SM clock down to 1980 MHz)"]


def test_an_idle_gpu_between_launches_is_recorded_but_not_throttling():
    nvml = FakeNvml([IDLE, COOL, {**COOL, "reasons": 0x1 | 0x2 | 0x10 | 0x100}], processes=[(os.getpid(), 900),
                                                                                          (4242, 512)])
    mon = watch(ResourceMonitor(interval=0.005, gpu_index=0, nvml=nvml, host=FakeHost(1, 1)))
    assert mon.flags == []
    assert set(mon.state["gpu_reasons"]) == {"idle", "application clocks", "sync boost", "display clocks"}
    # this process is not "another" one; a query the GPU does not answer is left out, not fatal
    assert mon.state["gpu_other_processes"] == [{"pid": 4242, "name": "proc4242", "mem_mb": 512}]
    assert mon.result["gpu_util"] == 90 and mon.result["gpu_mem_peak_mb"] == 3 * 1024
    assert "gpu_util_by_index" not in mon.result  # one GPU on the host: nothing beside it to show


def test_every_gpu_of_the_host_has_its_utilisation_over_the_window():
    nvml = FakeNvml([COOL], gpus=3, others_util=25)
    mon = watch(ResourceMonitor(interval=0.005, gpu_index=0, nvml=nvml, host=FakeHost(1, 1)))
    assert mon.result["gpu_util_by_index"] == {"0": 90, "1": 25, "2": 25} and mon.result["gpu_util"] == 90


@pytest.mark.parametrize("others, bound, flagged", [(0.0, 1.0, False), (1.0, 1.0, False), (1.5, 1.0, True), (0.5, 0.25, True)])
def test_a_host_whose_other_processes_keep_more_threads_runnable_than_the_bound_is_flagged(others, bound, flagged):
    cores = machine_cpus()
    own = 3  # the harness's own runnable threads never count against it
    host = FakeHost(total=own + round(others * cores), own=own)
    mon = watch(ResourceMonitor(interval=0.005, host=host, max_load=bound))
    load = mon.state["host_other_load_per_cpu"]
    assert load == pytest.approx(round(others * cores) / cores)
    assert bool(mon.flags) == flagged
    if flagged:
        assert mon.flags == [f"host overloaded: other processes kept {load * cores:.1f} threads runnable on {cores} "
                             f"CPUs ({load:.2f} per CPU > {bound:g})"]
    assert mon.state["host_cpu_mhz"] == 3000.0 and mon.state["host_load_1m"] == 0.5
    assert "gpu_samples" not in mon.state  # no GPU asked for: no GPU state


def test_without_linuxs_runnable_count_the_load_average_less_the_harnesss_own_use_decides():
    cores = machine_cpus()
    mon = watch(ResourceMonitor(interval=0.005, host=FakeHost(-1, 0, load=3.0 * cores + 5, mhz=None)))
    assert mon.state["host_other_load_from"] == "load average"
    assert mon.state["host_other_load_per_cpu"] > 2.0 and mon.flags[0].startswith("host overloaded")
    assert "host_cpu_mhz" not in mon.state


def test_the_real_host_reader_counts_this_process_among_the_runnable_threads():
    reader = HostReader()
    got = reader.runnable()
    if got is None:
        pytest.skip("no /proc/loadavg here")
    total, own = got
    assert 1 <= own <= total  # the reading thread itself is running

    spinning = threading.Event()

    def spin():
        while not spinning.is_set():
            pass

    t = threading.Thread(target=spin)
    t.start()
    try:
        counts = [reader.runnable()[1] for _ in range(200)]
    finally:
        spinning.set()
        t.join()
    assert max(counts) >= 2  # a busy thread of ours is seen as runnable (at some sample: the GIL alternates)


def test_rows_measured_with_injected_readings_are_flagged_and_the_clean_one_wins(tmp_path):
    from harness.perf import PerfCase, check_perf
    from harness.perf_report import best_table
    from harness.session import HarnessSession, PerfSettings, Settings
    from tests.helpers import FIXTURES

    # bounds that any run meets, so that only the machine's state can keep a row from winning
    perf = PerfSettings(duration=0.05, warmup=0.01, min_iters=10, max_cv=100.0, max_drift=100.0)
    hs = HarnessSession(Settings(registry=FIXTURES / "models.toml", report_dir=tmp_path / "r",
                                 cache_dir=tmp_path / "c", perf=perf))
    hot = {"sm": 1410, "mw": 690_000, "temp": 90, "reasons": 0x20}
    busy, calm = FakeHost(total=2 + 3 * machine_cpus(), own=2), FakeHost(total=1, own=1)
    runs = [(64, ResourceMonitor(interval=0.005, gpu_index=0, nvml=FakeNvml([hot]), host=calm)),
            (32, ResourceMonitor(interval=0.005, host=busy)),
            (1, ResourceMonitor(interval=0.005, host=calm))]
    rows = {b: check_perf(hs, PerfCase("ranker", "ort_cpu", "fp32", "dynamic", "serial", b), monitor=m) for b, m in runs}
    assert rows[64].state_flags[0].startswith("GPU throttled: thermal (software) in 100 %")
    assert rows[32].state_flags[0].startswith("host overloaded: other processes kept")
    assert rows[1].state_flags == [] and rows[1].quotable and not rows[64].quotable and not rows[32].quotable
    assert rows[64].throughput > rows[1].throughput  # the flagged rows are the faster ones, and still lose
    text, _ = best_table(list(rows.values()))
    assert "| serial b1 (dynamic) " in text and "1 throttled, 1 host overloaded" in text
