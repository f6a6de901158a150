"""Past one process and one host, on this CPU machine: shards run apart and gathered give the unsharded run's rows;
pytest-xdist workers pinned to GPUs (a caller's CUDA_VISIBLE_DEVICES, no GPU needed to check the pinning); a
report gathered from two (simulated) devices shows them side by side."""

from __future__ import annotations

import json

import pytest

from harness.cli import main
from harness.results import ROWS, RowWriter, load_results

SELECT = ("-m", "accuracy or perf", "--eval-size=8", "--models=ranker,encoder", "--recipes=fp32,fp16",
          "--perf-recipes=fp32", "--perf-profiles=dynamic", "--perf-modes=serial", "--perf-batches=1",
          "--perf-duration=0.05", "--perf-warmup=0.01")


def keys_and_verdicts(report):
    """Each row's key, and its verdict for accuracy rows (a perf row's stability is the machine's business)."""
    return {r.key(): (r.status if r.TYPE == "accuracy" else "measured" if r.throughput else r.status)
            for r in load_results(report).rows}


def test_two_shards_run_apart_and_gathered_give_the_unsharded_rows_and_verdicts(project, capsys):
    whole = project.run(*SELECT, report="whole")
    whole.assert_outcomes(passed=10)  # 2 models x 2 recipes x 2 profiles, and 2 perf cases
    durations = project.path / "whole" / "results.json"
    first = project.run(*SELECT, "--shard=1/2", f"--shard-durations={durations}", report="shard1")
    second = project.run(*SELECT, "--shard=2/2", f"--shard-durations={durations}", report="shard2")
    out = {}
    for name, result in (("shard1", first), ("shard2", second)):
        outcomes = result.parseoutcomes()
        assert result.ret == 0 and outcomes.get("passed", 0) >= 1, result.stdout.str()
        assert f"shard {name[-1]}/2: {outcomes['passed']} of 10 collected tests, balanced by 10 durations from" in \
            result.stdout.str()
        out[name] = keys_and_verdicts(project.path / name)
    assert not set(out["shard1"]) & set(out["shard2"])  # disjoint
    # pytest-xdist workers each collect and must keep the same tests: they do, and the shard is the same
    parallel = project.run(*SELECT[2:], "-m", "accuracy", "--shard=2/2", f"--shard-durations={durations}", "-n", "2",
                           report="shard2-n2")
    assert parallel.ret == 0, parallel.stdout.str()
    assert set(keys_and_verdicts(project.path / "shard2-n2")) == {k for k in out["shard2"] if k[0] == "accuracy"}
    assert main(["report", str(project.path / "shard1"), str(project.path / "shard2"),
                 "--out", str(project.path / "merged")]) == 0
    assert keys_and_verdicts(project.path / "merged") == keys_and_verdicts(project.path / "whole")
    assert "## Across devices" not in project.report("merged")  # one host, one CPU: one device
    capsys.readouterr()

    # the same rows as if two GPUs had run them: each case side by side in the gathered report
    rows = load_results(project.path / "whole").rows
    for k in (0, 1):
        w = RowWriter(project.path / f"gpu{k}" / ROWS / f"20250101-00000{k}-simgpu" / "gw0.jsonl")
        for r in rows:
            data = r.to_dict()
            data.update(run_id=f"20250101-00000{k}-simgpu", backend="ort_cuda",
                        device={"host": "sim", "kind": "gpu", "name": "Simulated GPU", "index": k,
                                "uuid": f"GPU-sim-{k}"})
            w.write(data)
        w.close()
    assert main(["report", str(project.path / "gpu0"), str(project.path / "gpu1"), "--out",
                 str(project.path / "two")]) == 0
    section = project.report("two").split("## Across devices", 1)[1].split("\n## ", 1)[0]
    lines = [x for x in section.splitlines() if x.startswith(("| ranker", "| encoder"))]
    assert len(lines) == len(rows) and all("sim gpu0" in section and "sim gpu1" in section for _ in lines)
    assert f"{len(rows)} case(s) ran on more than one device; 0 on one only" in section


WHERE = '''
import json, os

def test_where(worker_id):
    where = os.path.join(os.environ["WHERE"], worker_id + ".json")
    with open(where, "w") as f:
        json.dump({k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "HARNESS_GPU",
                   "HARNESS_CPUS")} | {"affinity": sorted(os.sched_getaffinity(0))}, f)
'''


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_setaffinity"), reason="CPU pinning is Linux's")
def test_each_worker_is_pinned_to_its_gpu_from_the_callers_list_before_it_starts(project, monkeypatch, tmp_path):
    project.pytester.makepyfile(test_where=WHERE)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # a scheduler's allocation
    monkeypatch.setenv("WHERE", str(tmp_path))
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    result = project.pytester.runpytest_subprocess("test_where.py", "-n", "auto", "--gpus", "all", "--dist", "each")
    result.assert_outcomes(passed=2)  # -n auto: one worker per GPU, each running the test
    assert "harness: 2 workers, one per GPU (CUDA_VISIBLE_DEVICES='3,5'): gw0 GPU 3" in result.stdout.str()
    gw0, gw1 = (json.loads((tmp_path / f"gw{k}.json").read_text()) for k in (0, 1))
    assert (gw0["CUDA_VISIBLE_DEVICES"], gw1["CUDA_VISIBLE_DEVICES"]) == ("3", "5")
    assert gw0["CUDA_DEVICE_ORDER"] is None  # the caller's numbering, under the caller's order
    assert set(gw0["affinity"]).isdisjoint(gw1["affinity"])  # CPUs of their own (this host's, split)
    assert all(w["HARNESS_CPUS"] for w in (gw0, gw1))
    # a single GPU without workers pins this very process
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    single = project.pytester.runpytest_subprocess("test_where.py", "--gpus", "1")
    single.assert_outcomes(passed=1)
    assert "harness: this process pinned to GPU 5" in single.stdout.str()


def test_perf_on_gpu_workers_needs_a_gpu_per_worker_and_leaves_cpu_perf_out(project, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    quick = ("--models=ranker", "--recipes=fp32", "--perf-recipes=fp32", "--perf-profiles=dynamic",
             "--perf-modes=serial", "--perf-batches=1", "--perf-duration=0.05", "--eval-size=8")
    crowded = project.run("-m", "perf", *quick, "-n", "3", "--gpus", "all")
    assert crowded.ret == pytest.ExitCode.USAGE_ERROR
    assert ("perf tests need a GPU of their own per worker: -n 3 with --gpus all puts 3 workers on 2 GPU(s) (3, 5); "
            "use -n auto") in crowded.stderr.str()
    result = project.run("-m", "accuracy or perf", *quick, "-n", "auto", "--gpus", "all", "-rs")
    # accuracy spreads over the GPU workers; ort_cpu's perf case would time CPUs the workers share
    result.assert_outcomes(passed=2, skipped=1)
    out = result.stdout.str()
    assert "perf cases of CPU backends do not run on GPU workers" in out
    assert "builds never beside a timed case (host lock)" in out
    rows = project.results()
    assert {r["worker"] for r in rows} <= {"gw0", "gw1"} and len(rows) == 2
    assert all(r["env"]["cpu_affinity_from"].startswith("no GPU topology from NVML") for r in rows)
    assert all(r["device"]["kind"] == "cpu" for r in rows)  # ort_cpu ran on the host's CPU, wherever pinned
