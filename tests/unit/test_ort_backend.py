"""The ONNX Runtime CPU backend and the accuracy check's handling of shapes and profiles."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from harness.backends import get_backend
from harness.backends.base import RunnerOptions
from harness.cache import Cache
from harness.checks import check_accuracy
from harness.errors import ModeUnsupported, ProfileError
from harness.registry import load_registry
from harness.session import AccuracyCase, HarnessSession, Settings
from tests.helpers import FIXTURES, write_registry


def test_a_fixed_profile_pins_free_dimensions_in_the_optimized_model(tmp_path):
    spec = load_registry(FIXTURES / "models.toml").models["segmenter"]
    backend = get_backend("ort_cpu")
    cache = Cache(tmp_path)
    optimized = {"ort_setup": {"engine": "optimized"}}  # the offline-optimized file, not ort_cpu's default
    fixed = backend.build(spec.path, spec.profiles["fixed"], cache, label="seg/fixed", model_hash="x",
                          options=optimized)
    dynamic = backend.build(spec.path, spec.profiles["dynamic"], cache, label="seg/dynamic", model_hash="x",
                            options=optimized)
    assert fixed.overrides == {"batch": 2, "height": 256, "width": 256} and dynamic.overrides == {}

    def dims(path):
        inp = onnx.load(str(path)).graph.input[0]
        return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in inp.type.tensor_type.shape.dim]

    assert dims(fixed.path) == [2, 3, 256, 256]
    assert dims(dynamic.path) == ["batch", 3, "height", "width"]
    with fixed.runner() as r:
        out = r.infer({"image": np.zeros((2, 3, 256, 256), np.float32)})
        assert out["mask"].shape == (2, 4, 256, 256)
    # the source model (ort_cpu's default) gets the same pins when a runner loads it
    source = backend.build(spec.path, spec.profiles["fixed"], cache, label="seg/fixed-source", model_hash="x")
    assert source.overrides == fixed.overrides and source.entry.key != fixed.entry.key
    with source.runner() as r:
        shapes = {i.name: i.shape for i in r.session.get_inputs()}
        assert shapes["image"] == [2, 3, 256, 256]


def test_runner_modes_on_the_cpu(tmp_path):
    spec = load_registry(FIXTURES / "models.toml").models["ranker"]
    engine = get_backend("ort_cpu").build(spec.path, spec.profiles["dynamic"], Cache(tmp_path), label="r",
                                          model_hash="x")
    rng = np.random.default_rng(0)
    feeds = {"ids": rng.integers(0, 8000, (4, 8)).astype(np.int64),
             "dense": rng.uniform(0, 4, (4, 13)).astype(np.float32)}
    other = {"ids": feeds["ids"][::-1].copy(), "dense": feeds["dense"][::-1].copy()}
    with engine.runner(RunnerOptions(threads=2)) as r:
        expected = r.infer(feeds)["ctr"]
        assert expected.shape == (4, 1) and len(np.unique(expected)) == 4  # four different requests
        for resident in (True, False):
            r.prepare(other, resident=resident)  # another batch between, so that a stale output would show
            r.run()
            np.testing.assert_array_equal(r.fetch_outputs()["ctr"], expected[::-1])
            r.prepare(feeds, resident=resident)
            r.run()
            np.testing.assert_array_equal(r.fetch_outputs()["ctr"], expected)
            r.submit()  # run_async on the session's pool
            r.wait()
            np.testing.assert_array_equal(r.fetch_outputs()["ctr"], expected)
        r.prepare(other)
        r.run()
        r.prepare(feeds)  # resident: bound once; the timed loop calls run_with_iobinding on the binding
        fn, args = r.timed_call()
        assert fn == r.session.run_with_iobinding
        fn(*args)
        np.testing.assert_array_equal(r.fetch_outputs()["ctr"], expected)
        assert r.describe() == {"threads": 2}
    with engine.runner(RunnerOptions(threads=1)) as r:
        r.prepare(feeds)
        r.run()
        with pytest.raises(ModeUnsupported, match="at least 2 intra-op threads"):
            r.submit()
    with pytest.raises(ModeUnsupported, match="CUDA graphs"):
        engine.runner(RunnerOptions(cuda_graph=True))


def test_samples_outside_the_profile_are_refused_before_anything_is_built(tmp_path):
    np.savez(tmp_path / "long.npz", tokens=np.zeros((12, 600, 64), np.float16))
    registry = write_registry(tmp_path, f"""
        [models.encoder]
        path = "{FIXTURES / 'models' / 'encoder.onnx'}"
        [models.encoder.evaluation]
        samples = "long.npz"
        [models.encoder.calibration]
        size = 4
        [models.encoder.profiles]
        dynamic = {{ min = "tokens:1x16x64", opt = "tokens:8x128x64", max = "tokens:32x512x64" }}
        """)
    hs = HarnessSession(Settings(registry=registry, report_dir=tmp_path / "r", cache_dir=tmp_path / "c"))
    with pytest.raises(ProfileError, match=r"model 'encoder', input 'tokens' has shape 8x600x64, outside profile "
                                           r"'dynamic' \(min 1x16x64, max 32x512x64\)"):
        check_accuracy(hs, AccuracyCase("encoder", "ort_cpu", "fp32", "dynamic"))
    assert hs.cache.builds() == []
    hs.close()
