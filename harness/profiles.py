"""Shape profiles, written as trtexec writes them.

A profile gives, per input, the smallest, the typical and the largest shape an engine must accept
(``min`` / ``opt`` / ``max``), the way TensorRT optimization profiles and trtexec's
``--minShapes/--optShapes/--maxShapes`` do. A *fixed* profile has one shape per input (``shapes``):
min = opt = max. A profile may also name *extra* shapes inside it (``extra = { wide = "x:4x3x48x960" }``):
points the accuracy gates test besides min, opt and max (:mod:`harness.shape_cases`); they are test points,
not build parameters, so they are no part of the profile's cache key. Shape strings look like ``image:1x3x224x224,mask:1x128``; a name that contains ``:``
or ``,`` is quoted with single quotes, as trtexec accepts (``'input:0':1x3``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import ProfileError

Shape = tuple[int, ...]

_QUOTED = re.compile(r"'([^']+)'\s*:\s*([0-9x]*)\s*$")


def parse_shapes(text: str, *, where: str = "shape string") -> dict[str, Shape]:
    """Parse ``name:AxBxC,other:D`` into ``{"name": (A, B, C), "other": (D,)}``.

    ``where`` names the profile and field for error messages.
    """
    if not isinstance(text, str) or not text.strip():
        raise ProfileError(f"{where}: expected 'input:AxBxC[,input2:...]', got {text!r}")
    shapes: dict[str, Shape] = {}
    for item in _split_items(text):
        m = _QUOTED.match(item)
        if m:
            name, dims = m.group(1), m.group(2)
        else:
            name, sep, dims = item.rpartition(":")
            if not sep or not name:
                raise ProfileError(f"{where}: {item!r} is not 'input:AxBxC' (no input name before ':')")
        name = name.strip()
        dims = dims.strip()
        try:
            shape = tuple(int(d) for d in dims.split("x")) if dims else ()
        except ValueError:
            raise ProfileError(
                f"{where}: {item!r}: dimensions must be positive integers joined by 'x', like 1x3x224x224"
            ) from None
        if any(d <= 0 for d in shape):
            raise ProfileError(f"{where}: {item!r}: every dimension must be >= 1")
        if name in shapes:
            raise ProfileError(f"{where}: input {name!r} is given twice")
        shapes[name] = shape
    return shapes


def _split_items(text: str) -> list[str]:
    # commas inside quotes belong to the name
    items: list[str] = []
    buf: list[str] = []
    quoted = False
    for ch in text:
        if ch == "'":
            quoted = not quoted
        if ch == "," and not quoted:
            items.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
    items.append("".join(buf).strip())
    return [i for i in items if i]


def format_shapes(shapes: Mapping[str, Shape]) -> str:
    """The inverse of :func:`parse_shapes` (trtexec's syntax)."""
    parts = []
    for name, shape in shapes.items():
        label = f"'{name}'" if (":" in name or "," in name) else name
        parts.append(f"{label}:{'x'.join(str(d) for d in shape)}")
    return ",".join(parts)


@dataclass(frozen=True)
class Profile:
    """One optimization profile: per input, min / opt / max shapes (equal for a fixed profile)."""

    name: str
    min: dict[str, Shape]
    opt: dict[str, Shape]
    max: dict[str, Shape]
    fixed: bool = False
    # where the profile was declared, for error messages
    source: str = field(default="", compare=False)
    # named shapes inside the profile that the accuracy gates also test (never part of the cache key)
    extra: dict[str, dict[str, Shape]] = field(default_factory=dict, compare=False)

    @classmethod
    def from_strings(
        cls,
        name: str,
        *,
        min: str | None = None,
        opt: str | None = None,
        max: str | None = None,
        shapes: str | None = None,
        source: str = "",
    ) -> Profile:
        where = f"{source + ': ' if source else ''}profile {name!r}"
        if shapes is not None:
            if min is not None or opt is not None or max is not None:
                raise ProfileError(f"{where}: give either 'shapes' (fixed) or 'min'/'opt'/'max', not both")
            fixed = parse_shapes(shapes, where=f"{where}, field 'shapes'")
            return cls(name, dict(fixed), dict(fixed), dict(fixed), fixed=True, source=source)
        if min is None or max is None:
            raise ProfileError(f"{where}: a dynamic profile needs 'min' and 'max' (and usually 'opt')")
        lo = parse_shapes(min, where=f"{where}, field 'min'")
        hi = parse_shapes(max, where=f"{where}, field 'max'")
        mid = parse_shapes(opt, where=f"{where}, field 'opt'") if opt is not None else dict(hi)
        if not (lo.keys() == mid.keys() == hi.keys()):
            raise ProfileError(
                f"{where}: min, opt and max must name the same inputs "
                f"(min: {sorted(lo)}, opt: {sorted(mid)}, max: {sorted(hi)})"
            )
        for inp in lo:
            a, b, c = lo[inp], mid[inp], hi[inp]
            if not (len(a) == len(b) == len(c)):
                raise ProfileError(f"{where}: input {inp!r}: min/opt/max have different ranks ({a}, {b}, {c})")
            if any(not (x <= y <= z) for x, y, z in zip(a, b, c)):
                raise ProfileError(
                    f"{where}: input {inp!r}: need min <= opt <= max in every dimension, got "
                    f"min {_fmt(a)}, opt {_fmt(b)}, max {_fmt(c)}"
                )
        return cls(name, lo, mid, hi, fixed=lo == hi, source=source)

    @property
    def inputs(self) -> list[str]:
        return list(self.opt)

    def check(self, shapes: Mapping[str, Shape], *, model: str = "") -> None:
        """Raise ProfileError naming the input, its shape and the profile if a shape falls outside."""
        who = f"model {model!r}, " if model else ""
        for inp, shape in shapes.items():
            if inp not in self.opt:
                continue
            lo, hi = self.min[inp], self.max[inp]
            shape = tuple(shape)
            if len(shape) != len(lo) or any(not (a <= s <= b) for a, s, b in zip(lo, shape, hi)):
                raise ProfileError(
                    f"{who}input {inp!r} has shape {_fmt(shape)}, outside profile {self.name!r} "
                    f"(min {_fmt(lo)}, max {_fmt(hi)})"
                )

    def describe(self) -> str:
        if self.fixed:
            return format_shapes(self.opt)
        return f"min {format_shapes(self.min)} opt {format_shapes(self.opt)} max {format_shapes(self.max)}"

    def key(self) -> dict[str, object]:
        """The profile's part of a cache key: its shapes, not its name."""
        return {
            "min": {k: list(v) for k, v in sorted(self.min.items())},
            "opt": {k: list(v) for k, v in sorted(self.opt.items())},
            "max": {k: list(v) for k, v in sorted(self.max.items())},
        }


def _fmt(shape: Shape) -> str:
    return "x".join(str(d) for d in shape) if shape else "(scalar)"
