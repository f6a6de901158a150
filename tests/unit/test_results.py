"""results.json loses nothing: rows of a run it has not merged are folded in, a corrupt one is kept aside."""

from __future__ import annotations

import json

import pytest

from harness.cli import main
from harness.results import RESULTS, ROWS, RowWriter, load_results, merge_pending
from harness.rows import AccuracyRow


def row(recipe: str, run: str, p99: float = 0.004, status: str = "pass") -> AccuracyRow:
    return AccuracyRow(id=f"ranker-ort_cpu-{recipe}-dynamic", model="ranker", backend="ort_cpu", recipe=recipe,
                       profile="dynamic", status=status, run_id=run, time=f"{run[:8]}T00:00:00",
                       metrics={"rel_l2.p99": p99}, env={"host": "h", "cpu": "EPYC", "cores": 2})


def write_run(report, run: str, rows: list[AccuracyRow], worker: str = "main") -> None:
    w = RowWriter(report / ROWS / run / f"{worker}.jsonl")
    for r in rows:
        w.write(r.to_dict())
    w.close()


def recipes(report) -> dict[str, str]:
    return {r.recipe: r.run_id for r in load_results(report).rows}


def test_rows_of_runs_not_in_results_json_are_merged_and_merging_again_changes_nothing(tmp_path):
    write_run(tmp_path, "20250101-000000-aaaaaa", [row("fp32", "20250101-000000-aaaaaa"),
                                                   row("fp16", "20250101-000000-aaaaaa")])
    first = merge_pending(tmp_path)
    assert first.merged_runs == ["20250101-000000-aaaaaa"] and first.new_rows == 2
    # a later run killed before its session ended: its rows are on disk, results.json never saw them
    write_run(tmp_path, "20250102-000000-bbbbbb", [row("fp16", "20250102-000000-bbbbbb", 0.005),
                                                   row("int8", "20250102-000000-bbbbbb")])
    second = merge_pending(tmp_path)
    assert second.merged_runs == ["20250102-000000-bbbbbb"] and second.new_rows == 2
    assert recipes(tmp_path) == {"fp32": "20250101-000000-aaaaaa", "fp16": "20250102-000000-bbbbbb",
                                 "int8": "20250102-000000-bbbbbb"}
    assert load_results(tmp_path).last_run == "20250102-000000-bbbbbb"
    assert merge_pending(tmp_path).merged_runs == []  # nothing new: results.json is not even rewritten
    # a run that wrote more rows since (it was still going) is read again, whole
    write_run(tmp_path, "20250102-000000-bbbbbb", [row("bf16", "20250102-000000-bbbbbb")], worker="gw1")
    assert merge_pending(tmp_path).merged_runs == ["20250102-000000-bbbbbb"]
    assert len(load_results(tmp_path).rows) == 4


def test_the_later_run_wins_whatever_order_runs_are_folded_in(tmp_path):
    write_run(tmp_path, "20250105-000000-cccccc", [row("fp32", "20250105-000000-cccccc", 0.001)])
    merge_pending(tmp_path)
    # an older run's rows turn up afterwards (copied in from another machine): they fill gaps, replace nothing
    write_run(tmp_path, "20250101-000000-aaaaaa", [row("fp32", "20250101-000000-aaaaaa", 0.009),
                                                   row("int8", "20250101-000000-aaaaaa")])
    merge_pending(tmp_path)
    rows = {r.recipe: r for r in load_results(tmp_path).rows}
    assert rows["fp32"].metrics["rel_l2.p99"] == 0.001 and rows["int8"].run_id == "20250101-000000-aaaaaa"


@pytest.mark.parametrize("content", ['{"rows": [{"type": "accuracy"', "not json at all", '{"rows": 7}',
                                     '{"rows": [{"type": "accuracy", "model": 1}]}', '[1, 2]'])
def test_a_corrupt_results_json_is_kept_aside_and_rebuilt_from_the_row_files(tmp_path, content):
    write_run(tmp_path, "20250101-000000-aaaaaa", [row("fp32", "20250101-000000-aaaaaa")])
    merge_pending(tmp_path)
    write_run(tmp_path, "20250102-000000-bbbbbb", [row("int8", "20250102-000000-bbbbbb")])
    results = tmp_path / RESULTS
    results.write_text(content, encoding="utf-8")
    outcome = merge_pending(tmp_path)
    (warning,) = outcome.warnings
    (aside,) = tmp_path.glob(f"{RESULTS}.corrupt-*")
    assert aside.read_text(encoding="utf-8") == content  # kept as it was
    assert str(results) in warning and str(aside) in warning and "rebuilt" in warning
    assert set(recipes(tmp_path)) == {"fp32", "int8"}  # both runs' rows, from rows/


def test_report_renders_a_crashed_runs_rows_and_warns_about_a_corrupt_results_json(tmp_path, capsys):
    write_run(tmp_path, "20250101-000000-aaaaaa", [row("fp32", "20250101-000000-aaaaaa")])
    merge_pending(tmp_path)
    write_run(tmp_path, "20250102-000000-bbbbbb", [row("int8", "20250102-000000-bbbbbb", 0.2, "fail")])
    (tmp_path / RESULTS).write_text("{", encoding="utf-8")
    assert main(["report", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "could not be read" in captured.err and "kept it as" in captured.err
    assert "merged 2 row(s) of 2 run(s)" in captured.out
    report = (tmp_path / "REPORT.md").read_text()
    assert "2 results: 1 fail, 1 pass" in report and "ranker-ort_cpu-int8-dynamic" in report


def test_a_line_cut_short_by_a_crash_is_skipped_and_a_bad_row_is_named_by_file_and_line(tmp_path):
    run = "20250101-000000-aaaaaa"
    write_run(tmp_path, run, [row("fp32", run)])
    path = tmp_path / ROWS / run / "main.jsonl"
    bad = {**row("fp16", run).to_dict(), "batch": "eight"}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(bad) + "\n")
        f.write(json.dumps(row("int8", run).to_dict()) + "\n")
        f.write(json.dumps(row("bf16", run).to_dict())[:40])  # the process died mid-write
    outcome = merge_pending(tmp_path)
    assert set(recipes(tmp_path)) == {"fp32", "int8"}
    assert any(w.startswith(f"{path}:2: accuracy row field 'batch'") and "stays in the file" in w
               for w in outcome.warnings), outcome.warnings
    assert any(w.startswith(f"{path}:4: skipped a line cut short") for w in outcome.warnings), outcome.warnings


def gpu_row(run: str, index: int, uuid: str | None, p99: float) -> AccuracyRow:
    device = {"host": "h", "kind": "gpu", "name": "NVIDIA H200", "index": index, **({"uuid": uuid} if uuid else {})}
    return AccuracyRow(id="ranker-ort_cuda-fp16-dynamic", model="ranker", backend="ort_cuda", recipe="fp16",
                       profile="dynamic", status="pass", run_id=run, time=f"{run[:8]}T00:00:00",
                       metrics={"rel_l2.p99": p99}, device=device, env={"host": "h"})


def test_rows_of_one_case_on_two_gpus_never_replace_each_other(tmp_path):
    write_run(tmp_path, "20250101-000000-aaaaaa", [gpu_row("20250101-000000-aaaaaa", 0, "GPU-a", 0.001)], "gw0")
    write_run(tmp_path, "20250101-000000-aaaaaa", [gpu_row("20250101-000000-aaaaaa", 1, "GPU-b", 0.002)], "gw1")
    merge_pending(tmp_path)
    assert sorted(r.device["index"] for r in load_results(tmp_path).rows) == [0, 1]
    # the next night the case runs on GPU 1 only: it replaces GPU 1's row, GPU 0's stays
    write_run(tmp_path, "20250102-000000-bbbbbb", [gpu_row("20250102-000000-bbbbbb", 1, "GPU-b", 0.003)])
    merge_pending(tmp_path)
    assert {r.device["index"]: r.metrics["rel_l2.p99"] for r in load_results(tmp_path).rows} == {0: 0.001, 1: 0.003}


def test_a_gpu_row_from_before_devices_gives_way_to_a_newer_row_on_the_same_host_and_gpu_index(tmp_path):
    old = gpu_row("20250101-000000-aaaaaa", 0, None, 0.001)  # migrated from schema 2: no UUID
    other = gpu_row("20250101-000000-aaaaaa", 3, None, 0.001)
    write_run(tmp_path, "20250101-000000-aaaaaa", [old, other])
    write_run(tmp_path, "20250102-000000-bbbbbb", [gpu_row("20250102-000000-bbbbbb", 0, "GPU-a", 0.002)])
    merge_pending(tmp_path)
    rows = load_results(tmp_path).rows
    assert sorted((r.device["index"], r.device.get("uuid")) for r in rows) == [(0, "GPU-a"), (3, None)]
