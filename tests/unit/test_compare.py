"""Comparing two runs: which changes count as regressions, and the CLI's exit status."""

from __future__ import annotations

import json

from harness.cli import main
from harness.compare import Thresholds, compare_rows


def acc(status: str, p99: float, recipe: str = "int8") -> dict:
    return {"type": "accuracy", "model": "ranker", "backend": "ort_cpu", "recipe": recipe, "profile": "dynamic",
            "status": status, "metrics": {"rel_l2.p99": p99}}


def perf(throughput: float, p99_ms: float, batch: int = 1) -> dict:
    return {"type": "perf", "model": "ranker", "backend": "ort_cpu", "recipe": "fp32", "profile": "dynamic",
            "mode": "serial", "batch": batch, "concurrency": 1, "resident": True, "cuda_graph": False,
            "status": "pass", "throughput": throughput, "latency_ms": {"p99": p99_ms}}


def test_a_gate_that_stops_passing_is_a_regression_and_one_that_starts_is_not():
    changes = compare_rows([acc("pass", 0.004), acc("fail", 0.02, "fp16")],
                           [acc("fail", 0.004), acc("pass", 0.02, "fp16")])
    by_recipe = {c.label.split("-")[2]: c for c in changes}
    assert by_recipe["int8"].regression and by_recipe["int8"].what == "status"
    assert not by_recipe["fp16"].regression


def test_error_growth_beyond_the_factor_is_a_regression():
    th = Thresholds(error_rise=1.5)
    (grew,) = compare_rows([acc("pass", 0.004)], [acc("pass", 0.0065)], th)
    assert grew.regression and grew.what == "rel_l2 p99"
    (shrank,) = compare_rows([acc("pass", 0.004)], [acc("pass", 0.002)], th)
    assert not shrank.regression
    (small,) = compare_rows([acc("pass", 0.004)], [acc("pass", 0.0055)], th)  # +37 %: shown, not a regression
    assert not small.regression
    # tiny absolute errors do not flap: 1e-9 -> 1e-8 is x10 but below the 1e-6 floor
    assert not any(c.regression for c in compare_rows([acc("pass", 1e-9)], [acc("pass", 1e-8)], th))


def test_throughput_and_latency_thresholds():
    th = Thresholds(throughput_drop=0.05, latency_rise=0.10)
    changes = compare_rows([perf(1000.0, 2.0)], [perf(900.0, 2.3)], th)
    assert {c.what: c.regression for c in changes} == {"samples/s": True, "p99 ms": True}
    changes = compare_rows([perf(1000.0, 2.0)], [perf(970.0, 2.15)], th)  # -3 % / +7.5 %: noted, not failing
    assert {c.what: c.regression for c in changes} == {"samples/s": False, "p99 ms": False}
    assert compare_rows([perf(1000.0, 2.0)], [perf(1010.0, 2.02)], th) == []  # within noise: not listed
    # rows are matched by key: another batch size is another case, never compared with this one
    assert compare_rows([perf(1000.0, 2.0, batch=1)], [perf(100.0, 20.0, batch=8)], th) == []


def write(path, rows):
    path.write_text(json.dumps({"rows": rows, "environment": {}}), encoding="utf-8")
    return str(path)


def test_cli_exits_1_on_regressions_0_without_and_2_on_a_missing_file(tmp_path, capsys):
    base = write(tmp_path / "base.json", [acc("pass", 0.004), perf(1000.0, 2.0)])
    worse = write(tmp_path / "worse.json", [acc("fail", 0.004), perf(1000.0, 2.0)])
    same = write(tmp_path / "same.json", [acc("pass", 0.004), perf(1001.0, 2.0)])
    assert main(["compare", base, worse]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "ranker-ort_cpu-int8-dynamic" in out and "1 regression(s)" in out
    assert main(["compare", base, same]) == 0
    assert "0 regression(s)" in capsys.readouterr().out
    assert main(["compare", base, str(tmp_path / "absent.json")]) == 2
    assert "absent.json" in capsys.readouterr().err


def test_a_file_whose_rows_are_not_a_list_is_named_in_one_line(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"rows": [acc("pass", 0.004)]}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": {"a": 1}}))
    assert main(["compare", str(good), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"harness compare: {bad} is not a harness results file: 'rows' is dict, expected a list of row objects"
    bad.write_text(json.dumps({"rows": [1, 2]}))
    assert main(["compare", str(good), str(bad)]) == 2
    assert "'rows' is a list with non-object items" in capsys.readouterr().err
