"""Reports that survive faults: a run killed midway, the history of runs, numbers in the JUnit XML."""

from __future__ import annotations

import json
import os
import signal
import time
import xml.etree.ElementTree as ET

from harness.cli import main

QUICK = ("-m", "accuracy", "--eval-size=4", "--models=ranker", "--recipes=fp32")


def complete_lines(path) -> list[dict]:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]  # the last one may be cut short


def test_the_rows_of_a_run_killed_midway_reach_the_report(project):
    project.run(*QUICK).assert_outcomes(passed=2)
    reports = project.path / "reports"
    (first_run,) = [p.name for p in (reports / "rows").iterdir()]
    proc = project.start("-m", "accuracy", "--eval-size=4", "--recipes=fp32,fp16",
                         "--models=classifier,encoder,segmenter,ranker")
    deadline = time.monotonic() + 300
    written: list[dict] = []
    while len(written) < 2:
        assert proc.poll() is None, (project.path / "reports.log").read_text()
        assert time.monotonic() < deadline, "no rows written in 300 s"
        time.sleep(0.05)
        files = [f for f in reports.glob("rows/*/main.jsonl") if f.parent.name != first_run]
        written = complete_lines(files[0]) if files else []
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed midway: its session never ended, nothing merged its rows
    killed_run = files[0].parent.name
    written = complete_lines(files[0])
    assert {r["run_id"] for r in project.results()} == {first_run}

    assert main(["report", str(reports)]) == 0
    rows = {r["id"]: r for r in project.results()}
    for r in written:
        assert rows[r["id"]]["run_id"] == killed_run and rows[r["id"]]["status"] == r["status"]
    report = project.report()
    assert f"last run `{killed_run}`" in report
    for model in {r["model"] for r in written}:
        assert f"### {model}" in report
    assert "ranker-ort_cpu-fp32-dynamic" in json.dumps(list(rows))  # the first run's rows are still there


def test_each_run_lands_in_the_history_and_its_numbers_in_the_junit_xml(project):
    db = project.path / "history.sqlite"
    for i in range(2):
        result = project.run(*QUICK, f"--history={db}", f"--junitxml=run{i}.xml")
        result.assert_outcomes(passed=2)
        assert "history: 2 row(s) of run " in result.stdout.str()
    assert main(["history", "--db", str(db)]) == 0
    assert main(["history", "changes", "--db", str(db)]) == 0  # two identical runs: nothing changed
    assert main(["history", "show", "ranker-ort_cpu-fp32-dynamic", "--db", str(db)]) == 0
    cases = ET.parse(project.path / "run1.xml").getroot().iter("testcase")
    props = {c.get("name"): {p.get("name"): p.get("value") for p in c.iter("property")} for c in cases}
    assert set(props) == {"test_accuracy[ranker-ort_cpu-fp32-dynamic]", "test_accuracy[ranker-ort_cpu-fp32-fixed]"}
    for p in props.values():
        assert p["status"] == "pass" and 0.0 <= float(p["p99(rel_l2)"]) < 1e-5, p
    report = project.report()
    assert "## Trends" in report and "No change points in" in report
