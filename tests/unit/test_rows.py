"""The row schema: typed rows round-trip, unknown fields survive, old rows migrate, bad rows are named."""

from __future__ import annotations

import json

import pytest

from harness.rows import SCHEMA_VERSION, AccuracyRow, PerfRow, RowError, junit_properties, parse_row

# a row as the harness wrote it before the schema existed (version 1: no "schema" key)
V1_ACCURACY = {
    "type": "accuracy", "id": "ranker-ort_cpu-int8-dynamic", "model": "ranker", "backend": "ort_cpu",
    "recipe": "int8", "profile": "dynamic", "batch": 1, "status": "pass", "variant": "",
    "metrics": {"rel_l2.p99": 0.004, "top1.mean": 0.998},
    "budgets": [{"budget": "p99(rel_l2) <= 1%", "output": "score", "value": 0.004, "passed": True},
                {"budget": "mean(top1) >= 0.99", "output": "score", "value": 0.998, "passed": True}],
    "run_id": "20250101-010101-abcdef", "env": {"host": "h", "cores": 2, "cpu": "EPYC"},
}


def test_a_version_1_row_is_migrated_budgets_read_from_their_labels():
    row = parse_row(V1_ACCURACY, "results.json rows[0]")
    assert isinstance(row, AccuracyRow) and row.samples is None and row.status == "pass"
    p99, top1 = row.budgets
    assert (p99.statistic, p99.op, p99.bound, p99.better) == ("p99(rel_l2)", "<=", 0.01, "lower")
    assert (top1.statistic, top1.op, top1.bound, top1.better) == ("mean(top1)", ">=", 0.99, "higher")
    out = row.to_dict()
    assert out["schema"] == SCHEMA_VERSION and "variant" not in out
    assert parse_row(json.loads(json.dumps(out)), "again") == row


def test_fields_this_version_does_not_declare_are_kept_and_written_back():
    data = {**parse_row(V1_ACCURACY, "r").to_dict(), "stations": {"cycle_ms": 3.0}, "tags": ["a", "b"]}
    row = parse_row(data, "x.jsonl:3")
    assert row.extra == {"stations": {"cycle_ms": 3.0}, "tags": ["a", "b"]}
    again = row.to_dict()
    assert again["stations"] == {"cycle_ms": 3.0} and again["tags"] == ["a", "b"]
    # writers may set a field the schema does not know yet: it travels in extra, flat in the JSON
    row.update(doctor={"nodes": 3}, samples=16)
    assert row.samples == 16 and row.to_dict()["doctor"] == {"nodes": 3}


@pytest.mark.parametrize("change, message", [
    ({"type": "timing"}, "'type' must be one of accuracy, perf, build, station, doctor, selfcheck, server, got 'timing'"),
    ({"model": None}, "accuracy row field 'model' must be a string, got None"),
    ({"batch": "1"}, "accuracy row field 'batch' must be an integer or null, got '1'"),
    ({"status": 3}, "accuracy row field 'status' must be a string, got 3"),
    ({"metrics": [1, 2]}, "field 'metrics' must be an object, got [1, 2]"),
    ({"schema": 99}, "row schema 99 is newer than this harness's"),
    ({"budgets": [{"value": 1}]}, "budgets[0]: a budget must be an object with a 'budget' label"),
    ({"env": {"cores": "two"}}, "env: 'cores' must be an integer, got 'two'"),
])
def test_a_row_that_does_not_fit_names_the_file_line_and_field(change, message):
    with pytest.raises(RowError) as exc:
        parse_row({**V1_ACCURACY, **change}, "reports/rows/r/gw0.jsonl:12")
    assert str(exc.value).startswith("reports/rows/r/gw0.jsonl:12: ") and message in str(exc.value)


def test_a_perf_row_needs_its_key_fields():
    with pytest.raises(RowError, match=r"perf row lacks required field\(s\) mode, batch"):
        parse_row({"type": "perf", "model": "m", "backend": "b", "recipe": "r", "profile": "p"}, "f:1")
    row = parse_row({"type": "perf", "model": "m", "backend": "b", "recipe": "r", "profile": "p", "mode": "serial",
                     "batch": 4, "throughput": 10, "latency_ms": {"p50": 1.5, "p99": 3.0}, "status": "unstable",
                     "stable": False}, "f:2")
    assert isinstance(row, PerfRow) and row.concurrency == 1 and row.resident and row.throughput == 10
    # a row without a sync (the CPU's, or written before schema 5) is the default case, spin
    assert row.case_key() == ("perf", "m", "b", "r", "p", "serial", "4", "1", "True", "False", "spin")
    assert parse_row({**row.to_dict(), "sync": "spin"}, "f:3").case_key() == row.case_key()
    assert parse_row({**row.to_dict(), "sync": "block"}, "f:4").case_key() != row.case_key()
    # a row from before devices (no schema key) ran where its env says: here nothing, an unnamed CPU
    assert row.device == {"host": "", "kind": "cpu", "name": ""} and row.key() == (*row.case_key(), "|cpu|||")
    assert dict(junit_properties(row)) == {"status": "unstable", "throughput": "10", "p50_ms": "1.5",
                                           "p99_ms": "3", "stable": "no"}


def test_accuracy_junit_properties_are_the_budgeted_statistics():
    row = parse_row(V1_ACCURACY, "r")
    assert dict(junit_properties(row)) == {"status": "pass", "p99(rel_l2)": "0.004", "mean(top1)": "0.998"}


# a GPU row as schema 2 wrote it: the machine in env, no device
V2_GPU = {"schema": 2, "type": "accuracy", "id": "classifier-ort_cuda-fp16-dynamic", "model": "classifier",
          "backend": "ort_cuda", "recipe": "fp16", "profile": "dynamic", "status": "pass", "run_id": "r2",
          "env": {"host": "node1", "cpu": "Xeon", "gpu": "NVIDIA H200", "gpu_count": 2}}


def test_a_version_2_row_gets_its_device_from_its_environment():
    gpu = parse_row(V2_GPU, "r")
    # the harness then always ran on CUDA device 0: NVML's GPU 0; no UUID was recorded
    assert gpu.device == {"host": "node1", "kind": "gpu", "name": "NVIDIA H200", "index": 0}
    cpu = parse_row({**V2_GPU, "backend": "ort_cpu"}, "r")
    assert cpu.device == {"host": "node1", "kind": "cpu", "name": "Xeon"}
    again = parse_row(json.loads(json.dumps(gpu.to_dict())), "again")
    assert again.device == gpu.device and gpu.to_dict()["schema"] == SCHEMA_VERSION == 5


def test_a_version_3_gpu_perf_row_is_the_spin_case_of_its_device_and_unflagged():
    v3 = {"schema": 3, "type": "perf", "id": "classifier-ort_cuda-fp32-dynamic-serial-b8", "model": "classifier",
          "backend": "ort_cuda", "recipe": "fp32", "profile": "dynamic", "mode": "serial", "batch": 8,
          "throughput": 2.3e4, "status": "pass", "stable": True,
          "device": {"host": "node1", "kind": "gpu", "name": "NVIDIA H100", "index": 0, "uuid": "GPU-aaaa"}}
    old = parse_row(v3, "r")
    assert isinstance(old, PerfRow) and old.sync is None and old.state == {} and old.quotable
    new = parse_row({**v3, "schema": 5, "sync": "spin", "state": {"host_cpus": 16}}, "r")
    # the row written before sync existed and today's spin row are one case on one device: the newer replaces it
    assert old.key() == new.key() and old.case_key()[-1] == "spin"
    block = parse_row({**v3, "schema": 5, "id": v3["id"] + "-block", "sync": "block"}, "r")
    assert block.key() != new.key() and block.device == new.device
    assert old.to_dict()["schema"] == SCHEMA_VERSION and "sync" not in old.to_dict()


def test_the_same_case_on_two_gpus_or_two_hosts_has_two_keys_and_one_case_key():
    from harness.device_id import device_class, device_of

    env = {"host": "node1", "cpu": "Xeon", "gpu": "NVIDIA H200", "gpu_index": 0, "gpu_uuid": "GPU-aaaa"}
    rows = [parse_row({**V2_GPU, "schema": 3, "device": device_of(e, on_gpu=True)}, "r") for e in
            (env, {**env, "gpu_index": 1, "gpu_uuid": "GPU-bbbb"}, {**env, "host": "node2", "gpu_uuid": "GPU-cccc"})]
    assert len({r.key() for r in rows}) == 3 and len({r.case_key() for r in rows}) == 1
    assert {device_class(r.device) for r in rows} == {("gpu", "NVIDIA H200")}
    assert rows[1].key()[-1] == "node1|gpu|1|NVIDIA H200|GPU-bbbb"
    # a CPU backend's row names the host's CPU, whichever GPU its process was pinned to
    assert device_of(env, on_gpu=False) == {"host": "node1", "kind": "cpu", "name": "Xeon"}


def test_a_doctor_row_is_keyed_by_its_case_and_device_and_a_schema_3_row_reads_unchanged():
    from harness.rows import DoctorRow

    v3 = {**V2_GPU, "schema": 3, "device": {"host": "node1", "kind": "gpu", "name": "NVIDIA H200", "index": 1}}
    assert parse_row(v3, "r").to_dict() == {**parse_row(v3, "r").to_dict(), **v3, "schema": SCHEMA_VERSION}
    doc = DoctorRow(id="ocr_rec-ort_cpu-int8-minmax-dynamic", model="ocr_rec", backend="ort_cpu",
                    recipe="int8-minmax", profile="dynamic", status="fixed", keep_fp32=["a", "b"],
                    device={"host": "h", "kind": "cpu", "name": "EPYC"},
                    price={"throughput": {"fixed": 24.0, "failing": 32.0, "fp32": 46.0}})
    out = json.loads(json.dumps(doc.to_dict()))
    assert out["schema"] == SCHEMA_VERSION and parse_row(out, "r") == doc
    assert doc.key() == ("doctor", "ocr_rec", "ort_cpu", "int8-minmax", "dynamic", "h|cpu||EPYC|")
    assert dict(junit_properties(doc)) == {"status": "fixed", "keep_fp32": "2", "price": "0.75"}
