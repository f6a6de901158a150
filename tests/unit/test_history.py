"""The nightly history database: appending runs, series per machine, change points, the CLI and the report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.cli import main
from harness.history import History, HistoryError
from harness.results import RESULTS, Results, write_json_atomic
from harness.rows import AccuracyRow, PerfRow
from harness.trends import Options, all_trends

CASE = "ranker-ort_cpu-fp32-dynamic-serial-b1"


def run_id(night: int) -> str:
    return f"202501{night + 1:02d}-020000-{night:06x}"


def perf_row(night: int, throughput: float, *, gpu: str | None = None, status: str = "pass", case: str = CASE,
             batch: int = 1) -> PerfRow:
    env = {"host": f"ci-{night % 3}", "cpu": "EPYC 7B13", "cores": 2, **({"gpu": gpu} if gpu else {})}
    return PerfRow(id=case, model="ranker", backend="ort_cpu", recipe="fp32", profile="dynamic", mode="serial",
                   batch=batch, status=status, stable=status == "pass", throughput=throughput,
                   latency_ms={"p50": 1e3 / throughput, "p99": 2e3 / throughput}, run_id=run_id(night),
                   time=f"2025-01-{night + 1:02d}T02:00:00+0000", env=env)


def acc_row(night: int, p99: float) -> AccuracyRow:
    return AccuracyRow(id="ranker-ort_cpu-int8-dynamic", model="ranker", backend="ort_cpu", recipe="int8",
                       profile="dynamic", status="pass", run_id=run_id(night), metrics={"rel_l2.p99": p99},
                       time=f"2025-01-{night + 1:02d}T02:00:00+0000", env={"cpu": "EPYC 7B13"})


@pytest.fixture
def db(tmp_path):
    """30 nights: the perf case loses 12 % throughput from night 20 on; a second case only wobbles; the
    accuracy case is steady; night 10's perf run was unstable and wild."""
    rng = np.random.default_rng(11)
    path = tmp_path / "history.sqlite"
    with History(path, create=True) as h:
        for night in range(30):
            level = 1000.0 * (0.88 if night >= 20 else 1.0)
            rows = [perf_row(night, level * (1 + 0.02 * rng.standard_normal())),
                    perf_row(night, 500.0 * (1 + 0.02 * rng.standard_normal()), case=CASE + "-other", batch=2),
                    acc_row(night, 0.004)]
            if night == 10:
                rows[0] = perf_row(night, 300.0, status="unstable")
            h.append(rows)
    return path


def test_runs_series_and_appending_again_changes_nothing(db):
    with History(db) as h:
        runs = h.runs()
        assert [r.run_id for r in runs] == [run_id(n) for n in range(30)]
        assert runs[0].statuses == {"pass": 3} and runs[10].statuses == {"pass": 2, "unstable": 1}
        series = h.series("perf", CASE, "throughput", "EPYC 7B13")
        assert len(series) == 30 and series[10].status == "unstable"
        h.append([perf_row(3, 999.0)])  # night 3 appended again: replaced, not duplicated
        assert len(h.series("perf", CASE, "throughput", "EPYC 7B13")) == 30
        assert h.series("perf", CASE, "throughput", "EPYC 7B13")[3].value == 999.0


def test_change_points_name_the_first_run_of_the_change(db):
    with History(db) as h:
        trends = all_trends(h, Options(min_step=0.05))
    changed = {t.number: t for t in trends if t.changes}
    # the latencies here are 1 / throughput: all three step at night 20, each worse in its own direction
    assert sorted(changed) == ["p50_ms", "p99_ms", "throughput"] and {t.case for t in changed.values()} == {CASE}
    for t in changed.values():
        (change,) = t.changes
        assert t.first_run(change) == run_id(20) and change.direction(t.better) == "regression", t.number
        assert t.open_regression
        assert run_id(10) not in t.runs  # the unstable night is not a level
    assert changed["throughput"].changes[0].relative == pytest.approx(-0.12, abs=0.03)
    assert changed["p50_ms"].changes[0].relative == pytest.approx(1 / 0.88 - 1, abs=0.03)


def test_history_cli(db, tmp_path, capsys):
    assert main(["history", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert f"{run_id(29)}  2025-01-30T02:00:00+0000  ci-2 (EPYC 7B13)  3 rows: 3 pass" in out
    assert "30 run(s) in" in out
    assert main(["history", "changes", "--db", str(db)]) == 1
    out = capsys.readouterr().out
    assert CASE in out and run_id(20) in out and "regression" in out
    assert "3 series still at a worse level" in out
    assert main(["history", "changes", "--db", str(db), "--case", "int8"]) == 0
    assert main(["history", "show", CASE, "--db", str(db), "--number", "throughput"]) == 0
    out = capsys.readouterr().out
    assert "perf " + CASE + " · throughput (higher is better) on EPYC 7B13" in out
    line = next(x for x in out.splitlines() if run_id(20) in x)
    assert "<- regression -1" in line
    assert "runs not passing: " + run_id(10) + ": unstable" in out
    assert main(["history", "show", "no-such-case", "--db", str(db)]) == 2
    assert "no case 'no-such-case'" in capsys.readouterr().err
    assert main(["history", "--db", str(tmp_path / "absent.sqlite")]) == 2
    assert "no history database at" in capsys.readouterr().err


def test_series_never_mix_machines_and_append_reads_a_results_json(tmp_path):
    results = tmp_path / "reports" / RESULTS
    results.parent.mkdir()
    rows = [perf_row(n, 1000.0) for n in range(6)] + [perf_row(n, 3000.0, gpu="NVIDIA H200") for n in range(6, 12)]
    write_json_atomic(results, Results(rows).to_dict())
    db = tmp_path / "h.sqlite"
    assert main(["history", "append", str(results.parent), "--db", str(db)]) == 0
    with History(db) as h:
        assert h.machines("perf", CASE) == ["EPYC 7B13", "NVIDIA H200"]
        trends = all_trends(h)
    assert all(not t.changes for t in trends)  # a GPU three times faster than the CPU is not a change


def test_a_file_that_is_not_a_database_is_named(tmp_path):
    bad = tmp_path / "h.sqlite"
    bad.write_text("not sqlite" * 100)
    with pytest.raises(HistoryError, match=f"{bad} is not a usable history database"):
        History(bad)


def test_the_report_shows_trends_and_change_points_from_the_history(db, tmp_path):
    from harness.report import write_report

    report = tmp_path / "reports"
    report.mkdir()
    rows = [perf_row(29, 880.0), perf_row(29, 500.0, case=CASE + "-other", batch=2), acc_row(29, 0.004)]
    write_report(report, Results(rows, last_run=run_id(29)), history=db)
    text = (report / "REPORT.md").read_text()
    section = text[text.index("## Trends"):]
    assert f"| {CASE} " in section and run_id(20) in section and "regression" in section
    assert "![ranker trends](plots/ranker-trends.png)" in section
    assert (report / "plots" / "ranker-trends.png").stat().st_size > 1000
    assert json.loads(json.dumps(text))  # plain text, nothing unprintable


def test_doctor_rows_in_the_history_fixed_is_a_good_end(tmp_path, capsys):
    from harness.rows import DoctorRow

    path = tmp_path / "h.sqlite"
    with History(path, create=True) as h:
        for night, (status, keep) in enumerate([("fixed", ["a", "b"]), ("fixed", ["a"]), ("no fix", [])]):
            h.append([DoctorRow(id="m-ort_cpu-int8-p", model="m", backend="ort_cpu", recipe="int8", profile="p",
                                status=status, keep_fp32=keep, run_id=run_id(night),
                                time=f"2025-01-{night + 1:02d}T02:00:00+0000", env={"cpu": "EPYC 7B13"})])
    assert main(["history", "show", "m-ort_cpu-int8-p", "--db", str(path)]) == 0
    out = capsys.readouterr().out
    assert "doctor m-ort_cpu-int8-p · keep_fp32 (lower is better) on EPYC 7B13" in out
    assert f"runs not passing: {run_id(2)}: no fix" in out and f"{run_id(0)}: fixed" not in out
