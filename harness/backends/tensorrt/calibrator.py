"""TensorRT 10's weak typing, opt-in only: the FP16 / INT8 builder flags and the legacy INT8 calibrator.

TensorRT 11 removed both (and TensorRT-RTX never had them): asking for them there is refused with the
reason. The calibrator calibrates at one shape, the calibration profile (the engine profile's opt shape),
so it is fed full batches of exactly that shape, cut from the recipe's calibration samples. A set that
cannot make a single such batch is refused before the build, naming the shapes and counts (TensorRT
would otherwise fail late with "no scaling factors"). The calibrator's device buffers and stream are
freed when the build ends, whichever way it ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ... import cuda
from ...errors import BuildError, ModeUnsupported
from ...profiles import Shape
from .library import has_weak_typing

if TYPE_CHECKING:  # the published stubs (tensorrt_stubs) type every call made on a TensorRT object
    import tensorrt as trt


def check_legacy(mod: Any, backend: str, precision: str) -> None:
    """Refuse weak typing, with the reason, where the module has none."""
    if not has_weak_typing(mod):
        flag = {"fp16": "FP16", "int8": "INT8"}[precision]
        raise ModeUnsupported(
            f"{backend} {mod.__version__} has no weak typing: the {flag} builder flag and the INT8 calibrators "
            "were removed in TensorRT 11 (and TensorRT-RTX never had them). Use the fp16 / int8 recipes, which "
            "put the precision in the ONNX file.")


class CalibrationFeeder:
    """Batches and cache file for the legacy INT8 calibrator.

    Batches come from an iterator of feeds that should all have the calibration shapes; one of another
    shape is dropped (counted), since TensorRT calibrates at one fixed shape. The cache file is read if it
    exists and written atomically, so that an interrupted build never leaves half a cache behind.
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


def calibration_feeder(calibration: Any, shapes: dict[str, Shape], cache_file: Path, *, label: str) -> CalibrationFeeder:
    """A feeder of full batches of exactly ``shapes`` (the calibration profile: every network input's opt
    shape) cut from a calibration SampleSet, or a BuildError, before anything is built, when it could serve
    none."""
    spec = calibration.spec
    batch = 1
    for name, ispec in spec.inputs.items():
        if ispec.batch_axis is not None and name in shapes:
            batch = int(shapes[name][ispec.batch_axis])
            break
    for name, want in shapes.items():
        if name not in spec.inputs:
            raise BuildError(f"{label}: legacy int8 calibration: the network has input {name!r}, which the "
                             f"calibration samples lack (they have {', '.join(spec.inputs)})")
        got = tuple(calibration.batch_shape(name, batch))
        if got != tuple(want):
            raise BuildError(
                f"{label}: legacy int8 calibration: input {name!r} is calibrated at the profile's opt shape "
                f"{'x'.join(map(str, want))}, but the calibration samples make batches of {'x'.join(map(str, got))}; "
                "TensorRT would get no batch it can use. Calibrate with a profile whose opt shape the samples have.")
    count = int(calibration.count)
    if count < batch:
        raise BuildError(
            f"{label}: legacy int8 calibration needs batches of {batch} samples (the profile's opt batch), but the "
            f"calibration set has {count}: TensorRT would get no batch and fail with 'no scaling factors'. Raise "
            f"calibration_size to at least {batch}, or calibrate with a profile whose opt batch is at most {count}.")

    def batches() -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, count - batch + 1, batch):  # full batches only: TensorRT calibrates at one shape
            yield calibration.samples(start, start + batch)

    return CalibrationFeeder(batches(), cache_file, dict(shapes))


def make_calibrator(mod: Any, feeder: CalibrationFeeder, method: str) -> Any:
    """A TensorRT 10 INT8 calibrator over a CalibrationFeeder: batches go to device buffers on a stream of its
    own. ``close()`` frees them (the build calls it when it ends)."""
    base = {"entropy": mod.IInt8EntropyCalibrator2, "minmax": mod.IInt8MinMaxCalibrator}[method]

    class Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.stream: cuda.Stream | None = None
            self.buffers: dict[str, cuda.TensorBuffers] = {}

        def get_batch_size(self) -> int:
            return 1  # explicit batch: the batch is in the tensors' shapes

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = feeder.next_batch(names)
            if batch is None:
                return None
            if self.stream is None:
                self.stream = cuda.Stream()
            ptrs = []
            for name in names:
                arr = batch[name]
                buf = self.buffers.get(name)
                if buf is None:
                    buf = self.buffers[name] = cuda.TensorBuffers(arr.shape, arr.dtype)
                buf.host.array[...] = arr
                buf.upload(self.stream)
                ptrs.append(buf.device.ptr)
            self.stream.synchronize()
            return ptrs

        def read_calibration_cache(self) -> bytes | None:
            return feeder.read_cache()

        def write_calibration_cache(self, cache: Any) -> None:
            feeder.write_cache(memoryview(cache).tobytes())

        def close(self) -> None:
            buffers, self.buffers = self.buffers, {}
            for buf in buffers.values():
                buf.close()
            if self.stream is not None:
                self.stream.close()
                self.stream = None

    return Calibrator()


def configure_legacy(mod: Any, builder: trt.Builder, config: trt.IBuilderConfig, precision: str, method: str,
                     shapes: list[Any], feeder: CalibrationFeeder | None) -> tuple[dict[str, Any], Any]:
    """Set the weak-typing flags (and the calibrator, for int8); returns build facts and the calibrator (or
    None), which the caller closes when the build ends."""
    config.set_flag(mod.BuilderFlag.FP16)
    info: dict[str, Any] = {"legacy_precision": precision}
    if precision != "int8":
        return info, None
    assert feeder is not None
    config.set_flag(mod.BuilderFlag.INT8)
    calib_profile: trt.IOptimizationProfile = builder.create_optimization_profile()
    for name, _lo, mid, _hi in shapes:
        calib_profile.set_shape(name, mod.Dims(mid), mod.Dims(mid), mod.Dims(mid))
    if not config.set_calibration_profile(calib_profile):
        raise BuildError(f"TensorRT refused the calibration profile {[(n, list(m)) for n, _l, m, _h in shapes]}")
    calibrator = make_calibrator(mod, feeder, method)
    config.int8_calibrator = calibrator
    info["calibration_cache"] = str(feeder.cache_file)
    return info, calibrator
