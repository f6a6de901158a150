"""How the GPU runner (shared by TensorRT and ONNX Runtime CUDA) waits and times, against the fake CUDA module:
no timing event in the timed loop, trtexec's breakdown in a pass after it, and the host's wait (spin or block)
as ``--perf-sync`` asks."""

from __future__ import annotations

import numpy as np
import pytest

from harness.breakdown import pass_length
from harness.perf import PerfCase, measure_mode
from harness.resources import ResourceMonitor
from harness.timing import TimingPolicy
from tests.contract import models

EXECUTE = "IExecutionContext.execute_async_v3"
X4 = np.arange(32, dtype=np.float32).reshape(4, 8) - 8
POLICY = TimingPolicy(warmup=0.005, min_duration=0.02, min_iters=12)


def measure(world, backend, cache, tmp_path, mode="serial", **case):
    path = models.relu(tmp_path / "relu.onnx")
    engine = backend.build(path, models.DYNAMIC, cache, label=f"relu/{backend.name}/fp32-dyn", model_hash="relu")
    world.clear()
    c = PerfCase("relu", backend.name, "fp32", "dyn", mode, 4, **case)
    return measure_mode(engine, c, {"x": X4}, POLICY, None, ResourceMonitor(gpu_index=None))


def events(world):
    """(call index, handle, timing, blocking) of each event made."""
    return [(i, a[0], a[1], a[2]) for i, (n, a) in enumerate(world.calls) if n == "cuda.Event"]


@pytest.mark.parametrize("mode, n", [("serial", 1), ("multistream", 2), ("threadpool", 2)])
def test_timing_events_exist_only_for_the_breakdown_pass_after_the_window(world, backend, cache, tmp_path, mode, n):
    m, facts = measure(world, backend, cache, tmp_path, mode, concurrency=n)
    made = events(world)
    # each runner: one completion event that records no time; then, after the window, the first runner's
    # four timing events
    assert [(t, b) for _, _, t, b in made] == [(False, False)] * n + [(True, False)] * 4
    first_timing = made[n][0]
    executes = [i for i, (name, _) in enumerate(world.calls) if name == EXECUTE]
    after = [i for i in executes if i > first_timing]
    assert len(after) == m.breakdown.iterations == pass_length(m.iterations)
    assert len(executes) - len(after) >= m.iterations + m.warmup_iters  # warm-up and window: before them
    assert facts["sync"] == "spin"


def test_the_breakdown_gives_trtexecs_parts_and_both_throughputs(world, backend, cache, tmp_path):
    m, _ = measure(world, backend, cache, tmp_path)
    s = m.summary()  # the fake's events say 1 ms between any two
    b = s["breakdown_ms"]
    assert b["h2d"]["p50"] == b["compute"]["p50"] == b["d2h"]["p50"] == pytest.approx(1.0)
    assert b["latency"]["p50"] == pytest.approx(3.0) and b["iterations"] == m.breakdown.iterations
    assert 0 < b["enqueue"]["p50"] < 1000 and s["gpu_ms"] == b["compute"]
    assert s["throughput_compute"] == pytest.approx(4 / 1e-3) and s["throughput_transfers"] == pytest.approx(4 / 3e-3)
    # each pass iteration, in trtexec's order: start, copies in, compute, copies out, end, then wait for the end
    e0, e1, e2, e3 = (h for _, h, timing, _ in events(world) if timing)
    stream = next(a[0] for n, a in world.calls if n == "cuda.Stream")
    ptr = 0x5000 + stream  # the fake's cudaStream_t for that stream
    last = max(i for i, (n, _) in enumerate(world.calls) if n == EXECUTE)
    assert [(n, a[0]) for n, a in world.calls[last - 3:last + 5]] == [
        ("cuda.Event.record", e0), ("cuda.copy_to_device", stream), ("cuda.Event.record", e1), (EXECUTE, ptr),
        ("cuda.Event.record", e2), ("cuda.copy_to_host", stream), ("cuda.Event.record", e3),
        ("cuda.Event.synchronize", e3)]


@pytest.mark.parametrize("sync", ["spin", "block"])
def test_the_host_waits_as_sync_says(world, backend, cache, tmp_path, sync):
    m, facts = measure(world, backend, cache, tmp_path, sync=sync)
    made = events(world)
    done = made[0][1]
    assert made[0][2:] == (False, sync == "block") and facts["sync"] == sync
    first_timing = made[1][0]
    window = world.calls[:first_timing]
    waits_on_done = sum(1 for n, a in window if n == "cuda.Event.synchronize" and a[0] == done)
    stream_syncs = sum(1 for n, _ in window if n == "cuda.Stream.synchronize")
    timed = m.iterations + m.warmup_iters
    if sync == "block":  # every run sleeps on the blocking-sync event
        assert waits_on_done >= timed
    else:  # CUDA's default wait on the stream; the completion event is left alone
        assert waits_on_done == 0 and stream_syncs >= timed
