"""Optimization profiles: the harness's shape profile as TensorRT's, and which profile each context takes.

Needs no TensorRT.
"""

from __future__ import annotations

import threading

import numpy as np

from ...errors import ModeUnsupported, ProfileError
from ...profiles import Profile, Shape


def profile_shapes(profile: Profile, network_inputs: dict[str, tuple[int, ...]], *, model: str,
                   shape_tensors: frozenset[str] = frozenset()) -> list[tuple[str, Shape, Shape, Shape]]:
    """(name, min, opt, max) per network input, for ``IOptimizationProfile.set_shape``.

    ``network_inputs`` maps each input to its network shape, -1 for dynamic dims. Inputs with dynamic
    dims must be in the profile; profile inputs must exist; static dims must agree. ``shape_tensors`` are
    left out: the profile gives their values (see ``profile_values``).
    """
    out = []
    for name in profile.opt:
        if name not in network_inputs:
            raise ProfileError(f"model {model!r}: profile {profile.name!r} names input {name!r}, which the network "
                               f"does not have (inputs: {', '.join(network_inputs)})")
    for name, dims in network_inputs.items():
        if name in shape_tensors:
            continue
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


def profile_values(profile: Profile, network_inputs: dict[str, tuple[int, ...]], shape_tensors: frozenset[str], *,
                   model: str) -> list[tuple[str, Shape, Shape, Shape]]:
    """(name, min, opt, max) *values* per shape-tensor input, for ``IOptimizationProfile.set_shape_input``.

    A shape tensor's values decide other tensors' shapes, so TensorRT needs their range, not its (static)
    shape; as in trtexec, the profile's entry for a shape tensor gives its values (``s:1x8`` is [1, 8]).
    """
    out = []
    for name in sorted(shape_tensors):
        size = int(np.prod(network_inputs[name], dtype=np.int64))
        if name not in profile.opt:
            raise ProfileError(f"model {model!r}: input {name!r} is a shape tensor: profile {profile.name!r} must give "
                               f"the range of its {size} value(s), as trtexec does (e.g. {name}:1x8)")
        lo, mid, hi = profile.min[name], profile.opt[name], profile.max[name]
        if not len(lo) == len(mid) == len(hi) == size:
            raise ProfileError(f"model {model!r}: profile {profile.name!r} gives shape tensor {name!r} "
                               f"{len(mid)} value(s); it holds {size}")
        out.append((name, lo, mid, hi))
    return out


class ProfileSlots:
    """Which optimization profile each execution context of one engine takes.

    With one profile (the default) every context takes profile 0: TensorRT 10 made profiles shareable
    between contexts (the ``PROFILE_SHARING_0806`` preview feature, on by default in 10.0 and removed, as
    always on, in 11), and trtexec gives every stream's context the same profile. So serial and concurrent
    modes time the same engine. An engine built with N copies (``profile_copies``, asked for explicitly)
    gives each context a copy of its own: ``acquire`` hands out a free index and refuses, with the
    reason, when all N are taken.
    """

    def __init__(self, count: int, engine: str):
        self.count = count
        self.engine = engine
        self.shared = count == 1
        self._used: set[int] = set()
        self._lock = threading.Lock()

    def acquire(self) -> int:
        if self.shared:
            return 0
        with self._lock:
            for i in range(self.count):
                if i not in self._used:
                    self._used.add(i)
                    return i
        raise ModeUnsupported(
            f"engine {self.engine} was built with {self.count} copies of its optimization profile "
            f"(profile_copies={self.count}), all in use by other execution contexts: ask for at least as many "
            f"copies as concurrent runners, or leave profile_copies at 1 to share one profile")

    def release(self, index: int) -> None:
        if self.shared:
            return
        with self._lock:
            self._used.discard(index)

    def in_use(self) -> int:
        with self._lock:
            return len(self._used)
