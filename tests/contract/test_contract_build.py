"""The build side of the TensorRT contract, per version: network flags, profiles, timing cache, legacy weak
typing, TensorRT-RTX targets and supported GPUs, the cache key, refusals and checked returns."""

from __future__ import annotations

import importlib.metadata
import json
import sys

import pytest

from harness.backends.tensorrt import TensorRTRtxBackend
from harness.backends.tensorrt.library import cuda_wheel
from harness.cache import CacheWarning
from harness.data import SampleSet
from harness.errors import BuildError, ModeUnsupported, ProfileError
from harness.profiles import Profile
from harness.registry import load_registry
from tests.contract import models
from tests.helpers import write_registry

RTX_ONLY = pytest.mark.parametrize("world", ["rtx"], indirect=True)  # compute-capability targets
TRT10_ONLY = pytest.mark.parametrize("world", ["trt10"], indirect=True)  # the only one with INT8 calibrators


def build(backend, cache, path, profile=models.DYNAMIC, **options):
    return backend.build(path, profile, cache, label=f"{path.stem}/{backend.name}/fp32-{profile.name}",
                         model_hash=path.stem, options=options)


def test_networks_are_strongly_typed_with_each_versions_flag(world, backend, cache, tmp_path):
    build(backend, cache, models.relu(tmp_path / "relu.onnx"))
    # 1 << STRONGLY_TYPED: bit 1 in TensorRT 10, bit 0 in 11 (always on, kept for compatibility, as trtexec
    # passes it) and RTX; EXPLICIT_BATCH (bit 0 in 10, ignored since 10.0) is never set
    assert world.args("Builder.create_network") == [({"trt10": 2, "trt11": 1, "rtx": 1}[world.flavor.key],)]


def test_weak_typing_is_built_on_10_and_refused_with_the_reason_elsewhere(world, backend, cache, tmp_path):
    path = models.relu(tmp_path / "relu.onnx")
    if not world.flavor.weak_typing:
        with pytest.raises(ModeUnsupported, match="has no weak typing: the FP16 builder flag .* removed in TensorRT 11"):
            build(backend, cache, path, legacy_precision="fp16")
        assert "Builder" not in world.names()
        return
    engine = build(backend, cache, path, legacy_precision="fp16")
    assert world.args("Builder.create_network") == [(0,)]  # weakly typed
    assert ("IBuilderConfig.set_flag", ("FP16",)) in world.calls and engine.entry.info["legacy_precision"] == "fp16"


def test_one_optimization_profile_by_default_and_copies_only_when_asked(world, backend, cache, tmp_path):
    path = models.relu(tmp_path / "relu.onnx")
    one = build(backend, cache, path)
    assert world.args("IBuilderConfig.add_optimization_profile") == [(0,)] and one.slots.shared
    world.clear()
    three = build(backend, cache, path, profile_copies=3)
    assert world.args("IBuilderConfig.add_optimization_profile") == [(0,), (1,), (2,)] and not three.slots.shared
    assert world.args("IOptimizationProfile.set_shape") == [("x", (1, 8), (4, 8), (16, 8))] * 3
    # the perf modes time the engine the accuracy gates build: they ask for no copies
    assert backend.perf_build_options("multistream", 4) == {} and backend.perf_build_options("threadpool", 8) == {}


def test_a_refused_optimization_profile_is_an_error_naming_it(world, backend, cache, tmp_path):
    world.fail("add_optimization_profile")
    with pytest.raises(BuildError, match=r"refused optimization profile 0 \(x: \[1, 8\]..\[16, 8\]\)"):
        build(backend, cache, models.relu(tmp_path / "relu.onnx"))
    assert cache.builds() == []


def test_shape_tensor_inputs_get_their_values_range_from_the_profile(world, backend, cache, tmp_path):
    path = models.reshape(tmp_path / "reshape.onnx")
    build(backend, cache, path, models.RESHAPE)
    assert world.args("IOptimizationProfile.set_shape") == [("x", (1, 8), (4, 8), (16, 8))]
    assert world.args("IOptimizationProfile.set_shape_input") == [("s", (1, 1), (8, 4), (128, 8))]
    with pytest.raises(ProfileError, match="input 's' is a shape tensor: profile 'q' must give the range of its 2"):
        build(backend, cache, path, Profile.from_strings("q", min="x:1x8", opt="x:4x8", max="x:16x8"))


def test_a_parse_error_names_the_node(world, backend, cache, tmp_path):
    with pytest.raises(BuildError, match=r"node #1 'weird_node' \(FooOp\): No importer registered for op: FooOp"):
        build(backend, cache, models.unsupported(tmp_path / "bad.onnx"))
    assert cache.builds() == []


def test_the_timing_cache_is_merged_across_processes(world, backend, cache, tmp_path):
    path = models.relu(tmp_path / "relu.onnx")
    if world.flavor.rtx:
        build(backend, cache, path)
        assert not (cache.root / "timing").exists() and "IBuilderConfig.set_timing_cache" not in world.names()
        return
    build(backend, cache, path)
    timing = backend.timing_cache_path(cache)
    first = set(json.loads(timing.read_bytes()))

    def another_process_saves():  # while this build runs, another worker saves what it learned
        timing.write_bytes(json.dumps(sorted(first | {"other-worker:tactics"})).encode())

    world.on_build = another_process_saves
    build(backend, cache, path, opt_level=5)
    merged = set(json.loads(timing.read_bytes()))
    assert "other-worker:tactics" in merged and first < merged and len(merged) == len(first) + 2
    assert world.args("IBuilderConfig.set_timing_cache")[-1] == (sorted(first), False)
    assert [p.name for p in timing.parent.iterdir() if ".part" in p.name] == []


@pytest.mark.parametrize("world", ["trt10", "trt11"], indirect=True)  # TensorRT-RTX keeps none
def test_an_unreadable_timing_cache_is_warned_about_and_replaced(world, backend, cache, tmp_path):
    timing = backend.timing_cache_path(cache)
    timing.parent.mkdir(parents=True)
    timing.write_bytes(b"\x00garbage")
    with pytest.warns(CacheWarning, match="is unreadable"):
        build(backend, cache, models.relu(tmp_path / "relu.onnx"))
    assert json.loads(timing.read_bytes())


def test_the_key_separates_cuda_12_and_13_wheels(world, backend, tmp_path, monkeypatch):
    profile, name = models.DYNAMIC, world.flavor.module
    keys = {}
    for cu in ("cu12", "cu13"):
        monkeypatch.setattr(importlib.metadata, "packages_distributions",
                            lambda cu=cu: {name: [f"{name.replace('_', '-')}-{cu}"], f"{name}_libs": [f"{name}_{cu}_libs"]})
        cuda_wheel.cache_clear()
        keys[cu] = backend.key_parts("m", profile, None)
    assert keys["cu12"]["cuda_wheel"] == "cu12" and keys["cu13"]["cuda_wheel"] == "cu13"
    assert keys["cu12"] != keys["cu13"] and keys["cu12"]["module"] == name
    assert {k: v for k, v in keys["cu12"].items() if k != "cuda_wheel"} == \
           {k: v for k, v in keys["cu13"].items() if k != "cuda_wheel"}


def test_the_sdk_module_is_tried_before_the_pypi_bindings(world, monkeypatch):
    if not world.flavor.rtx:
        assert TensorRTRtxBackend.module_names == ("tensorrt_rtx", "tensorrt_rtx_bindings")
        return
    assert TensorRTRtxBackend().module() is world.module  # the fake, imported as tensorrt_rtx
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)  # the SDK's wheel absent: the bindings serve
    monkeypatch.setitem(sys.modules, "tensorrt_rtx_bindings", world.module)
    assert TensorRTRtxBackend().module() is world.module
    monkeypatch.setitem(sys.modules, "tensorrt_rtx_bindings", None)
    reason = TensorRTRtxBackend().cannot_build()
    assert "tensorrt_rtx cannot be imported" in reason and "tensorrt_rtx_bindings cannot be imported" in reason


# -- TensorRT-RTX: targets and supported GPUs

@RTX_ONLY
def test_rtx_builds_for_its_default_targets_without_a_gpu(world, backend, cache, tmp_path):
    world.gpu = False
    engine = build(backend, cache, models.relu(tmp_path / "relu.onnx"))
    targets = ["SM80", "SM86", "SM89", "SM120"]
    assert world.args("IBuilderConfig.set_compute_capability") == [(t, i) for i, t in enumerate(targets)]
    assert engine.entry.meta["parts"]["targets"] == targets
    assert backend.unavailable().startswith("the TensorRT-RTX runtime needs an NVIDIA GPU")


@RTX_ONLY
def test_rtx_builds_for_a_supported_gpu(world, backend, cache, tmp_path):
    world.gpu_name, world.compute_capability = "NVIDIA RTX A6000", "8.6"
    assert backend.unavailable() is None
    build(backend, cache, models.relu(tmp_path / "relu.onnx"))
    assert world.args("IBuilderConfig.set_compute_capability") == [("SM86", 0)]


@RTX_ONLY
@pytest.mark.parametrize("gpu, cc", [("NVIDIA H100 80GB HBM3", "9.0"), ("NVIDIA H200", "9.0"), ("NVIDIA B200", "10.0")])
def test_rtx_on_an_unsupported_gpu_skips_with_the_reason(world, backend, cache, tmp_path, gpu, cc):
    world.gpu_name, world.compute_capability = gpu, cc
    reason = backend.unavailable()
    assert reason == (f"TensorRT-RTX 1.7.1.116 does not support this GPU, {gpu} (compute capability {cc}); it "
                      "supports SM75, SM80, SM86, SM89, SM120, SM121")
    with pytest.raises(ModeUnsupported, match="does not support this GPU.*Nothing is built for it"):
        build(backend, cache, models.relu(tmp_path / "relu.onnx"))
    assert "Builder" not in world.names()
    # named targets still build there (a build machine)
    build(backend, cache, models.relu(tmp_path / "relu.onnx"), compute_capabilities=["SM86", "SM89"])
    assert world.args("IBuilderConfig.set_compute_capability") == [("SM86", 0), ("SM89", 1)]


@RTX_ONLY
def test_rtx_refuses_unknown_targets_and_checks_what_it_sets(world, backend, cache, tmp_path):
    path = models.relu(tmp_path / "relu.onnx")
    with pytest.raises(BuildError, match="unknown compute capability target.*SM90; known: SM75, SM80"):
        build(backend, cache, path, compute_capabilities=["SM90"])
    world.module.IBuilderConfig.set_compute_capability = lambda self, cc, index: False
    with pytest.raises(BuildError, match="refused compute capability target SM86 \\(index 0 of 1\\)"):
        build(backend, cache, path, compute_capabilities=["SM86"])


# -- TensorRT 10's legacy INT8 calibrator

def calibration(tmp_path, size):
    models.relu(tmp_path / "relu.onnx")
    reg = load_registry(write_registry(tmp_path, """
        [models.relu]
        path = "relu.onnx"
        [models.relu.inputs.x]
        range = [-1, 1]
        [models.relu.profiles]
        dynamic = { min = "x:1x8", opt = "x:4x8", max = "x:16x8" }
        """))
    spec = reg.models["relu"]
    return spec, SampleSet(spec, spec.profiles["dynamic"], size=size, purpose="calibration", source="generated")


def legacy_int8(backend, cache, spec, samples, **options):
    return backend.build(spec.path, spec.profiles["dynamic"], cache, label="relu/tensorrt/trt10-legacy-int8-dynamic",
                         model_hash="relu", options={"legacy_precision": "int8", **options}, calibration=samples)


@TRT10_ONLY
def test_the_legacy_calibrator_is_fed_full_batches_and_frees_them(world, backend, cache, tmp_path):
    spec, samples = calibration(tmp_path, size=10)
    engine = legacy_int8(backend, cache, spec, samples)
    assert engine.entry.info["legacy_precision"] == "int8" and "INT8" in world.args("Builder.build_serialized_network")[0][0]
    uploads = world.args("cuda.copy_to_device")
    assert len(uploads) == 2 and all(n == 4 * 8 * 4 for _s, n in uploads)  # 10 samples: two full batches of 4
    assert world.cuda.leaks() == {}


@TRT10_ONLY
def test_a_legacy_calibrator_that_would_serve_no_batch_fails_before_the_build(world, backend, cache, tmp_path):
    spec, samples = calibration(tmp_path, size=3)
    with pytest.raises(BuildError, match="needs batches of 4 samples .* calibration set has 3: TensorRT would get no "
                                         "batch and fail with 'no scaling factors'. Raise calibration_size to at least 4"):
        legacy_int8(backend, cache, spec, samples)
    assert "Builder.build_serialized_network" not in world.names() and cache.builds() == []
    assert world.cuda.leaks() == {}


@TRT10_ONLY
def test_the_legacy_calibrators_buffers_are_freed_when_the_build_fails(world, backend, cache, tmp_path):
    spec, samples = calibration(tmp_path, size=8)
    world.fail("build")  # after calibration: the calibrator holds a stream and buffers by then
    with pytest.raises(BuildError, match="fake builder failure"):
        legacy_int8(backend, cache, spec, samples)
    assert len(world.args("cuda.copy_to_device")) == 2 and world.cuda.leaks() == {}
