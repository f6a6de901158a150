"""Small constructed models and registries for the harness's own tests."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def mlp_model(path: Path, *, seed: int = 0, opset: int = 17, hidden: int = 16) -> Path:
    """x[batch, 8] -> Gemm -> Relu -> Gemm -> y[batch, 4]."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((8, hidden)).astype(np.float32) * 0.5, "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((hidden, 4)).astype(np.float32) * 0.5, "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["hr"], name="relu"),
             helper.make_node("MatMul", ["hr", "w2"], ["y"], name="fc2")]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [w1, w2])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return save(m, path)


def perturb_initializer(src: Path, dst: Path, name_contains: str, index: tuple[int, ...], factor: float) -> Path:
    """Copy an ONNX file with one weight multiplied by ``factor`` (a deliberately broken model)."""
    m = onnx.load(str(src))
    for init in m.graph.initializer:
        if name_contains in init.name:
            arr = numpy_helper.to_array(init).copy()
            arr[index] *= factor
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
            break
    else:
        raise KeyError(name_contains)
    return save(m, dst)


def write_registry(folder: Path, body: str) -> Path:
    path = folder / "models.toml"
    path.write_text(textwrap.dedent(body))
    return path


def copy_fixture_model(name: str, folder: Path) -> Path:
    dst = folder / f"{name}.onnx"
    shutil.copy(FIXTURES / "models" / f"{name}.onnx", dst)
    return dst
