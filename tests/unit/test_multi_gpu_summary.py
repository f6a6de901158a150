"""The summary benchmarks/multi_gpu.sh prints last, on simulated report folders (the GPU run is the lead's)."""

from __future__ import annotations

import sys

from harness.results import ROWS, RowWriter, merge_pending
from harness.rows import AccuracyRow, PerfRow
from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from multi_gpu_summary import summary  # noqa: E402


def gpu(index):
    return {"host": "sim", "kind": "gpu", "name": "Simulated GPU", "index": index, "uuid": f"GPU-{index}"}


def folder(report, step, rows):
    w = RowWriter(report / step / ROWS / f"20250101-000000-{step}" / "main.jsonl")
    for r in rows:
        w.write(r.to_dict())
    w.close()
    merge_pending(report / step)


def acc(case, index, status="pass"):
    return AccuracyRow(id=case, model=case, backend="ort_cuda", recipe="fp32", profile="dynamic", status=status,
                       run_id="r", device=gpu(index), env={"host": "sim", "gpu": "Simulated GPU", "gpu_count": 2})


def perf(case, index, rate, others):
    return PerfRow(id=case, model=case, backend="ort_cuda", recipe="fp32", profile="dynamic", mode="serial", batch=1,
                   status="pass", throughput=rate, run_id="r", device=gpu(index),
                   resources={"gpu_util": 90.0, "gpu_util_by_index": {str(index): 90.0, **others}})


def test_the_summary_says_how_all_gpus_did_against_one(tmp_path):
    (tmp_path / "steps.tsv").write_text("acc-one\t100.0\t0\t96 passed in 99s\nacc-all\t52.0\t0\t96 passed in 51s\n"
                                        "perf-one\t60.0\t0\t48 passed in 59s\nperf-all\t31.0\t0\t48 passed in 30s\n"
                                        "perf-each\t\t\tskipped: 20 s left of the budget, 66 s needed\n")
    folder(tmp_path, "acc-one", [acc("a", 0), acc("b", 0)])
    folder(tmp_path, "acc-all", [acc("a", 0), acc("b", 1, "fail")])
    folder(tmp_path, "perf-one", [perf("p", 0, 1000.0, {}), perf("q", 0, 2000.0, {})])
    folder(tmp_path, "perf-all", [perf("p", 0, 950.0, {"1": 80.0}), perf("q", 1, 2000.0, {"0": 70.0})])
    text = "\n".join(summary(tmp_path))
    assert "accuracy gates (warm cache): GPU 0 alone 100 s, all GPUs 52 s: 1.92x" in text
    assert "perf sweep: GPU 0 alone 60 s, all GPUs 31 s: 1.94x" in text
    assert "accuracy verdicts, GPU 0 alone against all GPUs: 1 of 2 cases the same; differ: b-ort_cuda-fp32-dynamic" \
        in text
    assert "perf-all gpu0: 1 cases, its NVML utilisation while timed 90 %; meanwhile gpu1 80 %" in text
    assert "perf-all gpu1: 1 cases, its NVML utilisation while timed 90 %; meanwhile gpu0 70 %" in text
    assert "against GPU 0 alone: median 0.97 (min 0.95, max 1.00) over 2" in text
    assert "perf-each" in text and "skipped: 20 s left" in text
