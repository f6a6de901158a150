"""The station table: speed-up over the serial row of the same batch, the best stable mode marked, the frame
rate held or not, GPU memory with its rise; rows read back through the typed schema."""

from __future__ import annotations

import re

from harness.rows import StationRow, junit_properties, parse_row
from harness.stations.report import best_rows, speedups, station_section

MEMBERS = [{"model": "det", "recipe": "fp32", "profile": "dynamic"}] * 2 + [
    {"model": "cls", "recipe": "fp32", "profile": "dynamic"}]


def row(mode: str, batch: int, cycle_ms: float, *, stable: bool = True, gpu: dict | None = None,
        p99: float | None = None) -> StationRow:
    r = StationRow(id=f"station-pair-ort_cuda-fp32-{mode}-b{batch}", model="pair", backend="ort_cuda", recipe="fp32",
                   profile="dynamic", mode=mode, batch=batch, members=MEMBERS, fps_target=25.0,
                   status="pass" if stable else "unstable", stable=stable, throughput=1e3 / cycle_ms * batch,
                   fps=1e3 / cycle_ms, latency_ms={"mean": cycle_ms, "p50": cycle_ms, "p99": p99 or cycle_ms * 1.2},
                   resources={"cpu_util": 30.0, **(gpu or {})}, threads_per_runner=None)
    if mode == "serial":
        r.member_ms = [cycle_ms * 0.45, cycle_ms * 0.45, cycle_ms * 0.1]
    return r


def test_speed_up_is_against_the_serial_row_of_the_same_batch_and_only_stable_rows_win():
    rows = [row("serial", 1, 30.0), row("threadpool", 1, 15.0), row("merged", 1, 10.0, stable=False),
            row("serial", 8, 200.0), row("multistream", 8, 100.0), row("threadpool", 8, 80.0)]
    ups = speedups(rows)
    assert ups["station-pair-ort_cuda-fp32-threadpool-b1"] == 2.0
    assert ups["station-pair-ort_cuda-fp32-threadpool-b8"] == 2.5 and ups["station-pair-ort_cuda-fp32-serial-b8"] == 1.0
    # merged was faster at batch 1 but unstable: it wins nothing
    assert best_rows(rows) == {"station-pair-ort_cuda-fp32-threadpool-b1", "station-pair-ort_cuda-fp32-threadpool-b8"}
    assert speedups([row("threadpool", 4, 10.0)]) == {"station-pair-ort_cuda-fp32-threadpool-b4": None}


def test_the_section_shows_the_seeds_columns_with_gpu_memory_and_the_frame_rate_held():
    gpu = {"gpu_mem_peak_mb": 3400.0, "gpu_mem_before_mb": 900.0, "gpu_util": 55.0}
    rows = [row("serial", 18, 65.0, gpu=gpu), row("threadpool", 18, 21.0, gpu=gpu, p99=39.0)]
    text = "\n".join(station_section(list(rows)))
    assert "### pair: det, det, cls (dynamic; must hold 25 fps)" in text
    header = next(line for line in text.splitlines() if line.startswith("| backend"))
    assert [h.strip() for h in header.strip("|").split("|")] == [
        "backend", "recipe", "batch", "mode", "cycle ms", "p99 ms", "serial ms", "speed-up", "frames/s",
        "holds 25 fps", "GPU MB", "CPU %", "GPU util %", "threads", "stable", ""]
    pool = next(line for line in text.splitlines() if line.startswith("| ort_cuda") and "threadpool" in line)
    cells = [c.strip() for c in pool.strip("|").split("|")]
    assert cells[4:11] == ["21", "39", "65", "3.10x", "47.6", "yes", "3400 (+2500)"] and cells[-1] == "**best**"
    serial = next(line for line in text.splitlines() if re.match(r"\| ort_cuda .*\| serial ", line))
    assert "| **no** " in serial  # p99 78 ms > 40 ms: 25 fps not held
    assert "- serial ort_cuda fp32 b18: det 29.2 + det 29.2 + cls 6.5 ms" in text


def test_without_a_gpu_the_gpu_columns_are_left_out():
    text = "\n".join(station_section([row("serial", 1, 30.0)]))
    assert "GPU MB" not in text.split("| backend")[1].splitlines()[0] and "| CPU %" in text


def test_station_rows_round_trip_through_the_schema_and_carry_their_numbers():
    r = row("threadpool", 8, 80.0)
    back = parse_row(r.to_dict(), "rows.jsonl:1")
    assert isinstance(back, StationRow) and back == r and back.key() == r.key()
    assert back.case_key() == ("station", "pair", "ort_cuda", "fp32", "dynamic", "threadpool", "8", "True", "False")
    props = dict(junit_properties(back))
    assert props["fps"] == "12.5" and props["cycle_mean_ms"] == "80" and props["stable"] == "yes"
