"""Every recipe artifact is validated before it is cached: the ONNX checker with full type checking, then a
load and one inference in ONNX Runtime on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..backends.ort import unsupported
from ..errors import RecipeError
from ..spec import ModelSpec


def validate(path: Path, spec: ModelSpec) -> dict[str, Any]:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # checker raises ValidationError or InferenceError
        raise RecipeError(f"the recipe's output for {spec.name!r} fails the ONNX checker: {exc}") from None
    import onnxruntime as ort

    from ..data import SampleSet

    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        msg = str(exc)
        if unsupported(msg):
            return {"checker": "ok", "onnxruntime_cpu": f"cannot run it: {msg.strip()[:300]}"}
        raise RecipeError(f"ONNX Runtime cannot load the recipe's output for {spec.name!r}: {msg}") from None
    profile = next(iter(spec.profiles.values()))
    batch = next(SampleSet(spec, profile, size=1).batches(1))
    try:
        outs = sess.run(None, batch.feeds)
    except Exception as exc:
        raise RecipeError(f"one inference of the recipe's output for {spec.name!r} failed: {exc}") from None
    finite = all(np.isfinite(o).all() for o in outs if np.asarray(o).dtype.kind == "f")
    return {"checker": "ok", "onnxruntime_cpu": "ran one sample", "outputs_finite": bool(finite)}
