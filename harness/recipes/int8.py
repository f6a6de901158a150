"""INT8 as Q/DQ static quantization through ``onnxruntime.quantization``.

The Q/DQ it writes is what TensorRT (strongly typed, 10 and 11), TensorRT-RTX and ONNX Runtime all run:
symmetric int8 activations and weights (TensorRT supports zero-point 0 only), biases left in float,
per-tensor or per-channel weights. Calibration methods: MinMax, Entropy, Percentile.

Q/DQ needs opset 13 (``DequantizeLinear``'s ``axis`` for per-channel weights; below it ONNX Runtime's
optimizer writes invalid models): an older model is upgraded with ONNX's version converter; when that
fails a per-channel recipe is refused with the reason, a per-tensor one goes on at the model's opset.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..errors import RecipeError
from .graph import count_ops, opset_of, upgrade_opset

METHODS = ("minmax", "entropy", "percentile")
ENTROPY_BINS = (2048, 128)  # histogram bins, quantized bins: what TensorRT's entropy calibrator uses


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantizer prints progress and logs advice on the root logger: keep it out of test output."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


class _Reader:
    """The CalibrationDataReader protocol over an iterator of feeds."""

    def __init__(self, batches: Iterator[dict[str, np.ndarray]]):
        self._it = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - only some calibrators call it
        raise RecipeError("the calibration data can only be read once per quantization")


def quantize(model: onnx.ModelProto, out: Path, batches: Iterator[dict[str, np.ndarray]], *, model_name: str,
             method: str, per_channel: bool, op_types: list[str] | None, percentile: float,
             preprocess: bool, reduce_range: bool = False) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    info: dict[str, Any] = {"method": method, "per_channel": per_channel, "op_types": op_types or "all",
                            "weight_bits": 7 if reduce_range else 8}
    opset = opset_of(model)
    info["opset"] = opset
    if opset < 13:
        # Q/DQ belongs at opset >= 13: per-channel needs DequantizeLinear's axis, and ONNX Runtime's own
        # optimizer writes axis attributes into lower-opset Q/DQ models, making them invalid
        try:
            model = upgrade_opset(model, 13)
            info["opset_upgraded_to"] = 13
        except Exception as exc:  # the converter raises many kinds of errors
            if per_channel:
                raise RecipeError(
                    f"model {model_name!r} has opset {opset}; per-channel Q/DQ needs opset 13 (DequantizeLinear's "
                    f"axis) and upgrading it failed: {exc}. Upgrade the model, or use a per-tensor int8 recipe."
                ) from None
            info["opset_upgrade_failed"] = str(exc)[:200]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "source.onnx"
        onnx.save(model, str(src))
        if preprocess:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            pre = Path(tmp) / "pre.onnx"
            try:
                # ONNX shape inference and ORT's basic optimizations (BatchNorm folded into Conv); the
                # symbolic pass is skipped so that the artifact does not depend on whether sympy is installed
                with _quiet():
                    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
                src = pre
                info["preprocessed"] = True
            except Exception as exc:  # symbolic shape inference fails on some models: quantize without it
                info["preprocessed"] = False
                info["preprocess_error"] = str(exc).splitlines()[0][:200]
        calib = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
        extra: dict[str, Any] = {
            "ActivationSymmetric": True,  # TensorRT: zero-point 0
            "WeightSymmetric": True,
            "QuantizeBias": False,  # biases stay in float: TensorRT fuses them itself
        }
        if method == "percentile":
            extra["CalibPercentile"] = percentile
        ranges = None
        if method == "entropy":
            # quantize_static's entropy calibrator uses 128 histogram bins for 128 quantized bins, which
            # leaves its KL search a single candidate (the full range): entropy would equal MinMax. Run the
            # calibrator with TensorRT's settings (2048 bins) and hand its ranges over as a calibration cache.
            ranges = Path(tmp) / "ranges.json"
            _entropy_ranges(src, batches, op_types, ranges, Path(tmp))
            info["entropy_bins"] = ENTROPY_BINS
        try:
            with _quiet():
                quantize_static(str(src), str(out), None if ranges else _Reader(batches), quant_format=QuantFormat.QDQ,
                                op_types_to_quantize=op_types or None, per_channel=per_channel,
                                reduce_range=reduce_range,
                                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                calibrate_method=calib, extra_options=extra,
                                **({"calibration_cache_path": str(ranges)} if ranges else {}))
        except RecipeError:
            raise
        except Exception as exc:  # ORT's quantizer raises plain exceptions with useful text
            raise RecipeError(f"INT8 quantization of {model_name!r} failed: {str(exc).strip()[:500]}") from None
    quantized = onnx.load(str(out))
    folded = fold_scalar_quantized_constants(quantized)
    if folded:
        onnx.save(quantized, str(out))
        info["scalar_constants_kept_float"] = folded
    info.update(describe_qdq(quantized))
    if not info["nodes_quantized"]:
        info["warning"] = (f"the int8 recipe quantized nothing in {model_name!r}: no node of the op types "
                           f"{op_types or 'ORT quantizes'} has Q/DQ inputs; the artifact runs in FP32")
    return info


def _entropy_ranges(model: Path, batches: Iterator[dict[str, np.ndarray]], op_types: list[str] | None, out: Path,
                    tmp: Path) -> None:
    import inspect

    from onnxruntime.quantization import CalibrationMethod, quantize_static
    from onnxruntime.quantization.calibrate import TensorsData, create_calibrator, save_tensors_data

    from .entropy import compute_entropy

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        import onnxruntime

        raise RecipeError(f"entropy calibration needs onnxruntime >= 1.31 (quantize_static's calibration_cache_path); "
                          f"this is {onnxruntime.__version__}: use the minmax or percentile method")
    with _quiet():
        calibrator = create_calibrator(model, op_types or [], augmented_model_path=str(tmp / "augmented.onnx"),
                                       calibrate_method=CalibrationMethod.Entropy,
                                       extra_options={"num_bins": ENTROPY_BINS[0], "num_quantized_bins": ENTROPY_BINS[1],
                                                      "symmetric": True})
        calibrator.collect_data(_Reader(batches))
        # ONNX Runtime's threshold search is the same, looped in Python: minutes on a real model
        thresholds = compute_entropy(calibrator.collector.histogram_dict, ENTROPY_BINS[1])
        save_tensors_data(TensorsData(CalibrationMethod.Entropy, thresholds), out)


def fold_scalar_quantized_constants(model: onnx.ModelProto) -> int:
    """Replace DequantizeLinear of a one-element quantized constant with the float it yields.

    ONNX Runtime quantizes every input of the ops it handles, epsilons of decomposed LayerNorms included;
    TensorRT refuses such quantized scalar constants ("Quantized constant ... is only allowed before DQ"),
    and an int8 epsilon saves nothing. The float written is exactly what the DequantizeLinear computes.
    """
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    keep, folded = [], 0
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and node.input[1] in inits:
            q = numpy_helper.to_array(inits[node.input[0]])
            if q.size == 1:
                scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
                zp = (numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
                      if len(node.input) > 2 and node.input[2] in inits else np.float32(0))
                value = ((q.astype(np.float32) - zp) * scale).astype(np.float32).reshape(q.shape)
                graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
                folded += 1
                continue
        keep.append(node)
    if folded:
        del graph.node[:]
        graph.node.extend(keep)
        used = {i for n in graph.node for i in n.input}
        kept = [i for i in graph.initializer if i.name in used or i.name in {o.name for o in graph.output}]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return folded


def describe_qdq(model: onnx.ModelProto) -> dict[str, Any]:
    """Which nodes read dequantized inputs (quantized), which float nodes do not (left in FP32)."""
    graph = model.graph
    dq_outputs = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    qdq_ops = ("QuantizeLinear", "DequantizeLinear")
    quantized = [n for n in graph.node if n.op_type not in qdq_ops and any(i in dq_outputs for i in n.input)]
    others = [n for n in graph.node if n.op_type not in qdq_ops and n not in quantized]
    return {
        "qdq_pairs": sum(1 for n in graph.node if n.op_type == "QuantizeLinear"),
        "nodes_quantized": count_ops(quantized),
        "nodes_left_fp32": count_ops(others),
    }
