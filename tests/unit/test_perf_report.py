"""The perf report's verdicts: only a quotable row (stable, machine not flagged) wins; the CV shown is the one
that decides stability; a run too short for the drift check says so; GPU rows show the breakdown and state."""

from __future__ import annotations

from harness.perf_report import best_table, breakdown_table, gpu_state_table, perf_sections, perf_table
from harness.rows import PerfRow

THROTTLED = "GPU throttled: thermal (hardware) in 40 % of samples (SM clock down to 1410 MHz)"
OVERLOADED = "host overloaded: other processes kept 9.0 threads runnable on 2 CPUs (4.50 per CPU > 1)"


def row(mode="serial", batch=1, rate=100.0, *, n=1, stable=True, flags=(), cv=0.05, cv_robust=0.02, notes=(),
        backend="ort_cpu", **more):
    return PerfRow(model="m", backend=backend, recipe="fp32", profile="dynamic", mode=mode, batch=batch,
                   concurrency=n, throughput=rate, status="pass" if stable else "unstable", stable=stable,
                   unstable_reasons=[] if stable else ["latency CV 0.41 (robust) > 0.25"], cv=cv, cv_robust=cv_robust,
                   state_flags=list(flags), stability_notes=list(notes), latency_ms={"p50": 1.0, "p99": 2.0},
                   state={"host_other_load_per_cpu": 0.2}, **more)


def best_config(text: str) -> str:
    line = next(x for x in text.splitlines() if x.startswith("| m "))
    return [c.strip() for c in line.strip("|").split("|")][4]


def test_throttled_overloaded_and_unstable_rows_never_win_even_when_fastest():
    rows = [row(rate=100.0), row(batch=8, rate=900.0, flags=[THROTTLED]), row(batch=8, mode="threadpool", n=2,
            rate=800.0, flags=[OVERLOADED]), row(batch=32, rate=700.0, stable=False), row(batch=4, rate=300.0)]
    text, _ = best_table(rows)
    assert best_config(text) == "serial b4 (dynamic)"
    assert "| 300 " in text and "3.00x" in text
    assert "1 throttled, 1 host overloaded, 1 unstable" in text


def test_a_group_without_a_quotable_row_says_none_won_and_why():
    text, notes = best_table([row(rate=500.0, stable=False), row(batch=8, rate=900.0, flags=[THROTTLED])])
    assert best_config(text) == "none: no quotable row of 2"
    assert "1 unstable, 1 throttled" in text and notes == []


def test_the_cv_shown_is_the_robust_one_that_decides_stability():
    # a plain CV of 1.1 with a robust one of 0.02: stable, and the table must not show 1.1 beside "yes"
    text = perf_table([row(cv=1.1, cv_robust=0.02)])
    assert "CV (robust)" in text and "| 0.02 " in text and "1.1" not in text


def test_a_run_too_short_for_the_drift_check_says_so():
    note = "drift not checked: the stop rule ended the run after 20 iterations, fewer than the 50 (10 per window)"
    text = perf_table([row(notes=[note]), row(batch=8)])
    assert text.count("yes (drift unchecked)") == 1
    assert "| **host overloaded** |" in perf_table([row(flags=[OVERLOADED])])


def test_gpu_rows_show_the_breakdown_and_the_gpus_state():
    b = {"h2d": {"p50": 0.05}, "compute": {"p50": 0.2}, "d2h": {"p50": 0.01}, "enqueue": {"p50": 0.08},
         "latency": {"p50": 0.26}, "iterations": 40}
    state = {"gpu_samples": 6, "gpu_sm_mhz": 1900.0, "gpu_sm_mhz_min": 1410, "gpu_mem_mhz": 2619.0,
             "gpu_power_w": 350.6, "gpu_power_limit_w": 700.0, "gpu_temp_c_max": 88,
             "gpu_reasons": {"idle": 0.5, "thermal (hardware)": 0.4}, "gpu_other_processes": [{"pid": 7}]}
    gpu = row(backend="ort_cuda", sync="block", breakdown_ms=b, throughput_compute=5000.0,
              throughput_transfers=3846.0, flags=[THROTTLED])
    gpu.state = state
    text = breakdown_table([gpu, row()])
    assert len([x for x in text.splitlines() if x.startswith("| ort_")]) == 1  # the CPU row has no breakdown
    assert "serial +block" in text and "| 5,000 " in text and "| 3,846 " in text and "| 0.2 " in text
    st = gpu_state_table([gpu])
    assert "1900 (min 1410)" in st
    assert "351 / 700" in st and "thermal (hardware) 40 %" in st and "**throttled**" in st
    section = "\n".join(perf_sections([gpu])[0])
    assert "trtexec's breakdown" in section and "The GPU during the run" in section
