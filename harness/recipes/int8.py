"""INT8 as Q/DQ static quantization through ``onnxruntime.quantization``.

The Q/DQ it writes is what TensorRT (strongly typed, 10 and 11), TensorRT-RTX and ONNX Runtime all run:
symmetric int8 activations and weights (TensorRT supports zero-point 0 only), biases left in float,
per-tensor or per-channel weights. Calibration methods: MinMax, Entropy, Percentile.

Q/DQ needs opset 13 (``DequantizeLinear``'s ``axis`` for per-channel weights; below it ONNX Runtime's
optimizer writes invalid models): an older model is upgraded with ONNX's version converter; when that
fails a per-channel recipe is refused with the reason, a per-tensor one goes on at the model's opset.

Nodes inside ``If`` / ``Loop`` / ``Scan`` subgraphs stay in FP32 (the calibrator sees only the main graph);
the artifact stays valid around them. A recipe with nothing to quantize writes the model itself and says so
(``no_op``); every failure of the quantizer becomes a :class:`RecipeError` naming the step, the node when
known, and what to try.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..errors import RecipeError
from .graph import (
    count_ops,
    match_nodes,
    node_graphs,
    node_label,
    opset_of,
    topological_sort,
    upgrade_opset,
    walk_nodes,
)

METHODS = ("minmax", "entropy", "percentile")


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


# what to try, by the step that failed
_TRY = {
    "calibration": "another method (method = \"minmax\" needs no histograms), op_types to calibrate fewer ops, or "
                   "keep_fp32 for the node at fault",
    "quantization": "op_types to restrict what is quantized (e.g. [\"Conv\", \"MatMul\"]), keep_fp32 for the node "
                    "at fault, per_channel = false, or another method",
    "post-processing": "keep_fp32 for the node at fault, op_types, or preprocess = false",
}


@contextlib.contextmanager
def step(name: str, model_name: str, recipe_name: str) -> Iterator[None]:
    """Any failure inside becomes a RecipeError naming the model, the recipe, the step, the node or tensor at
    fault when the quantizer's frames reveal it, and what to try."""
    try:
        yield
    except RecipeError:
        raise
    except Exception as exc:  # the quantizer raises anything from ValueError to numpy's truth-value errors
        culprit = _culprit(exc.__traceback__)
        raise RecipeError(
            f"recipe {recipe_name!r} on model {model_name!r} failed at {name}{culprit}: {type(exc).__name__}: "
            f"{str(exc).strip()[:400]}. Try {_TRY.get(name, 'another recipe')}") from None


def _culprit(tb: Any) -> str:
    """The innermost ONNX node (a frame's ``node`` or ``self.node``) and tensor name a traceback went through."""
    node, tensor = None, None
    while tb is not None:
        local = tb.tb_frame.f_locals
        candidate = local.get("node")
        if candidate is None and "self" in local:
            candidate = getattr(local["self"], "node", None)
        if isinstance(candidate, onnx.NodeProto):
            node = candidate
        for key in ("tensor_name", "weight_name", "bias_name"):
            if isinstance(local.get(key), str):
                tensor = local[key]
        tb = tb.tb_next
    parts = []
    if node is not None:
        parts.append(f"node {node_label(node)!r} ({node.op_type})")
    if tensor is not None:
        parts.append(f"tensor {tensor!r}")
    return f", at {' and '.join(parts)}" if parts else ""


def quantizable_types(op_types: list[str] | None) -> set[str]:
    """The op types ``quantize_static`` puts Q/DQ around: those asked for, else every one it knows."""
    if op_types:
        return set(op_types)
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return set(QDQRegistry) | set(QLinearOpsRegistry)


def quantize(model: onnx.ModelProto, out: Path, batches: Iterable[dict[str, np.ndarray]], *, model_name: str,
             method: str, per_channel: bool, op_types: list[str] | None, percentile: float,
             preprocess: bool, reduce_range: bool = False, keep_fp32: list[str] | None = None,
             recipe_name: str = "int8") -> dict[str, Any]:
    """Quantize ``model`` into ``out``; returns what was done (``no_op`` with the reason when nothing could be
    quantized: the artifact is then the model itself). Nodes inside If / Loop / Scan subgraphs stay FP32:
    ONNX Runtime's calibrator sees only the main graph's tensors."""
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
    feeds = list(batches)  # histogram methods read them twice
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
        work = onnx.load(str(src))
        excluded = _excluded(work, model, keep_fp32 or [], bool(info.get("preprocessed")))
        if excluded:
            info["keep_fp32"] = {"patterns": list(keep_fp32 or []), "nodes": excluded}
        wanted = quantizable_types(op_types)
        candidates = [n for n in work.graph.node if n.op_type in wanted and node_label(n) not in excluded]
        inside = sum(1 for n in work.graph.node for g in node_graphs(n) for _ in walk_nodes(g))
        if inside:
            info["subgraph_nodes_left_fp32"] = inside
        if not candidates:
            onnx.save(model, str(out))
            info.update(describe_qdq(model))
            if excluded:
                info["keep_fp32"]["reads_dequantized"] = {}
            info["no_op"] = info["warning"] = _nothing_quantized(model_name, op_types, inside, bool(excluded))
            return info
        calib = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
        extra: dict[str, Any] = {
            "ActivationSymmetric": True,  # TensorRT: zero-point 0
            "WeightSymmetric": True,
            "QuantizeBias": False,  # biases stay in float: TensorRT fuses them itself
            # which makes the int32-bias weight-scale adjustment pointless; it fails on 2-D Gemm biases [1, N]
            "QDQDisableWeightAdjustForInt32Bias": True,
        }
        if method == "percentile":
            extra["CalibPercentile"] = percentile
        # the tensors' ranges depend on the model, the samples, the method and the op types, not on keep_fp32
        # or the weights' options: kept for this process, so that recipe variants (the precision doctor's
        # search) calibrate once. quantize_static computes and writes them when the file is missing.
        ranges = calibration_ranges_path(src, feeds, op_types, method, percentile)
        if method in ("entropy", "percentile") and not ranges.exists():
            # histograms streamed batch by batch (ONNX Runtime holds every batch of every tensor in memory);
            # entropy with TensorRT's 2048 bins (quantize_static's 128 leave its KL search one candidate)
            from .calibration import histogram_ranges

            with step("calibration", model_name, recipe_name), _quiet():
                histogram_ranges(src, feeds, op_types, method, ranges, Path(tmp), percentile=percentile)
        if method == "entropy":
            from .calibration import ENTROPY_BINS

            info["entropy_bins"] = ENTROPY_BINS
        # an ONNX Runtime whose quantize_static takes no calibration cache calibrates MinMax itself every time
        cached = {"calibration_cache_path": str(ranges)} if ranges.exists() or _takes_cache(quantize_static) else {}
        with step("quantization", model_name, recipe_name), _quiet():
            quantize_static(str(src), str(out), _Reader(iter(feeds)), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=op_types or None, per_channel=per_channel,
                            reduce_range=reduce_range, nodes_to_exclude=excluded,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=calib, extra_options=extra, **cached)
    with step("post-processing", model_name, recipe_name):
        quantized = onnx.load(str(out))
        folded = fold_scalar_quantized_constants(quantized)
        if folded:
            info["scalar_constants_kept_float"] = folded
        # ONNX Runtime orders the main graph ignoring what subgraphs read from it: the checker then refuses the
        # artifact ("Nodes in a graph must be topologically sorted")
        if inside:
            topological_sort(quantized.graph)
        if inside or folded:
            onnx.save(quantized, str(out))
    info.update(describe_qdq(quantized))
    if excluded:
        # what keep_fp32 does in ONNX Runtime's quantizer: weights and arithmetic stay FP32, but a tensor is
        # quantized once for all its readers, so a kept node sharing an input with a quantized node reads it
        # through the same Q/DQ pair
        info["keep_fp32"]["reads_dequantized"] = reads_dequantized(quantized, excluded)
    if not info["nodes_quantized"]:
        info["no_op"] = info["warning"] = _nothing_quantized(model_name, op_types, inside, bool(excluded))
    return info


_RANGES: list[Path] = []  # this process's folder of calibration ranges, made on first use


def calibration_ranges_path(model: Path, batches: list[dict[str, np.ndarray]], op_types: list[str] | None,
                            method: str, percentile: float) -> Path:
    """Where this process keeps the calibration ranges of ``model`` (as it is quantized, after preprocessing)
    on ``batches`` with ``method``: a file named by a hash of all of them, in a folder removed at exit."""
    if not _RANGES:
        import atexit
        import shutil

        _RANGES.append(Path(tempfile.mkdtemp(prefix="harness-calibration-")))
        atexit.register(shutil.rmtree, _RANGES[0], True)
    h = hashlib.sha256(model.read_bytes())
    for feeds in batches:
        for name in sorted(feeds):
            arr = np.ascontiguousarray(feeds[name])
            h.update(f"{name}:{arr.dtype}:{arr.shape}".encode())
            h.update(arr.tobytes())
    h.update(repr((method, sorted(op_types or []), percentile if method == "percentile" else None)).encode())
    return _RANGES[0] / f"{h.hexdigest()}.json"


def _takes_cache(quantize_static: Any) -> bool:
    import inspect

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def _excluded(work: onnx.ModelProto, source: onnx.ModelProto, patterns: list[str], preprocessed: bool) -> list[str]:
    """Node names matching keep_fp32 in the model as it is quantized (preprocessing may fuse or rename nodes)."""
    if not patterns:
        return []
    try:
        found = match_nodes(work.graph, patterns, "keep_fp32")
    except RecipeError:
        if preprocessed:
            match_nodes(source.graph, patterns, "keep_fp32")  # a typo is refused as such
            raise RecipeError(f"keep_fp32 {patterns} names nodes of the source model that ONNX Runtime's preprocessing "
                              "fused or renamed; give the recipe preprocess = false, or name the fused nodes") from None
        raise
    return sorted({n for names in found.values() for n in names})


def _nothing_quantized(model_name: str, op_types: list[str] | None, inside: int, excluded: bool) -> str:
    why = [f"no node of the op types {op_types or 'ONNX Runtime quantizes'} outside subgraphs"
           + (" that keep_fp32 leaves" if excluded else "")]
    if inside:
        why.append(f"{inside} nodes are inside If / Loop / Scan subgraphs, which int8 recipes leave in FP32")
    return f"the int8 recipe quantized nothing in {model_name!r}: {'; '.join(why)}; the artifact runs in FP32"


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


def reads_dequantized(model: onnx.ModelProto, nodes: list[str]) -> dict[str, list[str]]:
    """Of the main graph's ``nodes`` (by name), those that read a DequantizeLinear's output, with those inputs.
    For a node keep_fp32 excludes from quantization: an input that ONNX Runtime quantized for another reader
    (it rewires every reader of a quantized tensor to the tensor's one Q/DQ pair), or a weight it shares with
    a quantized node."""
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    wanted = set(nodes)
    return {node_label(n): [i for i in n.input if i in dq] for n in model.graph.node
            if node_label(n) in wanted and any(i in dq for i in n.input)}
