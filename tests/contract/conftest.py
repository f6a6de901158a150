"""The contract suite: the TensorRT backend against recording fakes of TensorRT 10.13, 11.1 and TensorRT-RTX
1.7 and of the harness's CUDA module, on any machine (no GPU, no TensorRT).

Each test that takes ``world`` runs once per flavor; its id carries the flavor (``[trt10]``, ``[trt11]``,
``[rtx]``), and the terminal summary counts outcomes per TensorRT version (``summary.py``, hooked in by
tests/conftest.py, which pytest-xdist's controller loads).
"""

from __future__ import annotations

import sys

import pytest

from harness.backends.tensorrt import TensorRTBackend, TensorRTRtxBackend
from harness.backends.tensorrt.library import cuda_wheel
from harness.cache import Cache
from tests.contract.fakes.cuda import FakeCuda
from tests.contract.fakes.tensorrt import make_module
from tests.contract.fakes.world import FLAVORS, World


@pytest.fixture(params=list(FLAVORS))
def world(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> World:
    """A fresh fake TensorRT module of one flavor, imported under its real name, and the fake CUDA module
    installed in harness.cuda's place."""
    w = World(FLAVORS[request.param])
    w.cuda = FakeCuda(w)
    w.cuda.install(monkeypatch)
    monkeypatch.setitem(sys.modules, w.flavor.module, make_module(w))
    cuda_wheel.cache_clear()
    yield w
    cuda_wheel.cache_clear()


@pytest.fixture
def backend(world: World) -> TensorRTBackend:
    return TensorRTRtxBackend() if world.flavor.rtx else TensorRTBackend()


@pytest.fixture
def cache(tmp_path) -> Cache:
    return Cache(tmp_path / "cache")
