"""Evaluation and calibration data.

Samples are either real (a ``.npz`` named in the registry) or generated from the registry's value ranges.
A generated sample depends only on the seed, its index and its own shape, never on the batch it lands in,
so a fixed and a dynamic profile with the same per-sample shape see the very same inputs.

When a model has real samples, the last ``calibration.size`` of them are reserved for calibration and
the evaluation set is drawn from the rest: a quantized model is never scored on the data it was
calibrated on. Labels for outputs (``labels`` in the registry) come from the same file, sliced alike.

At another shape of the profile than its opt one (``shapes``: :mod:`harness.shape_cases`) generated samples
are drawn at that shape; real samples are fitted to it (:func:`fit_sample`: cropped, or padded by repeating
their edge), and ``fitted`` records which inputs were.

A shared input (no batch axis) has one value per batch: the registry's ``value``, one value stored in the
samples file, or one generated value (independent of the sample index, so that every batch size sees the
same); real samples that hold one value per sample must agree within a batch.
"""


from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import HarnessError
from .profiles import Profile, Shape
from .spec import InputSpec, ModelSpec

GENERATOR_VERSION = 1
EVAL_STREAM, CALIB_STREAM = 0, 1


@dataclass(frozen=True)
class Batch:
    index: int  # index of the batch's first sample in the set
    count: int  # real samples in the batch (the rest, if any, is padding for a fixed batch size)
    feeds: dict[str, np.ndarray]


def read_npz(path: Path, names: list[str]) -> tuple[dict[str, np.ndarray], set[str]]:
    """The arrays ``names`` of a samples ``.npz`` (those it has) and every array name in it; HarnessError naming
    the file (and the array) when it is not a readable ``.npz`` of plain numeric arrays."""
    # np.load takes any file that is not a zip (or .npy) for a pickle, and refuses it as "pickled data"
    if not zipfile.is_zipfile(path):
        raise HarnessError(f"{path} is not a .npz file (not a zip archive); write the samples with numpy.savez, "
                           "one array per input")
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            for name in names:
                if name not in keys:
                    continue
                try:
                    arrays[name] = data[name]
                except ValueError as exc:
                    if "allow_pickle" not in str(exc):
                        raise
                    raise HarnessError(f"{path}: array {name!r} holds Python objects (a pickle), which the harness "
                                       "never loads; store plain numeric arrays, one per input") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise HarnessError(f"{path} cannot be read as a .npz file: {exc}") from None
    return arrays, keys


def per_sample_shape(spec: InputSpec, shape: Shape) -> Shape:
    if spec.batch_axis is None:
        return tuple(shape)
    return tuple(d for i, d in enumerate(shape) if i != spec.batch_axis)


def batch_size_of(spec: ModelSpec, profile: Profile, which: str = "opt") -> int:
    """The batch size of a profile's opt (or min / max) shapes; 1 for models with no batch axis."""
    shapes = getattr(profile, which)
    for name, ispec in spec.inputs.items():
        if ispec.batch_axis is not None and name in shapes:
            return int(shapes[name][ispec.batch_axis])
    return 1


def generate_sample(spec: InputSpec, shape: Shape, seed: int, index: int, stream: int = EVAL_STREAM) -> np.ndarray:
    """One sample of one input, deterministic in (seed, stream, input name, index)."""
    name_key = int.from_bytes(hashlib.sha256(spec.name.encode()).digest()[:4], "little")
    rng = np.random.default_rng([seed, stream, name_key, index])
    lo, hi = spec.low, spec.high
    if spec.dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if spec.is_integer:
        if spec.distribution == "zipf":
            span = int(hi - lo) + 1
            ranks = rng.zipf(1.3, size=shape) - 1
            # spread popular ids over the range with a fixed permutation-like scramble
            ids = (ranks * 2654435761) % span
            return (lo + ids).astype(spec.dtype)
        return rng.integers(int(lo), int(hi) + 1, size=shape).astype(spec.dtype)
    if spec.distribution == "smooth":
        return _smooth(rng, shape, lo, hi).astype(spec.dtype)
    if spec.distribution == "normal":
        x = rng.normal((lo + hi) / 2.0, (hi - lo) / 6.0, size=shape)
        return np.clip(x, lo, hi).astype(spec.dtype)
    return (lo + (hi - lo) * rng.random(size=shape)).astype(spec.dtype)


def _from_storage(arr: np.ndarray, spec: InputSpec) -> np.ndarray:
    if (spec.sample_scale, spec.sample_offset) != (1.0, 0.0):
        arr = arr.astype(np.float64) * spec.sample_scale + spec.sample_offset
    return arr.astype(spec.dtype, copy=False)


def _smooth(rng: np.random.Generator, shape: Shape, lo: float, hi: float) -> np.ndarray:
    """Image-like values: a low-frequency field (16x coarser along the last two axes) plus fine noise."""
    if len(shape) < 2:
        return lo + (hi - lo) * rng.random(size=shape)
    h, w = shape[-2], shape[-1]
    coarse = rng.random(size=(*shape[:-2], -(-h // 16), -(-w // 16)))
    field = coarse.repeat(16, axis=-2).repeat(16, axis=-1)[..., :h, :w]
    return lo + (hi - lo) * (0.8 * field + 0.2 * rng.random(size=shape))


class SampleSet:
    """The evaluation (or calibration) samples of one model at one profile, served in batches."""

    def __init__(self, spec: ModelSpec, profile: Profile, *, size: int | None = None, purpose: str = "evaluation",
                 source: str = "auto", shapes: dict[str, Shape] | None = None):
        """``shapes``: the inputs' batch shapes to serve (a point of the profile: harness.shape_cases); by
        default the profile's opt shapes."""
        self.spec = spec
        self.profile = profile
        self.purpose = purpose
        target = shapes or profile.opt
        self.batch = _batch_of(spec, target) or batch_size_of(spec, profile)
        self.min_batch = batch_size_of(spec, profile, "min")
        self.fitted: dict[str, tuple[Shape, Shape]] = {}  # input -> (stored per-sample shape, served one)
        real = spec.samples is not None and source in ("auto", "real")
        self.real = real
        self._arrays: dict[str, np.ndarray] | None = None
        self.sample_shapes: dict[str, Shape] = {}
        if real:
            assert spec.samples is not None
            label_names = {out: cfg.labels for out, cfg in spec.outputs.items() if cfg.labels}
            stored, _ = read_npz(spec.samples.path, list(spec.inputs) + list(label_names.values()))
            arrays = {k: _from_storage(stored[k], spec.inputs[k]) for k in spec.inputs
                      if spec.inputs[k].value is None and k in stored}
            labels = {out: stored[key] for out, key in label_names.items()}
            # a shared input stored as one value (no samples axis) is the same for every sample
            self._constants = {k: arrays.pop(k) for k in list(arrays) if spec.inputs[k].shared and
                               arrays[k].ndim == len(spec.inputs[k].dims)}
            counted = arrays or labels
            total = next(iter(counted.values())).shape[0] if counted else spec.eval_size + spec.calibration_size
            reserve = spec.calibration_size
            if total <= reserve:
                raise HarnessError(
                    f"model {spec.name!r}: {spec.samples.path} has {total} samples, but calibration.size reserves "
                    f"{reserve} for calibration, leaving none to evaluate; add samples or lower calibration.size"
                )
            if purpose == "calibration":
                sl = slice(total - reserve, total)
                want = size or reserve
            else:
                sl = slice(0, total - reserve)
                want = size or spec.eval_size
            self._arrays = {k: v[sl][:want] for k, v in arrays.items()}
            if shapes is not None:  # another point of the profile: each sample fitted to its shape there
                for k, v in list(self._arrays.items()):
                    want_shape = per_sample_shape(spec.inputs[k], target[k]) if k in target else v.shape[1:]
                    if tuple(v.shape[1:]) != want_shape:
                        self.fitted[k] = (tuple(v.shape[1:]), want_shape)
                        self._arrays[k] = fit_sample(v, want_shape)
            self._labels = {k: v[sl][:want] for k, v in labels.items()}
            self.count = min(len(range(total)[sl]), want)
            self.sample_shapes = {k: v.shape[1:] for k, v in self._arrays.items()}
            self.sample_shapes.update({k: v.shape for k, v in self._constants.items()})
        else:
            self._constants, self._labels = {}, {}
            self.count = size or (spec.calibration_size if purpose == "calibration" else spec.eval_size)
        for k, s in spec.inputs.items():
            if k not in self.sample_shapes:
                self.sample_shapes[k] = per_sample_shape(s, target[k]) if k in target else \
                    tuple(int(d) for d in s.dims)
            if s.value is not None:  # the registry's value, filling the sample's shape when it is a number
                filled = np.broadcast_to(s.value, self.sample_shapes[k]) if s.value.ndim == 0 else s.value
                self._constants[k] = _contiguous(filled, dtype=s.dtype)
                self.sample_shapes[k] = self._constants[k].shape
        self.stream = CALIB_STREAM if purpose == "calibration" else EVAL_STREAM

    def batch_shape(self, name: str, n: int) -> Shape:
        ispec = self.spec.inputs[name]
        shape = list(self.sample_shapes[name])
        if ispec.batch_axis is not None:
            shape.insert(ispec.batch_axis, n)
        return tuple(shape)

    def check_profile(self, batch: int | None = None) -> None:
        """Raise ProfileError, naming input, shape and profile, if this set's batches fall outside."""
        n = batch or self.batch
        self.profile.check({k: self.batch_shape(k, n) for k in self.spec.inputs}, model=self.spec.name)

    def key(self) -> dict[str, object]:
        """What determines the samples' values: part of the reference cache key."""
        return {
            "generator": GENERATOR_VERSION,
            "numpy": ".".join(np.__version__.split(".")[:2]),
            "purpose": self.purpose,
            "count": self.count,
            "seed": self.spec.eval_seed,
            "real": self.spec.samples.sha256 if self.real and self.spec.samples else None,
            "inputs": {
                k: [s.dtype.name, list(self.sample_shapes[k]), s.low, s.high, s.distribution, s.batch_axis,
                    s.sample_scale, s.sample_offset]
                + ([hashlib.sha256(_contiguous(s.value).tobytes()).hexdigest()[:16]]
                   if s.value is not None else [])
                for k, s in sorted(self.spec.inputs.items())
            },
        }

    @property
    def labelled(self) -> bool:
        return bool(self._labels)

    def labels(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Labels of samples [start, stop) per output that has them, samples on axis 0."""
        return {k: np.asarray(v[start:stop]) for k, v in self._labels.items()}

    def samples(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Samples [start, stop) of every input, stacked along each input's batch axis."""
        out = {}
        for name, ispec in self.spec.inputs.items():
            if name in self._constants:
                value = self._constants[name]
                if ispec.shared:
                    out[name] = _contiguous(value)
                    continue
                arr = np.broadcast_to(value, (stop - start, *value.shape))
            elif self._arrays is not None:
                arr = self._arrays[name][start:stop]
            elif ispec.shared:  # one generated value for the whole set, whatever the batch size
                out[name] = generate_sample(ispec, self.sample_shapes[name], self.spec.eval_seed, 0, self.stream)
                continue
            else:
                arr = np.stack([generate_sample(ispec, self.sample_shapes[name], self.spec.eval_seed, i, self.stream)
                                for i in range(start, stop)])
            if ispec.shared:
                differ = [start + i for i in range(1, len(arr)) if not np.array_equal(arr[i], arr[0])]
                if differ:
                    raise HarnessError(
                        f"model {self.spec.name!r}: input {name!r} has no batch axis (one value per batch), but the "
                        f"samples hold different values for samples #{start} and #{differ[0]} of one batch; give it "
                        "a batch axis in the registry (inputs.NAME.batch_axis) or use a profile of batch 1")
                arr = arr[0]
            elif ispec.batch_axis:
                arr = np.moveaxis(arr, 0, ispec.batch_axis)
            out[name] = _contiguous(arr)
        return out

    def batches(self, batch: int | None = None, *, fill: bool = False) -> Iterator[Batch]:
        """Batches of ``batch`` samples (this set's batch by default: the profile's opt batch, or that of the
        shapes it serves).

        A last batch smaller than the profile's minimum batch (the whole batch, for a fixed profile), or with
        ``fill`` smaller than ``batch`` itself (so that every request has exactly the shape being tested), is
        filled up by repeating its last sample; ``Batch.count`` says how many rows are real.
        """
        b = batch or self.batch
        for start in range(0, self.count, b):
            stop = min(start + b, self.count)
            feeds = self.samples(start, stop)
            n = stop - start
            size = max(self.min_batch, b if fill else 0)
            if n < size:
                feeds = {k: _pad(v, self.spec.inputs[k].batch_axis, size) for k, v in feeds.items()}
            yield Batch(start, n, feeds)


def _batch_of(spec: ModelSpec, shapes: dict[str, Shape]) -> int | None:
    for name, ispec in spec.inputs.items():
        if ispec.batch_axis is not None and name in shapes:
            return int(shapes[name][ispec.batch_axis])
    return None


def fit_sample(arr: np.ndarray, shape: Shape) -> np.ndarray:
    """Samples (stacked on axis 0) fitted to another per-sample shape: each axis cropped to its first ``n``
    entries, or padded at its end by repeating the last one (an image's right edge, a text line's background),
    as a deployment pads a batch to the largest item's size."""
    if arr.ndim - 1 != len(shape):
        raise HarnessError(f"cannot fit samples of shape {tuple(arr.shape[1:])} to {tuple(shape)}: ranks differ")
    out = arr[tuple([slice(None)] + [slice(0, n) for n in shape])]
    pads = [(0, 0)] + [(0, max(0, n - have)) for n, have in zip(shape, out.shape[1:])]
    if any(p[1] for p in pads):
        out = np.pad(out, pads, mode="edge")
    return np.ascontiguousarray(out)


def _contiguous(arr: np.ndarray, dtype: Any = None) -> np.ndarray:
    # np.ascontiguousarray turns a scalar into shape (1,): a scalar input (a sample rate) must stay shape ()
    return np.asarray(arr, dtype=dtype, order="C")


def _pad(arr: np.ndarray, axis: int | None, to: int) -> np.ndarray:
    if axis is None:
        return arr
    n = arr.shape[axis]
    idx = list(range(n)) + [n - 1] * (to - n)
    return np.take(arr, idx, axis=axis)


def unpad(outputs: dict[str, np.ndarray], count: int, batch_axes: dict[str, int | None]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in outputs.items():
        ax = batch_axes.get(k, 0)
        out[k] = v if ax is None or v.shape[ax] == count else np.take(v, range(count), axis=ax)
    return out
