"""The deployment gates' rows (schema 5): selfcheck and server rows round-trip, key their cases apart, compare,
shard and render; an accuracy row's shape is part of its key, and a row without one ran at opt."""

from __future__ import annotations

import json

from harness.compare import compare_rows
from harness.deployment_report import best_within_bound, selfcheck_section, server_section
from harness.rows import SCHEMA_VERSION, AccuracyRow, SelfCheckRow, ServerRow, parse_row

DEVICE = {"host": "h", "kind": "cpu", "name": "EPYC"}


def selfcheck(check: str = "consistency", status: str = "pass", rel: float = 0.0) -> SelfCheckRow:
    return SelfCheckRow(id="m-ort_cpu-fp32-dynamic", model="m", backend="ort_cpu", recipe="fp32", profile="dynamic",
                        check=check, status=status, batches=[1, 4, 8], comparisons=36, metrics={"rel_l2.max": rel},
                        worst=[{"where": "sample #2 at position 6 of a batch of 8 (mixed, rotation 1)", "output": "y",
                                "rel_l2": rel}] if rel else [], device=DEVICE)


def server(rate: str, throughput: float, p99: float | None, *, n: int = 2, bound: str = "") -> ServerRow:
    point = {"rate": 100.0, "throughput": throughput, "duration_s": 0.5, "unfinished": 0 if p99 else 3,
             "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": p99, "max": p99}, "queue_ms": {"p50": 0.1, "p99": 0.5}}
    return ServerRow(id=f"m-ort_cpu-fp32-dynamic-server-b1-n{n}-{rate}", model="m", backend="ort_cpu", recipe="fp32",
                     profile="dynamic", batch=1, concurrency=n, rate=rate, bound=bound, status="pass", capacity=200.0,
                     offered_rate=100.0 if throughput else None, throughput=throughput,
                     latency_ms={"p50": 1.0, "p99": p99}, points=[point], device=DEVICE,
                     search={"statement": "100.0 req/s keeps p99<=5ms", "bound_ms": 5.0} if bound else {})


def test_new_rows_round_trip_and_key_their_cases_apart():
    for row in (selfcheck(), server("r90pct", 90.0, 3.0), server("search", 100.0, 4.0, bound="p99<=5ms")):
        data = json.loads(json.dumps(row.to_dict()))
        assert data["schema"] == SCHEMA_VERSION and parse_row(data, "r") == row
    assert selfcheck("consistency").key() != selfcheck("determinism").key()
    assert server("r90pct", 90.0, 3.0).key() != server("r50pct", 50.0, 1.0).key()
    # an accuracy row's shape is part of its case; one written before shapes existed ran at opt
    old = {"schema": 3, "type": "accuracy", "id": "m-ort_cpu-fp32-dynamic", "model": "m", "backend": "ort_cpu",
           "recipe": "fp32", "profile": "dynamic", "status": "pass", "device": DEVICE}
    opt = parse_row(old, "r")
    assert isinstance(opt, AccuracyRow) and opt.shape == "opt"
    at_max = parse_row({**old, "schema": SCHEMA_VERSION, "shape": "max", "id": "m-ort_cpu-fp32-dynamic-max"}, "r")
    assert opt.key() != at_max.key() and at_max.label == "m-ort_cpu-fp32-dynamic-max"


def test_a_selfcheck_that_starts_failing_is_a_regression():
    cmp = compare_rows([selfcheck()], [selfcheck(status="fail", rel=13.7)])
    assert cmp.regressions == 1 and cmp.changes[0].what == "status"


def test_the_report_marks_the_configuration_serving_most_within_the_bound():
    rows = [server("search", 100.0, 4.0, n=1, bound="p99<=5ms"), server("search", 180.0, 4.5, n=2, bound="p99<=5ms"),
            server("search", 0.0, None, n=4, bound="p99<=5ms"), server("r90pct", 90.0, 3.0)]
    best = best_within_bound(rows)
    assert list(best.values())[0].concurrency == 2
    text = "\n".join(server_section(rows))
    assert "fp32 dynamic b1 n2 **best**" in text and "| none " in text and "Every rate served" in text
    assert "100.0 req/s keeps p99<=5ms" in text and "unfinished" in text
    text = "\n".join(selfcheck_section([selfcheck(status="fail", rel=13.7)]))
    assert "sample #2 at position 6 of a batch of 8" in text and "**FAIL**" in text and "13.7" in text
