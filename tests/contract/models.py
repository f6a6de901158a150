"""Small ONNX models for the contract suite: each exercises one way TensorRT binds its tensors."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from harness.profiles import Profile
from tests.helpers import save


def _model(path: Path, nodes: list, inputs: list, outputs: list, *, check: bool = True) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    # the helper stamps onnx's newest IR version, which the installed ONNX Runtime (the reference) may not read:
    # the registry refuses such a file
    model.ir_version = 8
    if check:
        return save(model, path)
    onnx.save(model, str(path))
    return path


def relu(path: Path) -> Path:
    """x[N, 8] -> Relu -> y[N, 8]: one dynamic input, one output whose shape follows it."""
    return _model(path, [helper.make_node("Relu", ["x"], ["y"], name="relu")],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])])


def two_inputs(path: Path) -> Path:
    """x[N, 8] * m[N, 1] -> y[N, 8]."""
    return _model(path, [helper.make_node("Mul", ["x", "m"], ["y"], name="mul")],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8]),
                   helper.make_tensor_value_info("m", TensorProto.FLOAT, ["N", 1])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])])


def nonzero(path: Path) -> Path:
    """x[N, 8] -> Relu -> y[N, 8], and NonZero(x) -> idx[2, nz]: a data-dependent output shape."""
    return _model(path, [helper.make_node("Relu", ["x"], ["y"], name="relu"),
                         helper.make_node("NonZero", ["x"], ["idx"], name="nonzero")],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8]),
                   helper.make_tensor_value_info("idx", TensorProto.INT64, [2, "nz"])])


def reshape(path: Path) -> Path:
    """Reshape(x[N, 8], s[2]) -> y[a, b]: ``s`` is a shape tensor, read by TensorRT from host memory."""
    return _model(path, [helper.make_node("Reshape", ["x", "s"], ["y"], name="reshape")],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8]),
                   helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])])


def unsupported(path: Path) -> Path:
    """A node no parser knows."""
    return _model(path, [helper.make_node("Relu", ["x"], ["h"], name="relu_ok"),
                         helper.make_node("FooOp", ["h"], ["y"], name="weird_node")],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], check=False)


DYNAMIC = Profile.from_strings("dyn", min="x:1x8", opt="x:4x8", max="x:16x8")
# a shape tensor's profile entry gives the range of its values, as in trtexec
RESHAPE = Profile.from_strings("p", min="x:1x8,s:1x1", opt="x:4x8,s:8x4", max="x:16x8,s:128x8")
TWO = Profile.from_strings("dyn", min="x:1x8,m:1x1", opt="x:4x8,m:4x1", max="x:16x8,m:16x1")
