"""Which parameters each recipe kind accepts, with their defaults and checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OPTIONS: dict[str, dict[str, Any]] = {
    "fp32": {},
    # block_ops: op types kept in FP32 (Casts around them); keep_fp32: nodes kept in FP32, by name or glob
    # ("encoder/layer.0/*"; an unnamed node by its first output's name); fold: fold BatchNorm and constants
    # first; opset: upgrade the model first (bf16 Conv / pooling need opset 22); 0 keeps the model's opset
    "fp16": {"block_ops": [], "keep_fp32": [], "fold": True, "opset": 0},
    "bf16": {"block_ops": [], "keep_fp32": [], "fold": True, "opset": 22},
    # calibration: auto (real samples when the model has them) | real | generated (from the registry's
    # ranges); calibration_size: 0 means the model's calibration.size; op_types: [] quantizes every op type
    # ONNX Runtime can, e.g. ["Conv", "MatMul", "Gemm"] restricts it; reduce_range: 7-bit weights ([-64, 64]),
    # so that x86 int8 kernels without VNNI (u8 x s8 pairs summed in 16 bits) cannot saturate; keep_fp32:
    # nodes left unquantized, by name or glob
    "int8": {"method": "minmax", "per_channel": False, "op_types": [], "keep_fp32": [], "calibration": "auto",
             "calibration_size": 0, "percentile": 99.999, "preprocess": True, "reduce_range": False},
    # TensorRT 10's weak typing, opt-in: the FP32 model built with the FP16 (and INT8 + calibrator) builder
    # flags. TensorRT 11 and TensorRT-RTX refuse it with the reason; other backends skip it.
    "trt_legacy": {"precision": "fp16", "calibrator": "entropy", "calibration": "auto", "calibration_size": 0},
}


def check_options(kind: str, given: Mapping[str, Any]) -> dict[str, Any]:
    allowed = OPTIONS[kind]
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for a {kind} recipe; "
                         f"allowed: {', '.join(sorted(allowed)) or 'none'}")
    params = dict(allowed)
    params.update(given)
    for key, default in allowed.items():
        value = params[key]
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}")
        if isinstance(default, list) and not (isinstance(value, list) and all(isinstance(v, str) and v for v in value)):
            what = "node names or globs" if key == "keep_fp32" else "op type names"
            raise ValueError(f"{key} must be a list of {what}, got {value!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool) and (
                not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{key} must be a non-negative number, got {value!r}")
    if kind == "trt_legacy":
        if params["precision"] not in ("fp16", "int8"):
            raise ValueError(f"precision must be fp16 or int8, got {params['precision']!r}")
        if params["calibrator"] not in ("entropy", "minmax"):
            raise ValueError(f"calibrator must be entropy or minmax, got {params['calibrator']!r}")
        if params["calibration"] not in ("auto", "real", "generated"):
            raise ValueError(f"calibration must be auto, real or generated, got {params['calibration']!r}")
    if kind == "int8":
        if params["method"] not in ("minmax", "entropy", "percentile"):
            raise ValueError(f"method must be minmax, entropy or percentile, got {params['method']!r}")
        if params["calibration"] not in ("auto", "real", "generated"):
            raise ValueError(f"calibration must be auto, real or generated, got {params['calibration']!r}")
        if not 50.0 < float(params["percentile"]) <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {params['percentile']!r}")
        if params["method"] != "percentile":
            params.pop("percentile")  # irrelevant: keep it out of keys and rows
    return params
