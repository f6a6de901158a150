"""ONNX Runtime CUDA on the harness's buffers and streams, on a real GPU."""

import numpy as np
import pytest

from harness.backends import RunnerOptions, get_backend
from harness.cache import Cache
from harness.registry import load_registry
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
def test_run_submit_and_graphs_give_the_same_outputs(engine, batch, expected, resident, graph):
    with engine.runner(RunnerOptions(cuda_graph=graph)) as r:
        r.prepare(batch, resident=resident)
        r.run()
        fn, args = r.timed_call()
        fn(*args)
        r.submit()
        r.wait()
        assert r.last_gpu_seconds() > 0
        assert rel(r.fetch_outputs()["logits"], expected) < 1e-4
        assert all(t > 0 for t in r.gpu_times(5))


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
