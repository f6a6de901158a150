"""`pytest -m perf` as users run it: rows, tables, and never two perf tests at once."""

import re

import pytest

from harness.rows import SCHEMA_VERSION

QUICK = ("--models=ranker", "--perf-recipes=fp32", "--profiles=dynamic", "--perf-duration=0.1",
         "--perf-warmup=0.02", "--perf-batches=1,64")


def test_the_perf_sweep_writes_rows_and_the_report_tables(project):
    result = project.run("-m", "perf", *QUICK)
    result.assert_outcomes(passed=6)  # serial, multistream, threadpool x batch 1, 64
    rows = project.results()
    assert {(r["mode"], r["batch"]) for r in rows} == {(m, b) for m in ("serial", "multistream", "threadpool")
                                                        for b in (1, 64)}
    for r in rows:
        assert r["throughput"] > 0 and r["iterations"] >= 20 and r["wall_s"] >= 0.1
        assert r["latency_ms"]["p50"] <= r["latency_ms"]["p99"] <= r["latency_ms"]["max"]
        assert r["env"]["cores"] >= 1 and r["resources"]["rss_peak_mb"] > 0
        assert r["threads_per_runner"] >= 1 and isinstance(r["stable"], bool)
        # every iteration's latency, kept as a histogram for compare's test: as many as were timed
        assert sum(n for _, n in r["latency_hist"]["bins"]) == r["iterations"] and r["schema"] == SCHEMA_VERSION
    report = project.report()
    assert "## Throughput and latency" in report and "## Which configuration wins" in report
    assert "![ranker throughput](plots/ranker-throughput.png)" in report
    assert (project.path / "reports" / "plots" / "ranker-throughput.png").stat().st_size > 1000
    assert re.search(r"\| ranker +\| ort_cpu +\| fp32 +\| [\d,.]+ +\| \w+ b\d+", report)
    assert {r["id"] for r in rows} == {f"ranker-ort_cpu-fp32-dynamic-{m}-b{b}{'' if m == 'serial' else '-n2'}"
                                       for m in ("serial", "multistream", "threadpool") for b in (1, 64)}


def test_perf_tests_are_refused_under_xdist_while_accuracy_tests_parallelize(project):
    for expr in ("perf", "perf or accuracy", "perf and not gpu"):
        result = project.run("-m", expr, *QUICK, "-n", "2")
        assert result.ret == pytest.ExitCode.USAGE_ERROR, expr
        assert "run `pytest -m perf` without -n, or give every worker a GPU of its own" in result.stderr.str()
    # perf cases run only when -m names them: an expression that does not selects none, and is not refused
    result = project.run("-m", "not accuracy", *QUICK, "-n", "2")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED and "without -n" not in result.stderr.str()
    project.run("-m", "accuracy", *QUICK, "--recipes=fp32", "-n", "2").assert_outcomes(passed=1)
