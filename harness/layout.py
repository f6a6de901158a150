"""What a model really produces: its output shapes from one real run, and the batch axes they settle.

Declared output shapes are often wrong (an OCR recognizer declaring ``[1, L]`` returns ``[T, 1, C]``; a
detector declaring ``[1, 5]`` returns ``[N, 7]``), and splitting outputs into samples by a wrong batch axis
gives metrics per batch while the row claims per sample. So the FP32 model runs once in ONNX Runtime (CPU,
optimizations off) on its first samples at two batch sizes its profiles admit; an output axis whose size is
the batch size in both runs is that output's batch axis. The shapes are cached (kind ``layout``).

The registry's own ``batch_axis`` for an output is checked against the real shapes, as are ``class_axis``,
``channel_axis`` and ``channels``; where the real shapes differ from the declaration the case carries a
warning saying so.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .cache import Cache, digest
from .errors import HarnessError
from .profiles import Profile
from .spec import Dim, ModelSpec

LAYOUT_VERSION = 1


class LayoutWarning(UserWarning):
    """A model's real outputs differ from what its ONNX file declares."""


@dataclass(frozen=True)
class Layout:
    """Real output shapes by batch size, the batch axes they settle, and what differs from the declaration."""

    shapes: dict[str, dict[int, tuple[int, ...]]]
    batch_axes: dict[str, int | None]
    warnings: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {"batch_axes": self.batch_axes,
                "shapes": {out: {str(b): list(s) for b, s in by.items()} for out, by in self.shapes.items()}}


def probe_plan(spec: ModelSpec) -> tuple[Profile, list[int]]:
    """A profile and the batch sizes to run: two consecutive ones where a profile admits them, else one."""
    from .data import batch_size_of

    first = next(iter(spec.profiles.values()))
    for prof in spec.profiles.values():
        lo, hi = batch_size_of(spec, prof, "min"), batch_size_of(spec, prof, "max")
        if lo < hi and any(i.batch_axis is not None for i in spec.inputs.values()):
            return prof, [lo, lo + 1]
    return first, [batch_size_of(spec, first, "opt")]


def output_layout(cache: Cache, spec: ModelSpec) -> Layout:
    """Run the FP32 model (cached) and settle its outputs' batch axes; raises HarnessError where the registry's
    output settings do not fit the real shapes."""
    import onnxruntime as ort

    from .data import SampleSet

    profile, sizes = probe_plan(spec)
    samples = SampleSet(spec, profile, size=max(sizes))
    sizes = [b for b in sizes if b <= samples.count] or [samples.count]
    parts = {"model": digest(spec.reference_model)[1] if spec.reference_path else spec.model_bytes_hash(),
             "samples": samples.key(), "sizes": sizes, "onnxruntime": ort.__version__, "version": LAYOUT_VERSION}

    def build(path: Path) -> dict[str, Any]:
        shapes = _run(spec, samples, sizes)
        path.write_text(json.dumps(shapes))
        return {"sizes": sizes}

    entry = cache.get_or_build("layout", spec.name, parts, "shapes.json", build)
    raw = json.loads(entry.path.read_text())
    shapes = {out: {int(b): tuple(s) for b, s in by.items()} for out, by in raw.items()}
    return settle(spec, shapes)


def _run(spec: ModelSpec, samples: Any, sizes: list[int]) -> dict[str, dict[str, list[int]]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(str(spec.reference_model), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise HarnessError(f"model {spec.name!r}: ONNX Runtime cannot load {spec.reference_model}: "
                           f"{str(exc).strip()[:400]}") from None
    names = [o.name for o in sess.get_outputs()]
    out: dict[str, dict[str, list[int]]] = {n: {} for n in names}
    for b in sizes:
        feeds = samples.samples(0, b)
        try:
            results = sess.run(names, feeds)
        except Exception as exc:
            shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
            raise HarnessError(f"model {spec.name!r} fails in ONNX Runtime (FP32, CPU) on a batch of {b} ({shapes}): "
                               f"{str(exc).strip()[:400]}") from None
        for n, r in zip(names, results):
            out[n][str(b)] = list(np.shape(r))
    return out


def settle(spec: ModelSpec, shapes: dict[str, dict[int, tuple[int, ...]]]) -> Layout:
    """Batch axes from real shapes (pure: the registry's settings and the declaration against the runs)."""
    axes: dict[str, int | None] = {}
    notes: list[str] = []
    for out, runs in shapes.items():
        sizes = sorted(runs)
        real = runs[sizes[-1]]
        where = f"model {spec.name!r}, output {out!r}"
        seen = " and ".join(f"{list(runs[b])} at batch {b}" for b in sizes)
        if len({len(s) for s in runs.values()}) > 1:
            raise HarnessError(f"{where}: its rank changes with the batch size ({seen})")
        follows = [i for i in range(len(real)) if all(runs[b][i] == b for b in sizes)]
        declared_axis = spec.output_batch_axes.get(out)
        if out in spec.explicit_output_axes:
            axis = declared_axis
            if axis is not None and (axis >= len(real) or (len(sizes) > 1 and axis not in follows)):
                hint = f"its batch is axis {follows[0]}" if len(follows) == 1 else "no axis follows the batch" \
                    if not follows else f"axes {follows} follow the batch"
                raise HarnessError(f"{where}: the registry's batch_axis {axis} does not fit the real output ({seen}): "
                                   f"{hint}")
        elif len(follows) == 1 or (follows and len(sizes) == 1):
            axis = declared_axis if declared_axis in follows else follows[0]
        elif not follows:
            axis = None
        elif declared_axis in follows:
            axis = declared_axis
        else:
            raise HarnessError(f"{where}: axes {follows} all follow the batch size ({seen}); say which holds the "
                               "samples with outputs.NAME.batch_axis in the registry")
        axes[out] = axis
        declared = spec.declared_outputs.get(out)
        if declared is not None and not _agrees(declared, real, axis):
            notes.append(f"output {out!r} is declared {_dims(declared)} but the model returns {seen}; the harness "
                         f"uses the real shapes (batch axis: {'none' if axis is None else axis})")
        elif axis != declared_axis and declared is not None:
            notes.append(f"output {out!r}: its batch is axis {axis}, not the declaration's "
                         f"{'none' if declared_axis is None else declared_axis} ({seen})")
        _check_axes(spec, out, real, axis, where, seen)
    return Layout(shapes, axes, tuple(notes))


def _agrees(declared: tuple[Dim | None, ...], real: tuple[int, ...], axis: int | None) -> bool:
    if len(declared) != len(real):
        return False
    return all(not isinstance(d, int) or d == s or i == axis for i, (d, s) in enumerate(zip(declared, real)))


def _dims(dims: tuple[Dim | None, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _check_axes(spec: ModelSpec, out: str, real: tuple[int, ...], batch: int | None, where: str, seen: str) -> None:
    cfg = spec.outputs.get(out)
    if cfg is None:
        return
    rank = len(real)
    for key in ("class_axis", "channel_axis"):
        ax = getattr(cfg, key)
        if ax is None:
            continue
        if not -rank <= ax < rank:
            raise HarnessError(f"{where}: {key} {ax} is not an axis of the real output ({seen})")
        if batch is not None and ax % rank == batch:
            raise HarnessError(f"{where}: {key} {ax} is the output's batch axis ({seen})")
    if cfg.channels and cfg.channel_axis is not None and max(cfg.channels) >= real[cfg.channel_axis]:
        raise HarnessError(f"{where}: channels {list(cfg.channels)} go past the {real[cfg.channel_axis]} channels "
                           f"along axis {cfg.channel_axis} ({seen})")
    if "ctc_exact" in cfg.metrics and rank - (batch is not None) != 2:
        raise HarnessError(f"{where}: ctc_exact decodes one sequence per sample from [steps, classes]; the real "
                           f"output ({seen}) has {rank - (batch is not None)} axes per sample")


def resolve(cache: Cache, spec: ModelSpec) -> tuple[ModelSpec, Layout]:
    """The spec with its outputs' real batch axes, and the layout; warns where the declaration is wrong."""
    layout = output_layout(cache, spec)
    for note in layout.warnings:
        warnings.warn(LayoutWarning(f"model {spec.name!r}: {note}"), stacklevel=2)
    return spec.with_output_batch_axes(layout.batch_axes), layout
