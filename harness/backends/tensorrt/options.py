"""TensorRT builder options: their defaults (part of every engine's cache key) and their checks."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ...errors import BuildError

BUILD_OPTIONS: dict[str, Any] = {
    "opt_level": 3,  # builder_optimization_level, 0-5
    "workspace_mb": 0,  # memory pool limit for the workspace; 0: TensorRT's default
    "max_aux_streams": -1,  # -1: TensorRT decides
    # 1: one optimization profile, shared by every execution context (TensorRT >= 10 allows it, and trtexec
    # gives every stream's context the same profile). N > 1: N copies, each context takes one of its own.
    "profile_copies": 1,
    "tf32": False,
    "legacy_precision": None,  # TensorRT 10 only: "fp16" or "int8" weak typing on an FP32 model
    "legacy_calibrator": "entropy",  # with legacy int8: entropy or minmax
    "compute_capabilities": None,  # TensorRT-RTX: targets (e.g. ["SM86", "SM89"]); None: the GPU, else defaults
}


def check_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The full option set (defaults filled in), or a BuildError naming the option at fault."""
    given = dict(options or {})
    unknown = sorted(set(given) - set(BUILD_OPTIONS))
    if unknown:
        raise BuildError(f"unknown TensorRT build option(s) {', '.join(unknown)}; known: {', '.join(BUILD_OPTIONS)}")
    out = {**BUILD_OPTIONS, **given}
    if not 0 <= int(out["opt_level"]) <= 5:
        raise BuildError(f"TensorRT build option opt_level must be 0-5, got {out['opt_level']!r}")
    if int(out["profile_copies"]) < 1:
        raise BuildError(f"TensorRT build option profile_copies must be >= 1, got {out['profile_copies']!r}")
    if out["legacy_precision"] not in (None, "fp16", "int8"):
        raise BuildError(f"legacy_precision must be fp16 or int8, got {out['legacy_precision']!r}")
    if out["legacy_calibrator"] not in ("entropy", "minmax"):
        raise BuildError(f"legacy_calibrator must be entropy or minmax, got {out['legacy_calibrator']!r}")
    targets = out["compute_capabilities"]
    if targets is not None:
        if isinstance(targets, str):
            targets = out["compute_capabilities"] = [t for t in re.split(r"[+,\s]+", targets) if t]
        bad = [t for t in targets if not re.fullmatch(r"SM\d+", str(t))]
        if not targets or bad:
            raise BuildError(f"compute_capabilities must name targets such as SM86+SM89, got {targets!r}")
    return out
