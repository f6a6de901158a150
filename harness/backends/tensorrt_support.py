"""The parts of the TensorRT backend that need no TensorRT: tested everywhere.

Profile translation, dtype and shape mapping, buffer sizing, parse-error translation, the profile policy
for several execution contexts, and the legacy INT8 calibrator's batching and cache file.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BuildError, ModeUnsupported, ProfileError
from ..profiles import Profile, Shape

# TensorRT DataType names -> numpy; BF16, FP8, INT4, FP4 have no numpy type: such I/O is refused
DTYPES: dict[str, Any] = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
                          "INT64": np.int64, "BOOL": np.bool_, "UINT8": np.uint8}


def numpy_dtype(trt_dtype: Any, tensor: str) -> np.dtype:
    """numpy dtype of a TensorRT DataType (given as the enum or its name), for I/O buffers."""
    name = getattr(trt_dtype, "name", str(trt_dtype)).split(".")[-1]
    if name not in DTYPES:
        raise ModeUnsupported(f"tensor {tensor!r} has TensorRT type {name}, which has no numpy type for host I/O; "
                              "keep the model's inputs and outputs in FP32 (the recipes do)")
    return np.dtype(DTYPES[name])


def profile_shapes(profile: Profile, network_inputs: dict[str, tuple[int, ...]], *, model: str) -> list[tuple[str, Shape, Shape, Shape]]:
    """(name, min, opt, max) per network input, for ``IOptimizationProfile.set_shape``.

    ``network_inputs`` maps each input to its network shape, -1 for dynamic dims. Inputs with dynamic
    dims must be in the profile; profile inputs must exist; static dims must agree.
    """
    out = []
    for name in profile.opt:
        if name not in network_inputs:
            raise ProfileError(f"model {model!r}: profile {profile.name!r} names input {name!r}, which the network "
                               f"does not have (inputs: {', '.join(network_inputs)})")
    for name, dims in network_inputs.items():
        if name not in profile.opt:
            if any(d < 0 for d in dims):
                raise ProfileError(f"model {model!r}: input {name!r} has dynamic shape {list(dims)} and no shape "
                                   f"in profile {profile.name!r}")
            continue
        lo, mid, hi = profile.min[name], profile.opt[name], profile.max[name]
        if len(lo) != len(dims) or any(d >= 0 and not (a == b == c == d) for d, a, b, c in zip(dims, lo, mid, hi)):
            raise ProfileError(f"model {model!r}: profile {profile.name!r} gives input {name!r} shapes "
                               f"{'x'.join(map(str, lo))} .. {'x'.join(map(str, hi))}, which do not fit the network's "
                               f"{list(dims)}")
        out.append((name, lo, mid, hi))
    return out


def distinct_dim_names(model: Any, profile: Profile) -> list[str]:
    """Give dims that share a name but get different values in the profile names of their own (in place).

    TensorRT takes input dimensions with the same name to be equal; exporters reuse placeholders such as
    "?" for unrelated dimensions (PP-OCR's direction classifier names height and width both "?"). Returns
    what was renamed.
    """
    values: dict[str, set[tuple[str, int]]] = {}
    for inp in model.graph.input:
        if inp.name not in profile.opt:
            continue
        for axis, d in enumerate(inp.type.tensor_type.shape.dim):
            if d.HasField("dim_param"):
                for which in ("min", "opt", "max"):
                    values.setdefault(d.dim_param, set()).add((which, getattr(profile, which)[inp.name][axis]))
    conflicting = {name for name, v in values.items() if len({w for w, _ in v}) < len(v)}
    renamed = []
    for inp in model.graph.input:
        for axis, d in enumerate(inp.type.tensor_type.shape.dim):
            if d.HasField("dim_param") and d.dim_param in conflicting:
                new = f"{d.dim_param}__{inp.name}_{axis}"
                renamed.append(f"{inp.name}[{axis}]: {d.dim_param!r} -> {new!r}")
                d.dim_param = new
    return renamed


def buffer_nbytes(shape: Sequence[int], dtype: Any, tensor: str) -> int:
    """Bytes a tensor of ``shape`` takes; every dim must be known by now."""
    if any(int(d) < 0 for d in shape):
        raise BuildError(f"tensor {tensor!r} still has unknown dimensions {list(shape)} after all input shapes were "
                         "set (a data-dependent output shape; not supported)")
    return int(np.prod([int(d) for d in shape], dtype=np.int64)) * np.dtype(dtype).itemsize


@dataclass(frozen=True)
class ParseError:
    """What TensorRT's ONNX parser says about one failing node."""

    node: int
    node_name: str
    operator: str
    description: str
    code: str = ""


def parse_errors(parser: Any) -> list[ParseError]:
    errors = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        errors.append(ParseError(
            node=int(e.node()), node_name=_call(e, "node_name"), operator=_call(e, "node_operator"),
            description=str(e.desc()), code=str(getattr(e.code(), "name", e.code()))))
    return errors


def _call(obj: Any, name: str) -> str:
    fn = getattr(obj, name, None)  # node_name / node_operator exist from TensorRT 10 on
    return str(fn()) if callable(fn) else ""


def parse_error_message(model: Path, errors: Sequence[ParseError]) -> str:
    lines = [f"TensorRT's ONNX parser rejected {model} ({len(errors)} error(s)):"]
    for e in errors:
        where = f"node #{e.node}"
        if e.node_name:
            where += f" {e.node_name!r}"
        if e.operator:
            where += f" ({e.operator})"
        lines.append(f"  {where}: {e.description}" + (f" [{e.code}]" if e.code else ""))
    return "\n".join(lines)


class ProfileSlots:
    """The profile policy for several execution contexts of one engine.

    A dynamic-shape optimization profile serves one execution context at a time (TensorRT before profile
    sharing; still the developer guide's rule), so an engine meant for N concurrent contexts is built with
    N copies of the profile and each context takes a profile of its own: ``acquire`` hands out a free
    index and refuses, with the reason, when all are taken.
    """

    def __init__(self, count: int, engine: str):
        self.count = count
        self.engine = engine
        self._used: set[int] = set()
        self._lock = threading.Lock()

    def acquire(self) -> int:
        with self._lock:
            for i in range(self.count):
                if i not in self._used:
                    self._used.add(i)
                    return i
        raise ModeUnsupported(
            f"engine {self.engine} has {self.count} optimization profile(s), all in use by other execution contexts: "
            f"N concurrent contexts need an engine built with N copies of the profile (the perf modes ask for them)")

    def release(self, index: int) -> None:
        with self._lock:
            self._used.discard(index)


class CalibrationFeeder:
    """Batches and cache file for the legacy INT8 calibrator (TensorRT 10's weak-typing path).

    Batches come from an iterator of feeds shaped like the calibration profile (all of one shape; a short
    last batch is dropped, since TensorRT calibrates at a fixed shape). The cache file is read if it exists
    and written atomically, so that an interrupted build never leaves half a cache behind.
    """

    def __init__(self, batches: Iterator[dict[str, np.ndarray]], cache_file: Path, shapes: dict[str, Shape]):
        self._batches = batches
        self.cache_file = Path(cache_file)
        self.shapes = {k: tuple(v) for k, v in shapes.items()}
        self.served = 0
        self.dropped = 0

    def next_batch(self, names: Sequence[str]) -> dict[str, np.ndarray] | None:
        """The next full batch for ``names``, or None when the data runs out."""
        for feeds in self._batches:
            missing = [n for n in names if n not in feeds]
            if missing:
                raise BuildError(f"calibration batch lacks input(s) {', '.join(missing)}")
            if any(tuple(feeds[n].shape) != self.shapes[n] for n in names):
                self.dropped += 1
                continue
            self.served += 1
            return {n: np.ascontiguousarray(feeds[n]) for n in names}
        return None

    def read_cache(self) -> bytes | None:
        if self.cache_file.is_file():
            data = self.cache_file.read_bytes()
            return data or None
        return None

    def write_cache(self, data: bytes) -> None:
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_file.with_name(self.cache_file.name + f".{os.getpid()}.part")
        tmp.write_bytes(bytes(data))
        os.replace(tmp, self.cache_file)
