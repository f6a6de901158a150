"""TensorRT-RTX's real builder on a CPU-only machine: the TensorRT backend's build and cache path, for real.

(Its runtime needs a consumer or workstation GPU, and full TensorRT cannot be installed here: those cases
must skip, naming what is missing.)
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper

from harness.backends import get_backend
from harness.backends.tensorrt.tensors import numpy_dtype
from harness.cache import Cache, default_root
from harness.errors import BuildError, ModeUnsupported
from harness.profiles import Profile
from harness.registry import load_registry
from harness.session import HarnessSession, Settings
from tests.helpers import FIXTURES, ROOT

rtx = get_backend("tensorrt_rtx")
pytestmark = pytest.mark.skipif(rtx.cannot_build() is not None, reason=f"tensorrt_rtx: {rtx.cannot_build()}")


def test_engines_are_built_on_the_cpu_cached_and_hit_on_a_second_run(project):
    select = ("-m", "build", "--backends=tensorrt_rtx", "--models=ranker,encoder", "--recipes=fp32,fp16,int8-minmax")
    first = project.run(*select)
    first.assert_outcomes(passed=12)
    rows = project.results()
    engines = [r for r in rows if r["type"] == "build"]
    assert len(engines) == 12 and not any(r["cache_hit"] for r in engines)
    assert all(r["engine_size"] > 1000 and r["backend_version"] == rtx.version() for r in engines)
    second = project.run(*select, report="again")
    second.assert_outcomes(passed=12)
    assert all(r["cache_hit"] for r in project.results("again"))
    assert "engine cache: 0 built" in second.stdout.str()
    plans = list(project.cache.glob("engines/*/tensorrt_rtx/*/*/plan.engine"))
    assert len(plans) == 12
    side = json.loads((plans[0].parent / "entry.json").read_text())
    assert side["parts"]["version"] == rtx.version() and side["parts"]["targets"]
    # the wheels' CUDA major is part of the key: the same version is published for CUDA 12 and 13
    assert side["parts"]["cuda_wheel"] in ("cu12", "cu13") and side["parts"]["module"] == rtx.module().__name__
    assert side["info"]["build_phases"], "the progress monitor saw TensorRT's build phases"


def test_every_bundled_model_builds_with_tensorrt_rtx(project, tmp_path):
    """The build suite over the whole registry, as `pytest -m build --backends tensorrt_rtx` runs it on a build
    machine: every model, recipe and profile really built by TensorRT-RTX (the legacy recipes refused with
    the reason). Its rows go to this test's own report folder; the engines to the project's shared cache, so
    that a second run of the test command hits them."""
    hs = HarnessSession(Settings(registry=FIXTURES / "models.toml", report_dir=tmp_path, cache_dir=tmp_path,
                                 backends=["tensorrt_rtx"]))
    cases = list(hs.accuracy_cases(build_only=True))
    skipped = [c for c in cases if hs.skip_reason(c.model, c.backend, c.recipe, build_only=True)]
    result = project.run("-m", "build", "--backends=tensorrt_rtx", f"--engine-cache={default_root(ROOT)}", "-q")
    result.assert_outcomes(passed=len(cases) - len(skipped), skipped=len(skipped))
    rows = project.results()
    assert len(rows) == len(cases) - len(skipped) and {r["type"] for r in rows} == {"build"}
    assert {r["model"] for r in rows} == {s.name for s in hs.models() if not s.unavailable}
    assert all(r["status"] == "pass" and r["engine_size"] > 1000 for r in rows)


def test_a_parse_error_names_the_node(tmp_path):
    bad = helper.make_graph([helper.make_node("Relu", ["x"], ["h"], name="relu_ok"),
                             helper.make_node("FooOp", ["h"], ["y"], name="weird_node")], "bad",
                            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])])
    model = helper.make_model(bad, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "bad.onnx"
    path.write_bytes(model.SerializeToString())
    profile = Profile.from_strings("p", min="x:1x8", opt="x:4x8", max="x:16x8")
    with pytest.raises(BuildError) as err:
        rtx.build(path, profile, Cache(tmp_path / "c"), label="bad/rtx/fp32-p", model_hash="bad")
    msg = str(err.value)
    assert "rejected" in msg and "node #1 'weird_node' (FooOp)" in msg
    assert Cache(tmp_path / "c").builds() == []  # nothing half-built was kept


def test_profile_copies_targets_and_version_are_part_of_the_engine(tmp_path):
    spec = load_registry(FIXTURES / "models.toml").models["ranker"]
    cache = Cache(tmp_path)
    prof = spec.profiles["dynamic"]
    one = rtx.build(spec.path, prof, cache, label="r/1", model_hash=spec.model_bytes_hash())
    three = rtx.build(spec.path, prof, cache, label="r/3", model_hash=spec.model_bytes_hash(),
                      options={"profile_copies": 3})
    sm86 = rtx.build(spec.path, prof, cache, label="r/86", model_hash=spec.model_bytes_hash(),
                     options={"compute_capabilities": ["SM86"]})
    assert len({one.entry.key, three.entry.key, sm86.entry.key}) == 3
    assert three.entry.info["profiles"] == 3 and three.slots.count == 3
    assert sm86.entry.meta["parts"]["targets"] == ["SM86"]
    with pytest.raises(BuildError, match="unknown compute capability target"):
        rtx.build(spec.path, prof, cache, label="r/90", model_hash=spec.model_bytes_hash(),
                  options={"compute_capabilities": ["SM90"]})


def test_the_legacy_weak_typing_path_is_refused_with_the_reason(tmp_path):
    spec = load_registry(FIXTURES / "models.toml").models["ranker"]
    with pytest.raises(ModeUnsupported, match="has no weak typing: the FP16 builder flag"):
        rtx.build(spec.path, spec.profiles["dynamic"], Cache(tmp_path), label="r/legacy", model_hash="x",
                  options={"legacy_precision": "fp16"})


def test_dtype_mapping_covers_the_real_enum():
    mod = rtx.module()
    assert numpy_dtype(mod.DataType.FLOAT, "x") == np.float32
    assert numpy_dtype(mod.DataType.INT64, "ids") == np.int64
    with pytest.raises(ModeUnsupported):
        numpy_dtype(mod.DataType.BF16, "y")


def test_cases_that_need_a_gpu_or_full_tensorrt_skip_naming_what_is_missing(project):
    result = project.run("-m", "accuracy or build", "--backends=tensorrt_rtx,tensorrt", "--models=ranker",
                         "--recipes=fp32,trt10-legacy-fp16", "--profiles=dynamic", "-rs")
    out = result.stdout.str()
    # accuracy: both backends skip; build: RTX builds fp32, refuses the legacy recipe, full TensorRT skips
    result.assert_outcomes(passed=1, skipped=7)
    assert "tensorrt_rtx: the TensorRT-RTX runtime needs an NVIDIA GPU" in out
    assert "tensorrt: tensorrt cannot be imported" in out
    assert "has no weak typing" in out


def test_on_a_hopper_gpu_the_real_target_list_makes_its_cases_skip(tmp_path, monkeypatch):
    """The H100 / H200 (SM 9.0) is not among the compute capabilities the real TensorRT-RTX module names, so
    its cases skip with that reason instead of failing the build (the GPU is faked; the module is real)."""
    from harness import cuda
    from harness.backends.tensorrt import TensorRTRtxBackend

    monkeypatch.setattr(cuda, "unavailable", lambda: None)
    monkeypatch.setattr(cuda, "device_properties",
                        lambda index=0: {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"})
    backend = TensorRTRtxBackend()
    targets = backend.supported_targets()
    assert "SM90" not in targets and {"SM75", "SM86", "SM89", "SM120"} <= set(targets)
    assert backend.unavailable() == (f"TensorRT-RTX {backend.version()} does not support this GPU, NVIDIA H100 80GB "
                                     f"HBM3 (compute capability 9.0); it supports {', '.join(targets)}")
    spec = load_registry(FIXTURES / "models.toml").models["ranker"]
    with pytest.raises(ModeUnsupported, match="does not support this GPU"):
        backend.build(spec.path, spec.profiles["dynamic"], Cache(tmp_path), label="r/h100", model_hash="x")
