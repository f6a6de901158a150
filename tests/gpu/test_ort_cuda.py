"""ONNX Runtime CUDA on the harness's buffers and streams, on a real GPU."""

import numpy as np
import pytest

from harness.backends import RunnerOptions, get_backend
from harness.backends.ort_setup import variants
from harness.cache import Cache
from harness.errors import ModeUnsupported
from harness.registry import load_registry
from harness.resources import ResourceMonitor
from harness.timing import TimingPolicy, run_serial
from tests.helpers import FIXTURES

backend = get_backend("ort_cuda")
pytestmark = pytest.mark.skipif(backend.unavailable() is not None, reason=f"ort_cuda: {backend.unavailable()}")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    spec = load_registry(FIXTURES / "models.toml").models["classifier"]
    return backend.build(spec.path, spec.profiles["dynamic"], Cache(tmp_path_factory.mktemp("c")), label="cls",
                         model_hash=spec.model_bytes_hash())


@pytest.fixture(scope="module")
def batch():
    return {"image": np.random.default_rng(1).uniform(-2, 2, (4, 3, 224, 224)).astype(np.float32)}


@pytest.fixture(scope="module")
def expected(batch):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(FIXTURES / "models" / "classifier.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(None, batch)[0]


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_infer_through_device_buffers_matches_the_cpu(engine, batch, expected):
    with engine.runner() as r:
        out = r.infer(batch)["logits"]
        assert r.describe()["tf32"] is False
    assert out.shape == (4, 1000) and rel(out, expected) < 1e-4


@pytest.mark.parametrize("resident", [True, False])
@pytest.mark.parametrize("graph", [False, True])
@pytest.mark.parametrize("sync", ["spin", "block"])
def test_run_submit_and_graphs_give_the_same_outputs(engine, batch, expected, resident, graph, sync):
    with engine.runner(RunnerOptions(cuda_graph=graph, sync=sync)) as r:
        r.prepare(batch, resident=resident)
        r.run()
        fn, args = r.timed_call()
        fn(*args)
        r.submit()
        r.wait()
        assert rel(r.fetch_outputs()["logits"], expected) < 1e-4
        assert r.describe()["sync"] == sync
        b = r.breakdown(5)
        assert b.iterations == 5 and all(x > 0 for part in (b.h2d, b.compute, b.d2h, b.enqueue) for x in part)
        assert rel(r.fetch_outputs()["logits"], expected) < 1e-4  # the pass copied the same batch through
        assert all(t > 0 for t in r.gpu_times(5))


@pytest.mark.parametrize("stream,sync", [("own", "spin"), ("own", "block"), ("ort", "spin")])
def test_a_copied_input_run_moves_the_host_batch_of_that_moment(tmp_path_factory, batch, expected, stream, sync):
    # run() must upload what the host buffer holds when it is called and have the outputs in the host buffer when
    # it returns: read there, not through fetch_outputs (which copies again and waits), so a stale upload or a
    # download racing the compute would show
    spec = load_registry(FIXTURES / "models.toml").models["classifier"]
    eng = backend.build(spec.path, spec.profiles["dynamic"], Cache(tmp_path_factory.mktemp("cp")), label="cls",
                        model_hash=spec.model_bytes_hash(), options={"ort_setup": {"stream": stream}})
    reversed_batch = batch["image"][::-1].copy()
    with eng.runner(RunnerOptions(sync=sync)) as r:
        r.prepare(batch, resident=False)
        host_in, host_out = r._inputs["image"].host.array, r._outputs["logits"].host.array
        for k in range(3):
            host_in[...] = reversed_batch if k % 2 else batch["image"]
            r.run()
            want = expected[::-1] if k % 2 else expected
            assert rel(host_out, want) < 1e-4, f"run {k}"


@pytest.mark.parametrize("name", list(variants(gpu=True)))
def test_every_session_setup_gives_the_references_outputs(tmp_path_factory, batch, expected, name):
    setup = variants(gpu=True)[name]
    spec = load_registry(FIXTURES / "models.toml").models["classifier"]
    eng = backend.build(spec.path, spec.profiles["dynamic"], Cache(tmp_path_factory.mktemp("s")), label="cls",
                        model_hash=spec.model_bytes_hash(), options={"ort_setup": setup.describe(gpu=True)})
    assert eng.describe() == setup.describe(gpu=True)
    with eng.runner() as r:
        assert rel(r.infer(batch)["logits"], expected) < 1e-4
        r.prepare(batch)
        r.run()
        fn, args = r.timed_call()
        fn(*args)
        assert rel(r.fetch_outputs()["logits"], expected) < 1e-4
        if setup.stream == "ort":  # ONNX Runtime's own stream: synchronous only, no events on it
            assert r.breakdown(3) is None
            with pytest.raises(ModeUnsupported, match="stream=ort"):
                r.submit()
        else:
            assert r.breakdown(3).iterations == 3


def test_the_monitor_reads_the_gpus_state(engine, batch):
    with engine.runner() as r, ResourceMonitor(interval=0.02, gpu_index=0) as mon:
        r.prepare(batch)
        run_serial(r.timed_call(), TimingPolicy(warmup=0.05, min_duration=0.2, min_iters=20), batch=4)
    st = mon.state
    assert st["gpu_samples"] >= 5 and st["gpu_sm_mhz"] > 0 and st["gpu_mem_mhz"] > 0
    assert st["gpu_power_w"] > 0 and st["gpu_power_limit_w"] > 0 and st["gpu_temp_c_max"] > 0
    assert isinstance(st.get("gpu_reasons", {}), dict) and isinstance(st["gpu_other_processes"], list)
    assert isinstance(mon.flags, list) and mon.result["gpu_util"] is not None


def test_runners_on_their_own_streams_run_concurrently_and_correctly(engine, batch, expected):
    runners = [engine.runner() for _ in range(3)]
    for r in runners:
        r.prepare(batch)
    for _ in range(5):
        for r in runners:
            r.submit()
        for r in runners:
            r.wait()
    for r in runners:
        assert rel(r.fetch_outputs()["logits"], expected) < 1e-4
        r.close()


def test_serial_timing_of_a_resident_batch(engine, batch):
    with engine.runner() as r:
        r.prepare(batch)
        m = run_serial(r.timed_call(), TimingPolicy(warmup=0.1, min_duration=0.2, min_iters=20), batch=4)
        assert m.iterations >= 20 and m.throughput > 0
