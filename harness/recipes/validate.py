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


def validate(path: Path, spec: ModelSpec, recipe: str = "recipe") -> dict[str, Any]:
    who = f"recipe {recipe!r} on model {spec.name!r}"
    checker = "ok"
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # checker raises ValidationError or InferenceError
        if not _source_fails_shape_inference(spec.path):
            raise RecipeError(f"{who} failed at validation: its artifact fails the ONNX checker: {exc}. Try keep_fp32 "
                              "or op_types to leave the node at fault out of the recipe (the artifact is not cached)"
                              ) from None
        # the source model declares shapes its own graph contradicts (real outputs differ from the declaration):
        # the artifact inherits them, so it is held to what the source passes, the checker without inference
        try:
            onnx.checker.check_model(str(path))
        except Exception as plain:
            raise RecipeError(f"{who} failed at validation: its artifact fails the ONNX checker: {plain}") from None
        checker = "ok (without shape inference, which the source model's declared shapes fail too)"
    import onnxruntime as ort

    from ..data import SampleSet

    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        msg = str(exc)
        if unsupported(msg):
            return {"checker": checker, "onnxruntime_cpu": f"cannot run it: {msg.strip()[:300]}"}
        raise RecipeError(f"{who} failed at validation: ONNX Runtime cannot load its artifact: {msg}") from None
    profile = next(iter(spec.profiles.values()))
    batch = next(SampleSet(spec, profile, size=1).batches(1))
    try:
        outs = sess.run(None, batch.feeds)
    except Exception as exc:
        raise RecipeError(f"{who} failed at validation: one inference of its artifact failed: {exc}") from None
    finite = all(np.isfinite(o).all() for o in outs if np.asarray(o).dtype.kind == "f")
    return {"checker": checker, "onnxruntime_cpu": "ran one sample", "outputs_finite": bool(finite)}


def _source_fails_shape_inference(source: Path) -> bool:
    try:
        onnx.checker.check_model(str(source), full_check=True)
    except Exception:  # the same errors as above, from the model as given
        return True
    return False
