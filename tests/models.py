"""Small constructed models, each named after a trait of real trained models that once kept the harness from a
true verdict (issue: real trained models). Built with ONNX's helper API; IR version 8 so that any supported
ONNX Runtime loads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.helpers import save

F32, I64, I32 = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32


def vi(name: str, shape: list | None, dtype: int = F32) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def const(name: str, value: np.ndarray | float | int, dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def model(nodes: list, inputs: list, outputs: list, inits: list, *, opset: int = 17, ir: int = 8,
          name: str = "m") -> onnx.ModelProto:
    m = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, inits),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir
    return m


def _w(rng: np.random.Generator, name: str, shape: tuple[int, ...], scale: float) -> onnx.TensorProto:
    return const(name, rng.standard_normal(shape) * scale)


# ------------------------------------------------------------------------ 1: inputs without a batch axis


def recurrent_state_model(path: Path, *, steps: int = 8, hidden: int = 16, features: int = 8, gain: float = 1.5,
                          seed: int = 0) -> Path:
    """A speech-activity-like recurrence: x [batch, steps, features], a scalar sample rate sr [] (int64; the
    recurrence is scaled by sr / 16000) and a recurrent state [2, batch, hidden] whose batch is axis 1; outputs
    prob [batch, 1] and the next state [2, batch, hidden]."""
    rng = np.random.default_rng(seed)
    inits = [_w(rng, "wx", (features, hidden), 0.5), _w(rng, "b", (hidden,), 0.1),
             _w(rng, "wo", (hidden, 1), 2 / np.sqrt(hidden)),
             const("wh", rng.standard_normal((hidden, hidden)) * gain / np.sqrt(hidden)),
             const("k16", 16000.0), const("zero", 0, np.int64), const("one", 1, np.int64),
             const("axis0", [0], np.int64)]
    nodes = [helper.make_node("Cast", ["sr"], ["srf"], to=F32, name="rate_cast"),
             helper.make_node("Div", ["srf", "k16"], ["rate"], name="rate"),
             helper.make_node("Gather", ["state", "zero"], ["h0"], axis=0, name="h_in"),
             helper.make_node("Gather", ["state", "one"], ["c0"], axis=0, name="c_in")]
    h, c = "h0", "c0"
    for t in range(steps):
        inits.append(const(f"t{t}", t, np.int64))
        nodes += [helper.make_node("Gather", ["x", f"t{t}"], [f"x{t}"], axis=1, name=f"step{t}_take"),
                  helper.make_node("MatMul", [f"x{t}", "wx"], [f"a{t}"], name=f"step{t}_in"),
                  helper.make_node("MatMul", [h, "wh"], [f"r{t}"], name=f"step{t}_rec"),
                  helper.make_node("Add", [f"r{t}", "b"], [f"rb{t}"], name=f"step{t}_bias"),
                  helper.make_node("Add", [f"a{t}", f"rb{t}"], [f"s{t}"], name=f"step{t}_sum"),
                  helper.make_node("Mul", [f"s{t}", "rate"], [f"sr{t}"], name=f"step{t}_rate"),
                  helper.make_node("Tanh", [f"sr{t}"], [f"h{t + 1}"], name=f"step{t}_tanh"),
                  helper.make_node("Add", [c, f"h{t + 1}"], [f"c{t + 1}"], name=f"step{t}_acc")]
        h, c = f"h{t + 1}", f"c{t + 1}"
    nodes += [helper.make_node("Unsqueeze", [h, "axis0"], ["hu"], name="h_out"),
              helper.make_node("Unsqueeze", [c, "axis0"], ["cu"], name="c_out"),
              helper.make_node("Concat", ["hu", "cu"], ["state_out"], axis=0, name="state_out"),
              helper.make_node("MatMul", [h, "wo"], ["logit"], name="head"),
              helper.make_node("Sigmoid", ["logit"], ["prob"], name="prob")]
    m = model(nodes, [vi("x", ["batch", steps, features]), vi("sr", [], I64), vi("state", [2, "batch", hidden])],
              [vi("prob", ["batch", 1]), vi("state_out", [2, "batch", hidden])], inits, name="recurrent")
    return save(m, path)


# ---------------------------------------------------------------------------- 2, 3: If subgraphs, no-ops


def _branches(rng: np.random.Generator, source: str, width: int, out: int) -> tuple[onnx.GraphProto, onnx.GraphProto]:
    then_g = helper.make_graph(
        [helper.make_node("MatMul", [source, "w1"], ["t1"], name="then_fc1"),
         helper.make_node("Relu", ["t1"], ["t2"], name="then_relu"),
         helper.make_node("MatMul", ["t2", "w2"], ["t_out"], name="then_fc2")],
        "then", [], [vi("t_out", ["batch", out])], [_w(rng, "w1", (width, 32), 0.3), _w(rng, "w2", (32, out), 0.3)])
    else_g = helper.make_graph(
        [helper.make_node("MatMul", [source, "w3"], ["e1"], name="else_fc1"),
         helper.make_node("Tanh", ["e1"], ["e2"], name="else_tanh"),
         helper.make_node("MatMul", ["e2", "w4"], ["e_out"], name="else_fc2")],
        "else", [], [vi("e_out", ["batch", out])], [_w(rng, "w3", (width, 32), 0.3), _w(rng, "w4", (32, out), 0.3)])
    return then_g, else_g


def if_subgraph_model(path: Path, *, seed: int = 1) -> Path:
    """x [batch, 16] -> fc0 -> If (sr == 16000: a Relu branch, else a Tanh branch) -> head -> y [batch, 4]; sr is
    a shared scalar. Nodes outside and inside the subgraphs."""
    rng = np.random.default_rng(seed)
    then_g, else_g = _branches(rng, "h", 32, 16)
    nodes = [helper.make_node("Equal", ["sr", "k16"], ["cond"], name="is_16k"),
             helper.make_node("MatMul", ["x", "w0"], ["h0"], name="fc0"),
             helper.make_node("Relu", ["h0"], ["h"], name="relu0"),
             helper.make_node("If", ["cond"], ["b"], then_branch=then_g, else_branch=else_g, name="branch"),
             helper.make_node("MatMul", ["b", "w5"], ["y"], name="head")]
    m = model(nodes, [vi("x", ["batch", 16]), vi("sr", [], I64)], [vi("y", ["batch", 4])],
              [const("k16", 16000, np.int64), _w(rng, "w0", (16, 32), 0.3), _w(rng, "w5", (16, 4), 0.3)])
    return save(m, path)


def whole_network_in_if_model(path: Path, *, seed: int = 2) -> Path:
    """The whole network inside an If's branches (read from the outer x): nothing outside but the condition."""
    rng = np.random.default_rng(seed)
    then_g, else_g = _branches(rng, "x", 16, 4)
    nodes = [helper.make_node("Equal", ["sr", "k16"], ["cond"], name="is_16k"),
             helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g, name="branch")]
    m = model(nodes, [vi("x", ["batch", 16]), vi("sr", [], I64)], [vi("y", ["batch", 4])],
              [const("k16", 16000, np.int64)])
    return save(m, path)


def gemm_row_bias_model(path: Path, *, seed: int = 3) -> Path:
    """A byte classifier as Keras exports it: int32 ids [batch, 8] cast to float, Gemms whose biases are rows
    [1, N] rather than vectors [N] (per-channel int8 once died on them in ONNX Runtime's quantizer)."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Cast", ["ids"], ["f"], to=F32, name="to_float"),
             helper.make_node("Mul", ["f", "inv"], ["fs"], name="scale"),
             helper.make_node("Gemm", ["fs", "w1", "b1"], ["h"], name="dense1"),
             helper.make_node("Relu", ["h"], ["hr"], name="relu1"),
             helper.make_node("Gemm", ["hr", "w2", "b2"], ["logits"], name="dense2")]
    inits = [const("inv", 1 / 256), _w(rng, "w1", (8, 32), 0.5), _w(rng, "b1", (1, 32), 0.1),
             _w(rng, "w2", (32, 5), 0.5), _w(rng, "b2", (1, 5), 0.1)]
    return save(model(nodes, [vi("ids", ["batch", 8], I32)], [vi("logits", ["batch", 5])], inits), path)


def outlier_weight_classifier_model(path: Path, *, seed: int = 4) -> Path:
    """x [batch, 16] -> MatMul -> logits [batch, 10], one weight 4000x the others: per-tensor int8 rounds every
    other weight to zero, and the classifier's decisions with them."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((16, 10)).astype(np.float32) * 0.5
    w[0, 0] = 2000.0
    nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"], name="fc")]
    return save(model(nodes, [vi("x", ["batch", 16])], [vi("logits", ["batch", 10])], [const("w", w)]), path)


# --------------------------------------------------------------------- 5: output shapes declared wrongly


def wrong_declared_shape_model(path: Path, *, classes: int = 6, seed: int = 5) -> Path:
    """An OCR-like recognizer: x [batch, 8, width] -> per-step class probabilities, time-major [width, batch,
    classes], while the file declares the output [1, "L"]."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[2, 0, 1], name="time_major"),
             helper.make_node("MatMul", ["xt", "w"], ["logits"], name="classify"),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=2, name="softmax")]
    m = model(nodes, [vi("x", ["batch", 8, "width"])], [vi("probs", [1, "L"])], [_w(rng, "w", (8, classes), 2.0)])
    return save(m, path)


def declared_one_batch_model(path: Path, *, seed: int = 6) -> Path:
    """x [batch, 5] -> y [batch, 7], declared [1, 5]."""
    rng = np.random.default_rng(seed)
    m = model([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], [vi("x", ["batch", 5])],
              [vi("y", [1, 5])], [_w(rng, "w", (5, 7), 1.0)])
    return save(m, path)


# ---------------------------------------------------------------------------------------- 6: task metrics


def probability_map_model(path: Path, *, seed: int = 7, noise: float = 0.0, scale: float = 1.0) -> Path:
    """A text-detector-like probability map: image [batch, 1, 32, 32] -> Conv, Relu, Conv, Sigmoid -> prob
    [batch, 1, 32, 32]. ``noise`` perturbs the last conv (a degraded detector); ``scale`` multiplies the map (0.45:
    a dead detector, nothing above 0.5, with the very cosine of the unscaled one)."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((4, 1, 3, 3)).astype(np.float32) * 0.6
    w2 = rng.standard_normal((1, 4, 3, 3)).astype(np.float32) * 0.6
    w2 = w2 + np.random.default_rng(seed + 100).standard_normal(w2.shape).astype(np.float32) * noise
    nodes = [helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Sigmoid", ["c2"], ["p"], name="sigmoid"),
             helper.make_node("Mul", ["p", "k"], ["prob"], name="scale")]
    inits = [const("w1", w1), const("b1", np.zeros(4)), const("w2", w2), const("b2", [-0.3]), const("k", scale)]
    m = model(nodes, [vi("image", ["batch", 1, 32, 32])], [vi("prob", ["batch", 1, 32, 32])], inits)
    return save(m, path)


def box_regression_model(path: Path, *, anchors: int = 12, seed: int = 8, width_shift: float = 0.0) -> Path:
    """A detector head: features [batch, 32] -> boxes [batch, anchors, 6]: centre x, y in [0, 640] pixels, width
    and height around 60 pixels, a score and a class. ``width_shift`` adds pixels to every box's width."""
    rng = np.random.default_rng(seed)
    scale = np.array([200, 200, 20, 20, 1, 1], np.float32)
    offset = np.array([320, 320, 60 + width_shift, 60, 0, 0], np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["flat"], name="regress"),
             helper.make_node("Reshape", ["flat", "shape"], ["raw"], name="to_boxes"),
             helper.make_node("Tanh", ["raw"], ["t"], name="squash"),
             helper.make_node("Mul", ["t", "scale"], ["ts"], name="to_pixels"),
             helper.make_node("Add", ["ts", "offset"], ["boxes"], name="centre")]
    inits = [_w(rng, "w", (32, anchors * 6), 0.3), const("shape", [0, anchors, 6], np.int64), const("scale", scale),
             const("offset", offset)]
    m = model(nodes, [vi("x", ["batch", 32])], [vi("boxes", ["batch", anchors, 6])], inits)
    return save(m, path)


def ctc_sequence_model(path: Path, *, steps: int = 24, classes: int = 8, seed: int = 9, noise: float = 0.0) -> Path:
    """A CTC recognizer head: x [batch, steps, 16] -> per-step probabilities [batch, steps, classes] (class 0 is
    the blank). ``noise`` perturbs the classifier weights (a recognizer that misreads a few steps)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((16, classes)).astype(np.float32) * 1.5
    w = w + np.random.default_rng(seed + 100).standard_normal(w.shape).astype(np.float32) * noise
    nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"], name="classify"),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=2, name="softmax")]
    m = model(nodes, [vi("x", ["batch", steps, 16])], [vi("probs", ["batch", steps, classes])], [const("w", w)])
    return save(m, path)


def labelled_classifier_model(path: Path, *, seed: int = 10, noise: float = 0.0) -> Path:
    """x [batch, 16] -> logits [batch, 10]; ``noise`` perturbs the weights."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((16, 10)).astype(np.float32)
    w = w + np.random.default_rng(seed + 100).standard_normal(w.shape).astype(np.float32) * noise
    m = model([helper.make_node("MatMul", ["x", "w"], ["logits"], name="fc")], [vi("x", ["batch", 16])],
              [vi("logits", ["batch", 10])], [const("w", w)])
    return save(m, path)


# ------------------------------------------------------------------------------------------- 8: smaller


def embedding_lookup_model(path: Path, *, rows: int = 100, seed: int = 11) -> Path:
    """ids [batch, 4] (int64) -> Gather from a table of ``rows`` rows -> mean -> fc -> y [batch, 2]."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
             helper.make_node("ReduceMean", ["e"], ["m"], axes=[1], keepdims=0, name="pool"),
             helper.make_node("MatMul", ["m", "w"], ["y"], name="fc")]
    inits = [_w(rng, "table", (rows, 8), 1.0), _w(rng, "w", (8, 2), 1.0)]
    return save(model(nodes, [vi("ids", ["batch", 4], I64)], [vi("y", ["batch", 2])], inits), path)


def future_ir_version_model(path: Path, *, ir: int = 99) -> Path:
    """A two-node model stamped with an IR version no ONNX Runtime reads (what new onnx helpers write by default
    can run ahead of the installed ONNX Runtime)."""
    m = model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x", ["batch", 4])], [vi("y", ["batch", 4])],
              [], ir=ir)
    onnx.save(m, str(path))  # the checker refuses an IR version newer than onnx's own: saved as is
    return path


# ------------------------------------------------------------------------- the precision doctor's known answers


def fp16_range_model(path: Path, *, seed: int = 12) -> Path:
    """x [batch, 16] -> fc1 (MatMul) -> relu -> to_units (Div by 1e5, a unit conversion) -> fc2 -> y [batch, 8].
    Every activation fits FP16 (the quotient is about 1e-3, a normal FP16 number); the divisor does not: FP16
    holds at most 65504, so converted it is clamped and ``to_units`` is 1.53x too large. Kept in FP32 alone
    (its input and output cast), it is right."""
    rng = np.random.default_rng(seed)
    inits = [_w(rng, "w1", (16, 32), 2.0), const("per_unit", 1e5), _w(rng, "w2", (32, 8), 1.0)]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["hr"], name="relu"),
             helper.make_node("Div", ["hr", "per_unit"], ["units"], name="to_units"),
             helper.make_node("MatMul", ["units", "w2"], ["y"], name="fc2")]
    return save(model(nodes, [vi("x", ["batch", 16])], [vi("y", ["batch", 8])], inits), path)


def int8_outlier_model(path: Path, *, seed: int = 13) -> Path:
    """x [batch, 16] -> fc1 -> relu1 -> widen (x [100, 1, 1, ...]: one outlier channel, as in large language
    models' activations) -> fc2 -> relu2 -> fc3 -> bias (+10) -> y [batch, 8]. Per-tensor INT8 on fc2's input
    spends its 255 levels on the outlier and rounds the other 31 channels to a level or two; fc2's weights read
    the outlier channel with a small weight, so in FP32 nothing is wrong. The bias keeps the outputs' norms
    alike, so that the output's own quantization costs every sample alike (and little)."""
    rng = np.random.default_rng(seed)
    w2 = rng.standard_normal((32, 32)) * 0.3
    w2[0] *= 0.003
    scale = np.ones(32)
    scale[0] = 100.0
    inits = [_w(rng, "w1", (16, 32), 0.5), const("w2", w2), const("s", scale), _w(rng, "w3", (32, 8), 0.3),
             const("b", np.full(8, 10.0))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
             helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
             helper.make_node("Mul", ["r1", "s"], ["wide"], name="widen"),
             helper.make_node("MatMul", ["wide", "w2"], ["h2"], name="fc2"),
             helper.make_node("Relu", ["h2"], ["r2"], name="relu2"),
             helper.make_node("MatMul", ["r2", "w3"], ["h3"], name="fc3"),
             helper.make_node("Add", ["h3", "b"], ["y"], name="bias")]
    return save(model(nodes, [vi("x", ["batch", 16])], [vi("y", ["batch", 8])], inits), path)


def long_chain_model(path: Path, *, nodes: int = 400, channels: int = 16, size: int = 64) -> Path:
    """x [batch, channels, size, size] through ``nodes`` elementwise nodes (Mul by 1.001, Add 0.001 in turn):
    a many-node model whose every activation is ``channels * size * size`` floats per sample."""
    inits = [const("k_mul", 1.001), const("k_add", 0.001)]
    chain, prev = [], "x"
    for i in range(nodes):
        op, k = ("Mul", "k_mul") if i % 2 == 0 else ("Add", "k_add")
        out = "y" if i == nodes - 1 else f"t{i}"
        chain.append(helper.make_node(op, [prev, k], [out], name=f"n{i}"))
        prev = out
    shape = ["batch", channels, size, size]
    return save(model(chain, [vi("x", shape)], [vi("y", shape)], inits), path)


# ------------------------------------------------------------------------- 9: deployment conditions (issue 16)


def batch_position_model(path: Path, *, shift: float = 0.5, seed: int = 12) -> Path:
    """x [batch, 8] -> x @ w + shift * (the sample's position in the batch): a model whose output depends on
    where a sample sits in its batch (what a kernel mixing a batch's rows does), identical for every sample at
    batch size 1."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Shape", ["x"], ["shape"], name="shape"),
             helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0, name="batch_size"),
             helper.make_node("Range", ["start", "n", "step"], ["pos"], name="positions"),
             helper.make_node("Cast", ["pos"], ["posf"], to=F32, name="pos_float"),
             helper.make_node("Unsqueeze", ["posf", "axis1"], ["pos2"], name="pos_column"),
             helper.make_node("Mul", ["pos2", "shift"], ["offset"], name="offset"),
             helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"),
             helper.make_node("Add", ["h", "offset"], ["y"], name="add_position")]
    inits = [_w(rng, "w", (8, 4), 0.5), const("zero", 0, np.int64), const("start", 0, np.int64),
             const("step", 1, np.int64), const("axis1", [1], np.int64), const("shift", shift)]
    return save(model(nodes, [vi("x", ["batch", 8])], [vi("y", ["batch", 4])], inits), path)


def sequence_sum_model(path: Path, *, features: int = 4, seed: int = 13) -> Path:
    """x [batch, seq, features] -> sum over the sequence -> fc -> y [batch, features]: the sum grows with the
    sequence, so an INT8 recipe calibrated at the opt length clips it at a longer one (the max shape only)."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("ReduceSum", ["x", "axis1"], ["s"], keepdims=0, name="sum_over_sequence"),
             helper.make_node("MatMul", ["s", "w"], ["y"], name="fc")]
    inits = [_w(rng, "w", (features, features), 0.5), const("axis1", [1], np.int64)]
    return save(model(nodes, [vi("x", ["batch", "seq", features])], [vi("y", ["batch", features])], inits), path)
