"""What the recording fakes share: the call log, the flavor being faked, and injected failures."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Flavor:
    """One TensorRT Python API being faked, with the facts that differ between them."""

    key: str  # test id part
    label: str  # for the summary line
    module: str  # the name the backend imports
    version: str
    network_flags: dict[str, int]  # NetworkDefinitionCreationFlag members and values
    weak_typing: bool  # BuilderFlag.FP16 / INT8 and the INT8 calibrators
    rtx: bool  # ComputeCapability targets, is_stream_capturable, no timing cache


FLAVORS = {
    # 10.13: the published stubs (tensorrt_stubs 10.13.0.35) hold these names and values
    "trt10": Flavor("trt10", "TensorRT 10.13", "tensorrt", "10.13.0.35",
                    {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1, "PREFER_JIT_PYTHON_PLUGINS": 2,
                     "PREFER_AOT_PYTHON_PLUGINS": 3}, weak_typing=True, rtx=False),
    # 11.1: the bindings' sources and NvInfer.h at the 11.1 release (api/tensorrt-11.1.json)
    "trt11": Flavor("trt11", "TensorRT 11.1", "tensorrt", "11.1.0.106",
                    {"STRONGLY_TYPED": 0, "PREFER_JIT_PYTHON_PLUGINS": 1, "PREFER_AOT_PYTHON_PLUGINS": 2},
                    weak_typing=False, rtx=False),
    # TensorRT-RTX 1.7: the installable bindings (tensorrt-rtx-cu13-bindings), imported as the SDK's module
    "rtx": Flavor("rtx", "TensorRT-RTX 1.7", "tensorrt_rtx", "1.7.1.116", {"STRONGLY_TYPED": 0},
                  weak_typing=False, rtx=True),
}


@dataclass
class World:
    flavor: Flavor
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    # "what" -> {n, ...}: the n-th times the fake reaches that point it fails (see fail_point)
    failures: dict[str, set[int]] = field(default_factory=dict)
    reached: dict[str, int] = field(default_factory=dict)
    capture_fails: bool = False  # the engine cannot be captured into a CUDA graph (TensorRT says so)
    rtx_capturable: bool = True  # TensorRT-RTX's is_stream_capturable
    dds_rows: int = 3  # rows a data-dependent output has when the engine runs
    gpu: bool = True
    gpu_name: str = "NVIDIA RTX 4090"
    compute_capability: str = "8.9"
    cuda: Any = None  # the FakeCuda installed with this world (streams by handle)
    module: Any = None  # the fake TensorRT module
    on_build: Any = None  # called while the fake builder builds (another process at work meanwhile)

    def log(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))

    def fail(self, what: str, *nth: int) -> None:
        """Make the ``nth`` visits (default: the first) of the point ``what`` fail."""
        self.failures[what] = set(nth or (1,))

    def fail_point(self, what: str) -> bool:
        """True when this visit of ``what`` is one set to fail."""
        self.reached[what] = self.reached.get(what, 0) + 1
        return self.reached[what] in self.failures.get(what, ())

    def names(self, prefix: str = "") -> list[str]:
        return [n for n, _ in self.calls if n.startswith(prefix)]

    def args(self, name: str) -> list[tuple[Any, ...]]:
        return [a for n, a in self.calls if n == name]

    def clear(self) -> None:
        self.calls.clear()
