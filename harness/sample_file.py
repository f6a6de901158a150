"""A model's real samples file checked against its inputs and labels when the registry loads.

Part of the registry loader: the ``.npz`` named by ``evaluation.samples`` holds one array per input, samples
first (a shared input may hold one value for all), and the arrays the outputs' ``labels`` name. Values must
convert to the inputs' types without changing: float64 samples feed a float32 input when they fit its range,
int64 ids an int32 input likewise; real values never become integers, and integer ids must index inside the
embedding tables they reach.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import read_npz
from .errors import HarnessError, RegistryError
from .model_io import OnnxFacts, check_ids
from .spec import Dim, InputSpec, ModelSpec, SampleSource


def check_samples(samples: SampleSource, spec: ModelSpec, facts: OnnxFacts, src: str, name: str) -> None:
    """The samples file holds one array per input, samples first (a shared input may hold a single value), and
    the labels the outputs name; values convert to the inputs' types without loss."""
    fld = "evaluation.samples"
    try:
        data, keys = read_npz(samples.path, list(spec.inputs) + [c.labels for c in spec.outputs.values() if c.labels])
    except HarnessError as exc:
        raise RegistryError(src, name, fld, str(exc)) from None
    missing = [i for i in spec.inputs if i not in keys and spec.inputs[i].value is None]
    if missing:
        raise RegistryError(src, name, fld, f"{samples.path} has no array for input(s) "
                            f"{', '.join(missing)} (it has {', '.join(sorted(keys))})")
    counts = set()
    for inp, ispec in spec.inputs.items():
        if inp not in keys:
            continue
        arr = data[inp]
        _check_convertible(arr, ispec, samples.path, src, name, fld)
        per_sample = [d for i, d in enumerate(ispec.dims) if i != ispec.batch_axis]
        if ispec.shared and arr.ndim == len(per_sample) and _fits(arr.shape, per_sample):
            pass  # one value for every sample
        elif arr.ndim != len(per_sample) + 1 or not _fits(arr.shape[1:], per_sample):
            raise RegistryError(src, name, fld, f"{samples.path}: array {inp!r} has shape {arr.shape}; expected "
                                f"(samples, {', '.join(map(str, per_sample))})"
                                + (" or, for this shared input, one value of its shape" if ispec.shared else ""))
        else:
            counts.add(arr.shape[0])
        if np.issubdtype(ispec.dtype, np.integer) and arr.size:
            check_ids(inp, facts, float(arr.min()), float(arr.max()), src, name, fld, f"array {inp!r}")
    for out, cfg in spec.outputs.items():
        if cfg.labels is None:
            continue
        if cfg.labels not in keys:
            raise RegistryError(src, name, f"outputs.{out}.labels", f"{samples.path} has no array {cfg.labels!r} "
                                f"(it has {', '.join(sorted(keys))})")
        counts.add(data[cfg.labels].shape[0] if data[cfg.labels].ndim else -1)
    if len(counts) > 1:
        raise RegistryError(src, name, fld, f"{samples.path}: inputs and labels have different sample "
                            f"counts {sorted(counts)}")


def _fits(shape: tuple[int, ...], dims: list[Dim]) -> bool:
    return len(shape) == len(dims) and all(not isinstance(d, int) or d == s for d, s in zip(dims, shape))


def _check_convertible(arr: np.ndarray, ispec: InputSpec, path: Path, src: str, name: str, fld: str) -> None:
    """Real samples of another type convert when no value changes: float64 to float32 within its range,
    int64 to int32 within its range; real values never become integers."""
    have, want = arr.dtype, ispec.dtype
    if np.can_cast(have, want, casting="safe") or (ispec.sample_scale, ispec.sample_offset) != (1.0, 0.0):
        return
    what = f"{path}: array {ispec.name!r} has dtype {have}"
    if want.kind in "biu" and have.kind == "f":
        raise RegistryError(src, name, fld, f"{what}: real values do not convert to the input's {want}")
    if have.kind not in "biuf" or want.kind not in "biuf":
        raise RegistryError(src, name, fld, f"{what}, which does not convert to the input's {want}")
    if not arr.size:
        return
    low, high = float(np.min(arr)), float(np.max(arr))
    info = np.finfo(want) if want.kind == "f" else np.iinfo(want)
    if low < float(info.min) or high > float(info.max):
        raise RegistryError(src, name, fld, f"{what} with values from {low:g} to {high:g}, outside the input's {want} "
                            f"range [{float(info.min):g}, {float(info.max):g}]")
