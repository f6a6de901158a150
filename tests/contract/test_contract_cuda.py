"""The harness's CUDA module against a recording fake of cuda-python's ``cuda.bindings`` (runtime and utils):
the cuda-python it accepts, graph capture that fails, and stream handles read without ``int()``."""

from __future__ import annotations

import importlib.util
import sys
import types
import warnings
from pathlib import Path

import pytest

from harness import cuda
from harness.errors import HarnessError
from tests.helpers import ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


class Status:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


class Handle:
    """A cuda.bindings handle: ``int()`` on it is deprecated since cuda-bindings 12.9.1."""

    def __init__(self, value: int):
        self._value = value

    def __int__(self) -> int:
        warnings.warn("int(cuda_obj) is deprecated; use get_cuda_native_handle()", DeprecationWarning, stacklevel=2)
        return self._value


def fake_bindings(version: str = "12.9.4", *, invalidated: bool = True) -> tuple[types.ModuleType, list[str]]:
    calls: list[str] = []
    rt = types.ModuleType("cuda.bindings.runtime")
    errors = types.SimpleNamespace(cudaSuccess=Status("cudaSuccess"),
                                   cudaErrorStreamCaptureInvalidated=Status("cudaErrorStreamCaptureInvalidated"))
    rt.cudaError_t = errors
    rt.cudaStreamNonBlocking = 1
    rt.cudaStreamCaptureMode = types.SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)
    ok = errors.cudaSuccess
    sticky = [ok]

    def record(name, result):
        def call(*args):
            calls.append(name)
            return result(*args) if callable(result) else result
        return call

    def end_capture(stream):
        if invalidated:
            sticky[0] = errors.cudaErrorStreamCaptureInvalidated
            return errors.cudaErrorStreamCaptureInvalidated, None
        return ok, Handle(77)

    def last_error():
        err, sticky[0] = sticky[0], ok
        return (err,)

    for name, result in dict(
            cudaGetDeviceCount=(ok, 1), cudaGetErrorString=lambda e: (ok, b"fake"),
            cudaStreamCreateWithFlags=(ok, Handle(0x7F00)), cudaStreamSynchronize=(ok,), cudaStreamDestroy=(ok,),
            cudaStreamBeginCapture=(ok,), cudaStreamEndCapture=end_capture, cudaGetLastError=last_error,
            cudaGraphInstantiate=(ok, Handle(78)), cudaGraphDestroy=(ok,), cudaGraphExecDestroy=(ok,),
            cudaGraphLaunch=(ok,)).items():
        setattr(rt, name, record(name, result))
    utils = types.ModuleType("cuda.bindings.utils")
    utils.get_cuda_native_handle = lambda h: h._value
    bindings = types.ModuleType("cuda.bindings")
    bindings.__version__ = version
    bindings.runtime, bindings.utils = rt, utils
    return bindings, calls


@pytest.fixture
def install(monkeypatch):
    def put(bindings):
        monkeypatch.setitem(sys.modules, "cuda", types.ModuleType("cuda"))
        monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
        if bindings is not None:
            monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", bindings.runtime)
            monkeypatch.setitem(sys.modules, "cuda.bindings.utils", bindings.utils)
        cuda._rt.cache_clear()
        cuda._native_handle.cache_clear()

    yield put
    cuda._rt.cache_clear()
    cuda._native_handle.cache_clear()


def test_cuda_python_without_cuda_bindings_is_named_not_called_missing(install, monkeypatch):
    install(None)  # cuda-python 12.6.0: the cuda namespace, no cuda.bindings
    monkeypatch.setattr(cuda.metadata, "version", lambda dist: "12.6.0")
    assert cuda.unavailable() == ("cuda-python 12.6.0 has no cuda.bindings (added in 12.6.1); the harness needs "
                                  "cuda-python >= 12.9.1")


@pytest.mark.parametrize("version, ok", [("12.6.2", False), ("12.9.0", False), ("12.9.1", True), ("13.0.0", True)])
def test_bindings_that_hold_the_gil_while_waiting_are_refused(install, version, ok):
    install(fake_bindings(version)[0])
    if ok:
        assert cuda.unavailable() is None
    else:
        assert cuda.unavailable() == (f"cuda-bindings {version} holds the GIL while it waits for the GPU (stream and "
                                      "event synchronize), which would serialize the thread-pool mode; the harness "
                                      "needs cuda-python >= 12.9.1")


def test_the_gpu_extras_require_cuda_python_12_9_1():
    extras = tomllib.loads(Path(ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in ("gpu", "tensorrt"):
        assert "cuda-python>=12.9.1" in extras[extra], extra


def test_stream_handles_are_read_without_the_deprecated_int(install):
    install(fake_bindings()[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        stream = cuda.Stream()
        assert stream.ptr == 0x7F00
        stream.close()


@pytest.mark.parametrize("invalidated", [True, False])
def test_a_failed_capture_is_ended_and_the_enqueues_own_error_comes_through(install, invalidated):
    bindings, calls = fake_bindings(invalidated=invalidated)
    install(bindings)
    stream = cuda.Stream()

    def enqueue():
        raise HarnessError("tensorrt: execute_async_v3 failed:\n  operation not permitted when stream is capturing")

    with pytest.raises(HarnessError, match="operation not permitted when stream is capturing"):
        cuda.Graph(stream, enqueue)
    after = calls[calls.index("cudaStreamBeginCapture"):]
    # an invalidated capture returns no graph; otherwise the graph returned must not be used: destroyed
    assert after == ["cudaStreamBeginCapture", "cudaStreamEndCapture"] + \
        ([] if invalidated else ["cudaGraphDestroy"]) + ["cudaGetLastError"]
    assert bindings.runtime.cudaGetLastError() == (bindings.runtime.cudaError_t.cudaSuccess,)  # cleared
    stream.close()


def test_the_fake_runtimes_names_are_cuda_bindings_own():
    if importlib.util.find_spec("cuda") is None or importlib.util.find_spec("cuda.bindings") is None:
        pytest.skip("needs cuda-python (cuda.bindings) installed to compare with")
    from cuda.bindings import runtime, utils

    bindings, _ = fake_bindings()
    ours = {n for n in vars(bindings.runtime) if not n.startswith("_")}
    assert ours - set(dir(runtime)) == set()
    assert {"cudaSuccess", "cudaErrorStreamCaptureInvalidated"} <= set(dir(runtime.cudaError_t))
    assert hasattr(runtime.cudaStreamCaptureMode, "cudaStreamCaptureModeThreadLocal")
    assert hasattr(utils, "get_cuda_native_handle")
