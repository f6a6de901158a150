"""Comparing two runs: regressions from a proper test, missing cases, inconclusive unstable rows, exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.cli import main
from harness.compare import Thresholds, compare_rows
from harness.histogram import LogHistogram
from harness.rows import parse_row


def acc(status: str, p99: float, recipe: str = "int8", budgets: list | None = None, **metrics: float):
    """An accuracy row as results.json holds it; by default budgeted on p99(rel_l2)."""
    if budgets is None:
        budgets = [{"budget": "p99(rel_l2) <= 1%", "output": "y", "value": p99, "passed": p99 <= 0.01}]
    data = {"schema": 2, "type": "accuracy", "model": "ranker", "backend": "ort_cpu", "recipe": recipe,
            "profile": "dynamic", "status": status, "metrics": {"rel_l2.p99": p99, **metrics}, "budgets": budgets}
    return parse_row(data, "test")


def perf(median_ms: float, *, n: int = 4000, spread: float = 0.05, seed: int = 0, batch: int = 1,
         status: str = "pass", hist: bool = True):
    """A perf row whose latencies are lognormal around ``median_ms``, summarized as the harness does."""
    lat = np.random.default_rng(seed).lognormal(np.log(median_ms * 1e-3), spread, n)
    data = {"type": "perf", "model": "ranker", "backend": "ort_cpu", "recipe": "fp32", "profile": "dynamic",
            "mode": "serial", "batch": batch, "concurrency": 1, "status": status, "stable": status == "pass",
            "throughput": batch / lat.mean(), "run_id": f"run-{seed}",
            "latency_ms": {"p50": float(np.median(lat)) * 1e3, "p99": float(np.percentile(lat, 99)) * 1e3}}
    if status == "unstable":
        data["unstable_reasons"] = ["latency CV 0.41 (robust) > 0.25"]
    if hist:
        data["schema"] = 2
        data["latency_hist"] = LogHistogram.from_values(lat).to_dict()
    return parse_row(data, "test")  # without "schema": a version-1 row, as written before histograms


def verdicts(cmp) -> dict[str, str]:
    return {c.what: c.verdict for c in cmp.changes}


def test_a_gate_that_stops_passing_is_a_regression_and_one_that_starts_is_an_improvement():
    cmp = compare_rows([acc("pass", 0.004), acc("fail", 0.02, "fp16")], [acc("fail", 0.004), acc("pass", 0.02, "fp16")])
    by_recipe = {c.label.split("-")[2]: c for c in cmp.changes if c.what == "status"}
    assert by_recipe["int8"].regression and by_recipe["fp16"].verdict == "improvement"
    assert cmp.regressions == 1 and cmp.failed()


def test_accuracy_compares_the_statistics_the_budgets_use():
    top1 = [{"budget": "mean(top1) >= 0.99", "output": "logits", "value": 0.998, "passed": True}]
    worse = [{**top1[0], "value": 0.990}]  # agreement lost: 0.2 % -> 1 % of positions, x5
    cmp = compare_rows([acc("pass", 0.004, budgets=top1)], [acc("pass", 0.040, budgets=worse)])
    # the budget's statistic regressed; rel_l2 p99 grew x10 but no budget of this case uses it
    assert verdicts(cmp) == {"mean(top1)": "regression"}
    change = cmp.changes[0]
    assert (change.before, change.after) == (0.998, 0.990) and "mean(top1) >= 0.99" in change.detail


def test_error_growth_beyond_the_factor_is_a_regression_and_tiny_errors_do_not_flap():
    th = Thresholds(error_rise=1.5)
    assert verdicts(compare_rows([acc("pass", 0.004)], [acc("pass", 0.0065)], th)) == {"p99(rel_l2)": "regression"}
    assert verdicts(compare_rows([acc("pass", 0.004)], [acc("pass", 0.002)], th)) == {"p99(rel_l2)": "improvement"}
    assert verdicts(compare_rows([acc("pass", 0.004)], [acc("pass", 0.0055)], th)) == {"p99(rel_l2)": "change"}
    assert compare_rows([acc("pass", 1e-9)], [acc("pass", 1e-8)], th).changes == []  # x10, below 1e-6


def test_a_slower_median_is_a_regression_with_its_confidence_interval():
    cmp = compare_rows([perf(1.0, seed=1)], [perf(1.08, seed=2)])
    (change,) = [c for c in cmp.changes if c.what == "p50 ms"]
    assert change.regression
    pct, low, high = (float(x) for x in
                      __import__("re").search(r"slower by ([\d.]+) % \(95 % CI \+([\d.]+) % to \+([\d.]+) %\)",
                                              change.detail).groups())
    assert 6.0 < low < pct < high < 10.0 and pct == pytest.approx(8.0, abs=1.0)
    assert cmp.failed()


def test_changes_within_the_noise_or_the_threshold_are_not_regressions():
    # the same distribution, other draws: nothing to report
    assert compare_rows([perf(1.0, seed=1)], [perf(1.0, seed=2)]).changes == []
    # 3 % slower, significant with 4,000 iterations each, but under the 5 % threshold: shown, not failing
    cmp = compare_rows([perf(1.0, seed=1)], [perf(1.03, seed=2)])
    assert verdicts(cmp) == {"p50 ms": "change"} and not cmp.failed()
    # 8 % slower on 30 very noisy iterations: the interval straddles no change, so it is not a regression
    cmp = compare_rows([perf(1.0, n=30, spread=0.5, seed=1)], [perf(1.08, n=30, spread=0.5, seed=2)])
    assert not cmp.regressions, cmp.changes


def test_an_unstable_row_on_either_side_is_inconclusive_never_a_regression():
    for base, cand in ((perf(1.0, status="unstable", seed=1), perf(1.5, seed=2)),
                       (perf(1.0, seed=1), perf(1.5, status="unstable", seed=2)),
                       (perf(1.5, seed=1), perf(1.0, status="unstable", seed=2))):
        cmp = compare_rows([base], [cand])
        assert verdicts(cmp) == {"p50 ms": "inconclusive"}, cmp.changes
        assert "unstable: latency CV 0.41" in cmp.changes[0].detail
        assert not cmp.failed()


def test_rows_without_histograms_are_judged_on_point_values_and_say_so():
    cmp = compare_rows([perf(1.0, seed=1, hist=False)], [perf(1.2, seed=2)])
    assert verdicts(cmp)["samples/s"] == "regression"
    assert all("baseline row has no latency histogram" in c.detail for c in cmp.changes)


def test_cases_missing_from_the_candidate_fail_unless_allowed():
    base = [acc("pass", 0.004), acc("pass", 0.004, "fp16"), perf(1.0, batch=1), perf(1.0, batch=8)]
    skipped = parse_row({**perf(1.0, batch=8).to_dict(), "status": "skipped", "message": "no GPU"}, "t")
    cmp = compare_rows(base, [acc("pass", 0.004), skipped])
    assert cmp.regressions == 0
    missing = dict(cmp.missing)
    assert len(missing) == 3 and missing["ranker-ort_cpu-fp32-dynamic-serial-1-1-True-False"] == \
        "absent from the candidate"
    assert "skipped in the candidate: no GPU" in missing.values()
    assert cmp.failed() and not cmp.failed(allow_missing=True)


def write(path, rows):
    path.write_text(json.dumps({"rows": [r.to_dict() for r in rows], "environment": {}}), encoding="utf-8")
    return str(path)


def test_cli_exit_status(tmp_path, capsys):
    base = write(tmp_path / "base.json", [acc("pass", 0.004), perf(1.0, seed=1)])
    worse = write(tmp_path / "worse.json", [acc("fail", 0.004), perf(1.0, seed=2)])
    same = write(tmp_path / "same.json", [acc("pass", 0.004), perf(1.0, seed=3)])
    partial = write(tmp_path / "partial.json", [acc("pass", 0.004)])
    assert main(["compare", base, worse]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "ranker-ort_cpu-int8-dynamic" in out and "1 regression(s)" in out
    assert main(["compare", base, same]) == 0
    assert "0 regression(s), 0 missing case(s)" in capsys.readouterr().out
    assert main(["compare", base, partial]) == 1
    assert "Missing from the candidate (1)" in capsys.readouterr().out
    assert main(["compare", base, partial, "--allow-missing"]) == 0
    assert "(missing cases allowed)" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    ('{"rows": {"a": 1}}', "'rows' is not a list (it is dict)"),
    ('{"rows": [', "is not valid JSON"),
    ('{"rows": [{"type": "perf", "model": "m"}]}', "rows[0]: perf row lacks required field(s) backend"),
    ('{"rows": [{"type": "perf", "model": "m", "backend": "b", "recipe": "r", "profile": "p", "mode": "serial", '
     '"batch": "8"}]}', "rows[0]: perf row field 'batch' must be an integer, got '8'"),
])
def test_cli_names_a_bad_file_in_one_line_and_exits_2(tmp_path, capsys, content, message):
    good = write(tmp_path / "good.json", [acc("pass", 0.004)])
    bad = tmp_path / "bad.json"
    bad.write_text(content, encoding="utf-8")
    assert main(["compare", good, str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and message in err, err
    assert main(["compare", good, str(tmp_path / "absent.json")]) == 2
    assert "absent.json" in capsys.readouterr().err


def test_a_file_whose_rows_are_not_a_list_is_named_in_one_line(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"rows": [acc("pass", 0.004).to_dict()]}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": {"a": 1}}))
    assert main(["compare", str(good), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"harness compare: {bad}: 'rows' is not a list (it is dict)"
    bad.write_text(json.dumps({"rows": [1, 2]}))
    assert main(["compare", str(good), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"harness compare: {bad} rows[0]: ") and len(err.splitlines()) == 1


def station(median_ms: float, *, seed: int = 0, status: str = "pass"):
    """A station row (a frame per request) built from a perf row's timing fields."""
    timing = {k: v for k, v in perf(median_ms, seed=seed, status=status).to_dict().items()
              if k in ("throughput", "latency_ms", "latency_hist", "stable", "status", "unstable_reasons", "run_id")}
    return parse_row({**timing, "schema": 2, "type": "station", "model": "vision", "backend": "ort_cuda",
                      "recipe": "fp32", "profile": "dynamic", "mode": "threadpool", "batch": 4}, "test")


def test_a_station_whose_cycle_time_grew_is_a_regression_and_an_unstable_one_inconclusive():
    cmp = compare_rows([station(20.0, seed=1)], [station(23.0, seed=2)])
    assert verdicts(cmp)["p50 ms"] == "regression" and cmp.failed()
    assert cmp.changes[0].label == "vision-ort_cuda-fp32-dynamic-threadpool-4-True-False"
    assert verdicts(compare_rows([station(20.0, seed=1)], [station(23.0, seed=2, status="unstable")])) == \
        {"p50 ms": "inconclusive"}


def on(row, host: str, gpu: str, index: int = 0):
    """The same row as if it ran on another device."""
    data = row.to_dict()
    data.update(schema=3, backend="ort_cuda", device={"host": host, "kind": "gpu", "name": gpu, "index": index,
                                                      "uuid": f"GPU-{host}-{index}"})
    return parse_row(data, "test")


def test_compare_pairs_like_with_like_and_names_the_devices():
    base = [on(acc("pass", 0.004), "node1", "NVIDIA H200", 0), on(acc("pass", 0.004), "node1", "NVIDIA H200", 1)]
    # the candidate ran on another H200 host: each GPU against the same index of the baseline's class
    new = [on(acc("pass", 0.004), "node2", "NVIDIA H200", 1), on(acc("fail", 0.004), "node2", "NVIDIA H200", 0)]
    cmp = compare_rows(base, new)
    assert not cmp.missing and not cmp.new
    (change,) = cmp.changes
    assert change.regression and change.label == "ranker-ort_cuda-int8-dynamic @ node2 gpu0"
    assert "node2 gpu0 (NVIDIA H200) against node1 gpu0 (NVIDIA H200)" in cmp.pairings


def test_another_device_class_is_not_compared_unless_asked():
    base = [on(perf(1.0), "node1", "NVIDIA H200")]
    new = [on(perf(1.5, seed=1), "node3", "NVIDIA H100")]
    cmp = compare_rows(base, new)
    assert not cmp.changes and cmp.new == [f"{new[0].label} @ node3 gpu0"]
    (case, why) = cmp.missing[0]
    assert "only on another kind of device (node3 gpu0 (NVIDIA H100)); compare across devices with --across-devices" in why
    across = compare_rows(base, new, across_devices=True)
    assert verdicts(across) == {"p50 ms": "regression", "p99 ms": "regression"} and not across.missing
    assert across.pairings == ["node3 gpu0 (NVIDIA H100) against node1 gpu0 (NVIDIA H200)"]


def test_a_recipe_that_became_a_no_op_is_a_regression():
    """A pass that turns into "no-op" (the recipe now converts or quantizes nothing) is lost coverage."""
    cmp = compare_rows([acc("pass", 0.004)], [acc("no-op", 0.0)])
    (change,) = [c for c in cmp.changes if c.what == "status"]
    assert (change.before, change.after, change.verdict) == ("pass", "no-op", "regression") and cmp.failed()
    back = compare_rows([acc("no-op", 0.0)], [acc("pass", 0.004)])
    assert [c.verdict for c in back.changes if c.what == "status"] == ["change"] and not back.failed()


def test_a_doctor_row_the_candidate_lacks_is_not_a_missing_case():
    # the doctor runs only on failed gates: tonight's gate passing leaves no diagnosis, and that is no lost case
    doc = parse_row({"schema": 4, "type": "doctor", "model": "ranker", "backend": "ort_cpu", "recipe": "int8",
                     "profile": "dynamic", "status": "fixed", "keep_fp32": ["a"]}, "test")
    cmp = compare_rows([acc("fail", 0.02), doc], [acc("pass", 0.004)])
    assert not cmp.missing and not cmp.failed() and cmp.count("improvement") >= 1
