"""The station suite as users run it (`pytest -m perf`, station cases): rows, the report's station table and
plot, a comparison of two runs; on a registry of small models so that it takes seconds."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from harness.backends import get_backend
from harness.rows import SCHEMA_VERSION
from tests.helpers import ROOT, mlp_model, write_registry

REGISTRY = """
[models.det]
path = "det.onnx"
[models.det.profiles]
dynamic = { min = "x:1x8", opt = "x:4x8", max = "x:64x8" }

[models.cls]
path = "cls.onnx"
[models.cls.profiles]
dynamic = { min = "x:1x8", opt = "x:8x8", max = "x:64x8" }

[stations.pair]
models = ["det", "det", "cls"]
batches = [1, 32]
fps = 50
"""
QUICK = ("-m", "perf", "-k", "test_station", "--perf-duration=0.1", "--perf-warmup=0.02", "--backends=ort_cpu")
MODES = ("serial", "multistream", "threadpool", "merged")


def test_every_mode_of_a_station_is_timed_into_rows_a_table_and_a_plot(project):
    mlp_model(project.path / "det.onnx", seed=1)
    mlp_model(project.path / "cls.onnx", seed=2, hidden=64)
    registry = write_registry(project.path, REGISTRY)
    result = project.run(*QUICK, registry=registry)
    result.assert_outcomes(passed=8)
    rows = project.results()
    assert {r["id"] for r in rows} == {f"station-pair-ort_cpu-fp32-{m}-b{b}" for m in MODES for b in (1, 32)}
    for r in rows:
        assert r["type"] == "station" and r["schema"] == SCHEMA_VERSION and r["model"] == "pair" and r["fps_target"] == 50
        assert r["members"] == [{"model": m, "recipe": "fp32", "profile": "dynamic"} for m in ("det", "det", "cls")]
        assert r["iterations"] >= 20 and r["fps"] > 0 and r["throughput"] == pytest.approx(r["fps"] * r["batch"], rel=0.05)
        assert r["latency_ms"]["p50"] <= r["latency_ms"]["p99"] and r["resources"]["cpu_util"] is not None
        assert sum(n for _, n in r["latency_hist"]["bins"]) == r["iterations"]
        assert r["runners"] == (1 if r["mode"] == "merged" else 3)
        assert r["runner"]["intra_op_spinning"] is False
    serial = next(r for r in rows if r["mode"] == "serial" and r["batch"] == 1)
    assert len(serial["member_ms"]) == 3 and sum(serial["member_ms"]) <= serial["latency_ms"]["mean"] * 1.05
    merged = next(r for r in rows if r["mode"] == "merged" and r["batch"] == 32)
    assert merged["merged"]["check"]["passed"] and merged["merged"]["check"]["max_rel_l2"] <= 1e-5
    assert [o["output"] for o in merged["merged"]["check"]["outputs"]] == ["m0.det/y", "m1.det/y", "m2.cls/y"]

    report = project.report()
    section = report.split("## Stations")[1].split("\n## ")[0]
    assert "### pair: det, det, cls (dynamic; must hold 50 fps)" in section
    lines = [line for line in section.splitlines() if line.startswith("| ort_cpu")]
    assert len(lines) == 8
    for b in ("1", "32"):
        batch = [line for line in lines if re.match(rf"\| ort_cpu +\| fp32 +\| {b} +\|", line)]
        assert [re.search(r"\| (serial|multistream|threadpool|merged)", x).group(1) for x in batch] == list(MODES)
        assert "| 1.00x " in batch[0]  # serial against itself
        assert sum("**best**" in x for x in batch) <= 1  # at most one best (none if every row was unstable)
    assert "- serial ort_cpu fp32 b1: det " in section and "max rel_l2 " in section
    assert "![stations: speed-up against batch](plots/stations-speedup.png)" in section
    assert (project.path / "reports" / "plots" / "stations-speedup.png").stat().st_size > 1000

    # a second run compares with the first, case by case (cycle times as latencies)
    project.run(*QUICK, "--stations=pair", "--station-modes=serial,threadpool", registry=registry,
                report="again").assert_outcomes(passed=4)
    out = subprocess.run([sys.executable, "-m", "harness", "compare", str(project.path / "reports" / "results.json"),
                          str(project.path / "again" / "results.json"), "--allow-missing"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode in (0, 1), out.stderr
    assert "Missing from the candidate (4)" in out.stdout and "station-pair-ort_cpu-fp32-merged-b1" in out.stdout
    assert json.loads((project.path / "again" / "results.json").read_text())["rows"][0]["type"] == "station"


def test_the_bundled_stations_cases_skip_naming_the_member_that_cannot_run(project):
    result = project.run("-m", "perf", "-k", "test_station and classifiers", "-rs", "--backends=ort_cpu,ort_cuda",
                         "--station-modes=threadpool", "--perf-duration=0.05", "--perf-warmup=0.01")
    if get_backend("ort_cuda").unavailable() is None:  # onnxruntime-gpu and a GPU: both run
        result.assert_outcomes(passed=2)
    else:
        result.assert_outcomes(passed=1, skipped=1)
        assert "station 'classifiers', member 0 (classifier): ort_cuda: " in result.stdout.str()
