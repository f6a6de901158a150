"""The runtime side of the TensorRT contract, per version: the order of the execution context's calls,
CUDA-graph capture and its refusals, profiles shared between contexts, data-dependent outputs, shape
tensors in host memory, plans rebuilt when they will not deserialize, and everything released on every
failure path (the context before its stream)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.backends.base import RunnerOptions
from harness.cache import CacheWarning
from harness.cuda import CudaError
from harness.errors import BuildError, HarnessError, ModeUnsupported
from harness.perf import PerfCase, measure_mode
from harness.resources import ResourceMonitor
from harness.timing import TimingPolicy
from tests.contract import models

CONTEXT = "IExecutionContext."
X4 = np.arange(32, dtype=np.float32).reshape(4, 8) - 8


def engine_for(backend, cache, path, profile=models.DYNAMIC, **options):
    return backend.build(path, profile, cache, label=f"{path.stem}/{backend.name}/fp32-{profile.name}",
                         model_hash=path.stem, options=options)


def context_calls(world, start=0):
    """The execution context's calls and graph capture, with their first argument."""
    keep = (CONTEXT, "cuda.Graph.")
    return [(n.removeprefix(CONTEXT), a[0] if a else None) for n, a in world.calls[start:] if n.startswith(keep)]


def released(world, engine):
    """Nothing left: no CUDA handle, no profile slot, no live execution context."""
    contexts = world.names().count("IExecutionContext") - world.names().count("IExecutionContext.__del__")
    return world.cuda.leaks() == {} and engine.slots.in_use() == 0 and contexts == 0


def test_calls_follow_trtexecs_order_and_a_graph_is_recaptured_only_on_a_shape_change(world, backend, cache, tmp_path):
    engine = engine_for(backend, cache, models.two_inputs(tmp_path / "two.onnx"), models.TWO)
    m4 = np.full((4, 1), 0.5, np.float32)
    with engine.runner(RunnerOptions(cuda_graph=True)) as runner:
        out = runner.infer({"x": X4, "m": m4})
        np.testing.assert_array_equal(out["y"], 2 * X4)  # through the addresses it was given
        first = [
            ("set_optimization_profile_async", 0),
            ("set_input_shape", "x"), ("set_input_shape", "m"),  # every input shape ...
            ("get_tensor_shape", "y"),  # ... before any output shape ...
            ("set_tensor_address", "x"), ("set_tensor_address", "m"), ("set_tensor_address", "y"),  # ... then addresses
            ("execute_async_v3", runner.stream.ptr),  # a plain enqueue applies deferred updates ...
            ("cuda.Graph.begin_capture", runner.stream.handle), ("execute_async_v3", runner.stream.ptr),
            ("cuda.Graph.end_capture", runner.stream.handle),  # ... then the capture
            ("cuda.Graph.launch", runner.stream.handle)]
        assert [c for c in context_calls(world) if c[0] != "is_stream_capturable"] == first
        if world.flavor.rtx:  # TensorRT-RTX is asked first whether the context can be captured
            assert ("is_stream_capturable", runner.stream.ptr) in context_calls(world)
        mark = len(world.calls)
        np.testing.assert_array_equal(runner.infer({"x": X4 + 1, "m": m4})["y"], 2 * (X4 + 1))
        assert context_calls(world, mark) == [("cuda.Graph.launch", runner.stream.handle)]  # same shapes: replay
        mark = len(world.calls)
        x2 = X4[:2].copy()
        np.testing.assert_array_equal(runner.infer({"x": x2, "m": m4[:2]})["y"], 2 * x2)
        again = [c[0] for c in context_calls(world, mark) if c[0] != "is_stream_capturable"]
        assert again == ["cuda.Graph.close", "set_input_shape", "set_input_shape", "get_tensor_shape", "set_tensor_address",
                         "set_tensor_address", "set_tensor_address", "execute_async_v3", "cuda.Graph.begin_capture",
                         "execute_async_v3", "cuda.Graph.end_capture", "cuda.Graph.launch"]
    assert released(world, engine)


def test_concurrent_runners_share_the_one_profile(world, backend, cache, tmp_path):
    engine = engine_for(backend, cache, models.relu(tmp_path / "relu.onnx"))
    case = PerfCase("relu", backend.name, "fp32", "dyn", "threadpool", 4, concurrency=4, cuda_graph=True)
    policy = TimingPolicy(warmup=0.01, min_duration=0.05, min_iters=8)
    m, facts = measure_mode(engine, case, {"x": X4}, policy, None, ResourceMonitor(gpu_index=None))
    assert m.iterations >= 8 and facts["profile"] == 0 and facts["profile_shared"]
    assert world.args(CONTEXT + "set_optimization_profile_async") == [(0, s) for _p, s in
                                                                      world.args(CONTEXT + "set_optimization_profile_async")]
    assert len(world.args(CONTEXT + "set_optimization_profile_async")) == 4
    assert released(world, engine)


def test_profile_copies_go_one_per_runner_and_are_refused_when_all_are_taken(world, backend, cache, tmp_path):
    engine = engine_for(backend, cache, models.relu(tmp_path / "relu.onnx"), profile_copies=2)
    a, b = engine.runner(), engine.runner()
    assert {a.profile_index, b.profile_index} == {0, 1}
    with pytest.raises(ModeUnsupported, match="built with 2 copies .* all in use"):
        engine.runner()
    a.close()
    c = engine.runner()
    assert c.profile_index == 0
    b.close()
    c.close()
    assert released(world, engine)


def test_a_refused_profile_releases_the_context_stream_events_and_slot(world, backend, cache, tmp_path):
    engine = engine_for(backend, cache, models.relu(tmp_path / "relu.onnx"), profile_copies=2)
    world.fail("set_optimization_profile_async")  # the binding raises; it never returns False
    with pytest.raises(HarnessError, match=r"setting optimization profile 0 of .*plan.engine.*failed:\n"
                                           r"  setOptimizationProfileAsync: profile index 0 refused"):
        engine.runner()
    assert released(world, engine)
    runners = [engine.runner(), engine.runner()]  # both copies are free again: nothing says "all in use"
    for r in runners:
        r.close()
    assert released(world, engine)


@pytest.mark.parametrize("point, error", [
    ("cuda.Stream", CudaError), ("cuda.Event", CudaError), ("create_execution_context", BuildError),
    ("set_optimization_profile_async", HarnessError), ("cuda.PinnedBuffer", CudaError),
    ("cuda.DeviceBuffer", CudaError), ("set_tensor_address", HarnessError), ("execute", HarnessError),
    ("cuda.Graph", ModeUnsupported)])
def test_every_failure_path_releases_everything(world, backend, cache, tmp_path, point, error):
    engine = engine_for(backend, cache, models.relu(tmp_path / "relu.onnx"), profile_copies=2)
    world.fail(point)
    with pytest.raises(error):
        with engine.runner(RunnerOptions(cuda_graph=True)) as runner:
            runner.infer({"x": X4})
    assert released(world, engine), (world.cuda.leaks(), engine.slots.in_use())


def test_the_context_is_destroyed_before_its_stream(world, backend, cache, tmp_path):
    engine = engine_for(backend, cache, models.relu(tmp_path / "relu.onnx"))
    runner = engine.runner(RunnerOptions(cuda_graph=True))
    runner.infer({"x": X4})
    stream = runner.stream.handle
    runner.close()
    names = world.names()
    assert names.index("IExecutionContext.__del__") < names.index("cuda.Stream.close")
    assert world.args("cuda.Stream.close") == [(stream,)] and names.index("cuda.Graph.close") < names.index(
        "IExecutionContext.__del__")
    assert released(world, engine)


def test_a_refused_tensor_address_is_an_error_naming_the_tensor(world, backend, cache, tmp_path):
    engine = engine_for(backend, cache, models.relu(tmp_path / "relu.onnx"))
    world.fail("set_tensor_address", 2)
    with engine.runner() as runner, pytest.raises(HarnessError, match=r"set_tensor_address\('y'\) failed:\n  "
                                                                       r"setTensorAddress: y refused"):
        runner.infer({"x": X4})
    assert "execute_async_v3" not in [c for c, _ in context_calls(world)]


def test_a_graph_capture_failure_skips_with_tensorrts_message(world, backend, cache, tmp_path):
    engine = engine_for(backend, cache, models.relu(tmp_path / "relu.onnx"))
    world.capture_fails = True
    with engine.runner(RunnerOptions(cuda_graph=True)) as runner:
        with pytest.raises(ModeUnsupported, match=r"(?s)CUDA graph capture failed.*data-dependent control flow, which "
                                                  r"cannot be captured into a CUDA graph"):
            runner.prepare({"x": X4})
        assert "cuda.Graph.abandon_capture" in world.names() and world.cuda.leaks().get("Graph") is None
    assert released(world, engine)
    with engine.runner() as plain:  # without a graph the same engine runs
        np.testing.assert_array_equal(plain.infer({"x": X4})["y"], 2 * X4)


@pytest.mark.parametrize("world", ["rtx"], indirect=True)
def test_an_rtx_context_that_cannot_be_captured_is_refused_before_capturing(world, backend, cache, tmp_path):
    world.gpu = False
    engine = engine_for(backend, cache, models.relu(tmp_path / "relu.onnx"), compute_capabilities=["SM89"])
    world.gpu, world.rtx_capturable = True, False
    with engine.runner(RunnerOptions(cuda_graph=True)) as runner:
        with pytest.raises(ModeUnsupported, match="is_stream_capturable is False"):
            runner.prepare({"x": X4})
    assert "cuda.Graph.begin_capture" not in world.names() and released(world, engine)


def test_data_dependent_outputs_come_through_an_output_allocator(world, backend, cache, tmp_path):
    engine = engine_for(backend, cache, models.nonzero(tmp_path / "nz.onnx"))
    with engine.runner() as runner:
        for rows in (3, 0, 5):  # 0: NonZero found nothing
            world.dds_rows = rows
            out = runner.infer({"x": X4})
            np.testing.assert_array_equal(out["idx"], np.arange(2 * rows).reshape(2, rows))
            np.testing.assert_array_equal(out["y"], 2 * X4)
        assert world.args(CONTEXT + "set_output_allocator") == [("idx",)]
        assert ("idx",) not in world.args(CONTEXT + "set_tensor_address")
        assert list(out) == ["y", "idx"] and runner.describe()["data_dependent_outputs"] == ["idx"]
    assert released(world, engine)
    with engine.runner(RunnerOptions(cuda_graph=True)) as runner:
        with pytest.raises(ModeUnsupported, match="output\\(s\\) idx have data-dependent shapes"):
            runner.prepare({"x": X4})
    assert released(world, engine)
    world.reached.clear()
    world.dds_rows = 3
    world.fail("cuda.DeviceBuffer", 3)  # x's, y's, then the allocator's for idx
    with engine.runner() as runner, pytest.raises(HarnessError, match=r"(?s)execute_async_v3 failed:.*gave no memory "
                                                                       r"for idx.*output 'idx': allocating 48 bytes failed"):
        runner.infer({"x": X4})
    assert released(world, engine)


def test_shape_tensor_inputs_are_given_in_host_memory_before_output_shapes_are_read(world, backend, cache, tmp_path):
    engine = engine_for(backend, cache, models.reshape(tmp_path / "reshape.onnx"), models.RESHAPE)
    with engine.runner() as runner:
        out = runner.infer({"x": X4, "s": np.array([8, 4], np.int64)})
        np.testing.assert_array_equal(out["y"], 2 * X4.reshape(8, 4))
        calls = context_calls(world)
        assert calls.index(("set_tensor_address", "s")) < calls.index(("get_tensor_shape", "y"))
        assert len(world.args("cuda.copy_to_device")) == 1  # x only: s is read where it is, on the host
        out = runner.infer({"x": X4, "s": np.array([2, 16], np.int64)})  # new values: new output shape
        np.testing.assert_array_equal(out["y"], 2 * X4.reshape(2, 16))
    assert released(world, engine)


def test_a_plan_that_does_not_deserialize_is_rebuilt_once_with_a_warning(world, backend, cache, tmp_path):
    engine = engine_for(backend, cache, models.relu(tmp_path / "relu.onnx"))
    old = engine.entry.path
    world.fail("deserialize")
    with pytest.warns(CacheWarning, match="(?s)is unusable \\(TensorRT cannot deserialize the plan: .*Serialization"):
        with engine.runner() as runner:
            np.testing.assert_array_equal(runner.infer({"x": X4})["y"], 2 * X4)
    assert world.names().count("Builder.build_serialized_network") == 2 and cache.stats.rebuilt == 1
    assert engine.entry.path == old and engine.entry.outcome == "rebuilt"
    again = engine_for(backend, cache, models.relu(tmp_path / "relu.onnx"))
    world.reached.clear()
    world.fail("deserialize", 1, 2)  # the plan, and the plan rebuilt from it
    with pytest.warns(CacheWarning), pytest.raises(BuildError, match="rebuilt just now"):
        again.runner()
    assert released(world, again)
