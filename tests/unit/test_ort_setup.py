"""ONNX Runtime's session setup as a measured, recorded choice: what the engine file is, the optimization
level at load, the CUDA options; parsed with errors that name the option, part of the cache key where it
changes the file, recorded in every row."""

from __future__ import annotations

import hashlib

import numpy as np
import onnxruntime as ort
import pytest

from harness.backends import RunnerOptions, get_backend
from harness.backends.ort_setup import OrtSetup, variants
from harness.cache import Cache
from harness.errors import HarnessError, ModeUnsupported
from harness.perf import PerfCase, check_perf
from harness.registry import load_registry
from harness.session import HarnessSession, PerfSettings, Settings
from tests.helpers import FIXTURES


def test_a_setup_is_parsed_over_a_base_and_bad_keys_or_values_are_named():
    s = OrtSetup.parse("engine=source, load=ALL,nhwc=yes,conv_algo=heuristic", base=OrtSetup(arena="as_requested"))
    assert s == OrtSetup(engine="source", load="all", nhwc=True, conv_algo="HEURISTIC", arena="as_requested")
    assert s.label == "source+all +nhwc +HEURISTIC +arena:as_requested"
    with pytest.raises(HarnessError, match=r"--ort-setup: unknown ONNX Runtime setup key 'lvl'; known: engine, load"):
        OrtSetup.parse("lvl=all")
    with pytest.raises(HarnessError, match=r"--ort-setup: load must be one of off, basic, extended, all, got 'max'"):
        OrtSetup.parse("load=max")
    with pytest.raises(HarnessError, match="nhwc must be yes or no, got 'maybe'"):
        OrtSetup().with_options({"nhwc": "maybe"})
    with pytest.raises(HarnessError, match="'load' is not key=value"):
        OrtSetup.parse("load")


def test_only_what_changes_the_engine_file_is_part_of_its_key_and_the_cpu_rows_leave_out_cuda_keys():
    a, b = OrtSetup(load="off"), OrtSetup(load="all", conv_algo="DEFAULT", arena="as_requested", stream="ort")
    assert a.file_parts(gpu=True) == b.file_parts(gpu=True) == {"engine": "optimized", "nhwc": False}
    assert OrtSetup(nhwc=True).file_parts(gpu=True) != a.file_parts(gpu=True)  # NHWC is baked in offline
    assert OrtSetup(engine="source").file_parts(gpu=True) == {"engine": "source"}
    assert OrtSetup(nhwc=True).describe(gpu=False) == {"engine": "optimized", "load": "off"}
    assert set(variants(gpu=False)) == {"optimized+off", "optimized+all", "source+all"}
    assert {"optimized+all +HEURISTIC", "optimized+all +nhwc", "optimized+all +ort-stream"} <= set(variants(gpu=True))


@pytest.fixture(scope="module")
def classifier():
    return load_registry(FIXTURES / "models.toml").models["classifier"]


def test_each_setup_builds_its_own_engine_and_loads_it_as_it_says(tmp_path, classifier, monkeypatch):
    backend = get_backend("ort_cpu")
    cache = Cache(tmp_path)
    x = {"image": np.random.default_rng(0).uniform(-2, 2, (2, 3, 224, 224)).astype(np.float32)}
    levels = []
    real = ort.InferenceSession

    def session(path, so, **kw):  # the real session; only which optimization level it was asked for is noted
        levels.append(so.graph_optimization_level)
        return real(path, so, **kw)

    engines, outputs = {}, {}
    for name, setup in variants(gpu=False).items():
        engine = backend.build(classifier.path, classifier.profiles["dynamic"], cache, label="cls", model_hash="c",
                               options={"ort_setup": setup.describe(gpu=False)})
        assert engine.describe() == setup.describe(gpu=False) and engine.entry.info["setup"] == {"engine": setup.engine}
        monkeypatch.setattr(ort, "InferenceSession", session)
        with engine.runner(RunnerOptions(threads=1)) as r:
            outputs[name] = r.infer(x)["logits"]
        monkeypatch.setattr(ort, "InferenceSession", real)
        engines[name] = engine
    assert levels == [ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                      ort.GraphOptimizationLevel.ORT_ENABLE_ALL]
    # the two loads of the offline-optimized file share its cache entry; the source model is an entry of its own,
    # holding the recipe's model byte for byte
    assert engines["optimized+off"].entry.key == engines["optimized+all"].entry.key != engines["source+all"].entry.key
    digest = hashlib.sha256(engines["source+all"].path.read_bytes()).hexdigest()
    assert digest == hashlib.sha256(classifier.path.read_bytes()).hexdigest()
    for name, out in outputs.items():
        np.testing.assert_allclose(out, outputs["optimized+off"], rtol=1e-4, atol=1e-5, err_msg=name)


def test_the_setup_is_recorded_in_the_perf_row_and_a_cpu_refuses_a_blocking_wait(tmp_path):
    settings = Settings(registry=FIXTURES / "models.toml", report_dir=tmp_path / "r", cache_dir=tmp_path / "c",
                        perf=PerfSettings(duration=0.02, warmup=0.01, min_iters=5),
                        ort_setup={"engine": "optimized", "load": "off"})  # not ort_cpu's default
    hs = HarnessSession(settings)
    row = check_perf(hs, PerfCase("ranker", "ort_cpu", "fp32", "dynamic", "serial", 1))
    assert row.setup == {"engine": "optimized", "load": "off"} and row.sync is None and row.throughput > 0
    assert row.state["host_cpus"] >= 1 and "host_other_load_per_cpu" in row.state
    with pytest.raises(ModeUnsupported, match="--perf-sync block: ort_cpu computes on the calling thread"):
        check_perf(hs, PerfCase("ranker", "ort_cpu", "fp32", "dynamic", "serial", 1, sync="block"))
    assert hs.last_row.status == "skipped" and hs.last_row.sync == "block"
    assert hs.last_row.id.endswith("-serial-b1-block")
