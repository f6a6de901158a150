"""The shapes an accuracy gate runs at: min, opt and max of each dynamic profile, and the registry's extra shapes.

An engine is built for a whole profile, yet it was gated at the opt shape only; kernels chosen for large
batches, a reduction whose sum leaves FP16's range at the longest sequence, a padding path taken only at the
smallest size, all live elsewhere in the profile. So each accuracy case runs at one *shape point* of its
profile, its own case id: ``classifier-ort_cpu-fp16-dynamic`` (opt, the id it always had),
``...-dynamic-min``, ``...-dynamic-max``, and ``...-dynamic-wide`` for an extra shape named ``wide`` in the
registry (``dynamic = { min = ..., opt = ..., max = ..., extra = { wide = "x:4x3x48x960" } }``).

A point whose shapes equal another selected point's is left out (a fixed profile has opt alone), opt first.
At a point the evaluation set runs in batches of exactly the point's batch size (the last batch filled up by
repeating samples, whose outputs are dropped), with each sample at the point's other dimensions: generated
samples are drawn at that shape, real ones are fitted to it (:func:`harness.data.fit_sample`).

``--shapes`` selects points by name: ``min``, ``opt``, ``max``, ``extra`` (every extra shape) or an extra
shape's own name; the default is all of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .errors import HarnessError
from .profiles import Profile, Shape, format_shapes

if TYPE_CHECKING:
    from .data import SampleSet
    from .spec import ModelSpec

BOUNDS = ("min", "opt", "max")
EXTRA = "extra"
RESERVED_SHAPE_NAMES = (*BOUNDS, EXTRA, "all")
DEFAULT = (*BOUNDS, EXTRA)


def point_shapes(profile: Profile, point: str) -> dict[str, Shape]:
    """Every input's shape at a point of the profile."""
    if point in BOUNDS:
        return dict(getattr(profile, point))
    if point in profile.extra:
        return dict(profile.extra[point])
    known = ", ".join([*BOUNDS, *profile.extra])
    raise HarnessError(f"profile {profile.name!r} has no shape {point!r} (it has {known})")


def shape_points(profile: Profile, wanted: Iterable[str] | None = None) -> list[str]:
    """The points of ``profile`` that ``wanted`` (``--shapes``) selects, opt first among equal shapes, in the
    order opt, min, max, then the extra shapes; ids keep min, opt, max, extras order."""
    names = list(wanted or DEFAULT)
    selected: list[str] = []
    for name in (*BOUNDS, *profile.extra):
        if name in names or (name in profile.extra and EXTRA in names):
            selected.append(name)
    seen: list[dict[str, Shape]] = []
    keep: set[str] = set()
    for name in sorted(selected, key=lambda n: (n != "opt", selected.index(n))):
        shapes = point_shapes(profile, name)
        if shapes in seen:
            continue
        seen.append(shapes)
        keep.add(name)
    return [n for n in selected if n in keep]


def case_suffix(point: str) -> str:
    """What a point adds to a case id: nothing at opt (the id every earlier run used), ``-min`` elsewhere."""
    return "" if point == "opt" else f"-{point}"


def check_wanted(wanted: list[str], profiles: Iterable[Profile], source: str) -> None:
    """Refuse a ``--shapes`` entry that names no point of any selected profile, naming it and what exists."""
    profiles = list(profiles)
    known = set(DEFAULT) | {name for p in profiles for name in p.extra}
    bad = [w for w in wanted if w not in known]
    if bad:
        extras = sorted({name for p in profiles for name in p.extra})
        raise HarnessError(f"{source}: no selected profile has the shape(s) {', '.join(bad)}; give min, opt, max, "
                           f"extra{' or one of ' + ', '.join(extras) if extras else ''}")


def point_samples(spec: ModelSpec, profile: Profile, point: str, size: int | None, row: Any = None,
                  notes: list[str] | None = None) -> SampleSet:
    """The evaluation set served at ``point`` of ``profile``, checked against the profile (a ProfileError names
    the input, its shape and the profile). ``row`` gets the point's shapes and ``notes`` what was fitted."""
    from .data import SampleSet

    shapes = point_shapes(profile, point)
    samples = SampleSet(spec, profile, size=size, shapes=None if point == "opt" else shapes)
    samples.check_profile()
    if row is not None:
        row.update(shape_dims=format_shapes({k: samples.batch_shape(k, samples.batch) for k in spec.inputs
                                             if k in shapes}))
    if notes is not None:
        notes += [f"real samples of input {k!r} fitted from {'x'.join(map(str, a))} to {'x'.join(map(str, b))} "
                  f"(cropped, or padded by repeating the edge) for the {point} shape"
                  for k, (a, b) in samples.fitted.items()]
    return samples
