"""Report folders of several hosts gathered into one, and the same cases side by side on each device."""

from __future__ import annotations

import json

from harness.cli import main
from harness.device_report import labels
from harness.results import ROWS, RowWriter, load_results
from harness.rows import AccuracyRow, PerfRow


def device(host: str, index: int) -> dict:
    return {"host": host, "kind": "gpu", "name": "NVIDIA H200", "index": index, "uuid": f"GPU-{host}-{index}"}


def rows_on(dev: dict, run: str, rate: float, status: str = "pass") -> list:
    common = dict(model="ranker", backend="ort_cuda", recipe="fp16", profile="dynamic", run_id=run,
                  time=f"{run[:8]}T00:00:00", device=dev, env={"host": dev["host"], "cpu_affinity": "0-7"})
    return [AccuracyRow(id="ranker-ort_cuda-fp16-dynamic", status=status, metrics={"rel_l2.p99": 0.0009}, **common),
            PerfRow(id="ranker-ort_cuda-fp16-dynamic-serial-b1", mode="serial", batch=1, status="pass",
                    stable=True, throughput=rate, latency_ms={"p50": 1000 / rate, "p99": 1500 / rate},
                    resources={"gpu_util": 90.0}, **common)]


def host_folder(path, run, *devices_rates):
    for k, (dev, rate, status) in enumerate(devices_rates):
        w = RowWriter(path / ROWS / run / f"gw{k}.jsonl")
        for r in rows_on(dev, run, rate, status):
            w.write(r.to_dict())
        w.close()
    return path


def test_two_hosts_gathered_show_each_case_side_by_side(tmp_path, capsys):
    a = host_folder(tmp_path / "node-a", "20250101-000000-aaaaaa", (device("node-a", 0), 20000.0, "pass"),
                    (device("node-a", 1), 19000.0, "pass"))
    b = host_folder(tmp_path / "node-b", "20250101-000100-bbbbbb", (device("node-b", 0), 10000.0, "fail"))
    out = tmp_path / "merged"
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0
    assert "gathered 3 row file(s) from 2 folder(s)" in capsys.readouterr().out
    rows = load_results(out).rows
    assert len(rows) == 6 and len({r.key() for r in rows}) == 6 and len({r.case_key() for r in rows}) == 2
    report = (out / "REPORT.md").read_text()
    section = report.split("## Across devices", 1)[1].split("\n## ", 1)[0]
    # the devices, then each case in one line with a column per device
    for name in ("node-a gpu0", "node-a gpu1", "node-b gpu0"):
        assert f"| {name} " in section
    line = next(x for x in section.splitlines() if x.startswith("| ranker ") and "serial b1" in x)
    assert "20,000" in line and "19,000" in line and "10,000" in line and "2.00x" in line
    acc = next(x for x in section.splitlines() if x.startswith("| ranker ") and "**differ**" in x)
    assert acc.count("pass") == 2 and "**FAIL**" in acc
    # the per-model tables say which device each line is
    assert "| device " in report.split("## Accuracy against", 1)[1]
    # gathering again changes nothing; a folder of its own is re-rendered as before
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0
    assert len(load_results(out).rows) == 6
    assert main(["report", str(a)]) == 0 and "## Across devices" in (a / "REPORT.md").read_text()


def test_a_source_that_kept_only_its_results_json_is_gathered_too(tmp_path):
    a = host_folder(tmp_path / "a", "20250101-000000-aaaaaa", (device("node-a", 0), 5000.0, "pass"))
    assert main(["report", str(a)]) == 0
    for f in (a / ROWS).rglob("*.jsonl"):
        f.unlink()  # an artifact upload that kept results.json alone
    out = tmp_path / "merged"
    assert main(["report", str(a), "--out", str(out)]) == 0
    assert len(load_results(out).rows) == 2


def test_several_folders_need_out_and_labels_stay_unique(tmp_path, capsys):
    assert main(["report", str(tmp_path), str(tmp_path)]) == 2
    assert "name the folder of the gathered report with --out" in capsys.readouterr().err
    same_host = [rows_on({**device("localhost", 0), "uuid": u}, "r", 1.0)[0] for u in ("GPU-1111", "GPU-2222")]
    assert sorted(labels(same_host).values()) == ["localhost gpu0 GPU-1111", "localhost gpu0 GPU-2222"]
    json.dumps(labels(same_host))
