"""The fakes are held to the real APIs: a fake may only have names (classes, members, enum members and
values, callbacks) that the real TensorRT 10.13 / 11.1 / TensorRT-RTX module has, and the fake CUDA module
only names harness.cuda has. A negative control shows the check catches an invented name."""

from __future__ import annotations

import inspect

import pytest

from harness import cuda
from tests.contract.api_names import Api, mismatches, real_api
from tests.contract.fakes.cuda import FAKED, FakeCuda
from tests.contract.fakes.tensorrt import CALLBACKS, EnumValue
from tests.contract.fakes.world import FLAVORS, World

# names that exist in some versions only: each fake has one exactly where its real API has it
VERSION_SPECIFIC = [("BuilderFlag", "FP16"), ("BuilderFlag", "INT8"), ("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH"),
                    ("IBuilderConfig", "int8_calibrator"), ("IBuilderConfig", "set_calibration_profile"),
                    ("IBuilderConfig", "set_compute_capability"), ("IBuilderConfig", "num_compute_capabilities"),
                    ("IExecutionContext", "is_stream_capturable"), (None, "IInt8EntropyCalibrator2"),
                    (None, "IInt8MinMaxCalibrator"), (None, "ComputeCapability")]


def api_of(world: World) -> Api:
    api = real_api(world.flavor.key)
    if isinstance(api, str):
        pytest.skip(api)
    return api


def test_the_fake_has_only_names_the_real_api_has(world):
    api = api_of(world)
    assert mismatches(world.module, api, CALLBACKS) == [], f"checked against {api.source}"


def test_a_name_the_real_api_lacks_is_caught(world):
    api = api_of(world)
    fake = world.module
    fake.IExecutionContext.execute_async_v4 = lambda self, stream: True
    fake.BuilderFlag.FP17 = EnumValue("BuilderFlag", "FP17", 99)
    fake.get_tensorrt_magic = lambda: 0
    fake.NetworkDefinitionCreationFlag.STRONGLY_TYPED = EnumValue("NetworkDefinitionCreationFlag", "STRONGLY_TYPED", 7)
    fake.NetworkDefinitionCreationFlag.__members__ = {**fake.NetworkDefinitionCreationFlag.__members__,
                                                      "STRONGLY_TYPED": fake.NetworkDefinitionCreationFlag.STRONGLY_TYPED}
    problems = mismatches(fake, api, {**CALLBACKS, "IOutputAllocator": ["reallocate_outputs"]})
    assert "IExecutionContext.execute_async_v4" in problems and "BuilderFlag.FP17" in problems
    assert "module: get_tensorrt_magic" in problems and "IOutputAllocator.reallocate_outputs (callback)" in problems
    assert any(p.startswith("NetworkDefinitionCreationFlag.STRONGLY_TYPED = 7") for p in problems), problems


def test_what_a_version_lacks_its_fake_lacks(world):
    api = api_of(world)
    for cls, name in VERSION_SPECIFIC:
        real = name in (api.module if cls is None else api.classes.get(cls, set()))
        fake = hasattr(world.module if cls is None else getattr(world.module, cls), name)
        assert fake == real, f"{cls or 'module'}.{name}: real {api.source} has it: {real}, the fake: {fake}"


def test_strongly_typed_is_a_different_bit_in_each_version(world):
    api = api_of(world)
    want = {"trt10": 1, "trt11": 0, "rtx": 0}[world.flavor.key]
    assert api.values["NetworkDefinitionCreationFlag"]["STRONGLY_TYPED"] == want
    assert int(world.module.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == want


def test_the_fake_cuda_module_has_only_harness_cuda_names():
    fake = FakeCuda(World(FLAVORS["trt10"]))
    for name in FAKED:
        real, ours = getattr(cuda, name), getattr(fake, name)
        if inspect.isclass(ours):
            extra = {k for k in vars(ours) if not k.startswith("_")} - set(dir(real))
            assert not extra, f"fake cuda.{name} has {sorted(extra)}, harness.cuda.{name} does not"
        else:
            assert callable(real), name
            assert list(inspect.signature(ours).parameters) == list(inspect.signature(real).parameters), name
