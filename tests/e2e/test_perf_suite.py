"""`pytest -m perf` as users run it: rows, tables, and never two perf tests at once."""

import re

import pytest

from harness.backends.ort_setup import default_setup
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
        # serial: ONNX Runtime's own pool (a thread per physical core, pinned); the others split the cores
        if r["mode"] == "serial":
            assert "threads_per_runner" not in r and r["runner"]["physical_cores"] >= 1
        else:
            assert r["threads_per_runner"] >= 1
        assert isinstance(r["stable"], bool)
        # every iteration's latency, kept as a histogram for compare's test: as many as were timed
        assert sum(n for _, n in r["latency_hist"]["bins"]) == r["iterations"] and r["schema"] == SCHEMA_VERSION
    report = project.report()
    assert "## Throughput and latency" in report and "## Which configuration wins" in report
    assert "![ranker throughput](plots/ranker-throughput.png)" in report
    assert (project.path / "reports" / "plots" / "ranker-throughput.png").stat().st_size > 1000
    # only a stable row measured on a machine in a state to quote it can win (a busy machine may leave none)
    quotable = [r for r in rows if r["stable"] and not r.get("state_flags")]
    if quotable:
        best = max(quotable, key=lambda r: r["throughput"])
        assert re.search(rf"\| ranker +\| ort_cpu +\| fp32 +\| [\d,.–]+ +\| {best['mode']} b{best['batch']}", report)
    else:
        assert re.search(r"\| ranker +\| ort_cpu +\| fp32 +\| – +\| none: no quotable row of 6", report)
    for r in rows:  # the machine's state is in every row, the host's at least
        assert r["state"]["host_cpus"] >= r["env"]["cores"] and r["state"]["host_other_load_per_cpu"] >= 0
        assert "sync" not in r and r["setup"] == default_setup("ort_cpu").describe(gpu=False)
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


def test_rows_measured_on_an_overloaded_host_are_flagged_warned_about_and_never_win(project):
    # a bound of 0: any runnable thread of another process overloads the host (on an idle machine, none may)
    result = project.run("-m", "perf", *QUICK, "--perf-modes=serial", "--perf-max-load=0")
    result.assert_outcomes(passed=2)
    rows = project.results()
    for r in rows:
        load = r["state"]["host_other_load_per_cpu"]
        assert bool(r.get("state_flags")) == (load > 0), r
        assert r["policy"]["max_load"] == 0
    flagged = [r for r in rows if r.get("state_flags")]
    assert ("PerfDisturbed" in result.stdout.str()) == bool(flagged)
    report = project.report()
    for r in flagged:
        assert f"serial b{r['batch']} (dynamic)" not in report.split("## Which configuration wins")[1]
    assert report.count("| **host overloaded** |") == len(flagged)


def test_a_setup_given_on_the_command_line_is_the_rows_setup(project):
    # "off" is a load level, not a no: the option keeps the words as written
    result = project.run("-m", "perf", *QUICK, "--perf-modes=serial", "--perf-batches=1",
                         "--ort-setup=engine=optimized,load=off")
    result.assert_outcomes(passed=1)
    assert [r["setup"] for r in project.results()] == [{"engine": "optimized", "load": "off"}]


@pytest.mark.parametrize("option, message", [
    ("--perf-sync=wait", "--perf-sync: cannot use 'wait': wait is not one of spin, block"),
    ("--ort-setup=load=max", "--ort-setup: load must be one of off, basic, extended, all, got 'max'"),
])
def test_a_bad_sync_or_setup_is_a_usage_error_naming_the_option(project, option, message):
    result = project.run("-m", "perf", *QUICK, option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()
