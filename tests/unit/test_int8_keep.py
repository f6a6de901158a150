"""What keep_fp32 does to an INT8 artifact, exactly: ONNX Runtime's quantizer leaves a kept node's weights and
arithmetic in FP32, but it quantizes a tensor once for all its readers, whenever a quantized node reads it or
writes it (a quantized Conv, MatMul, Add... quantizes its output too), so a kept node next to a quantized one
reads that tensor through its Q/DQ pair; the artifact's record says which kept nodes do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from harness.recipes import transform_model
from harness.recipes.int8 import reads_dequantized
from tests.models import const, model, save, vi


def shared_input_model(path: Path) -> Path:
    """x -> fc_a -> h; h read by fc_b and fc_c (both MatMul); y = fc_b + fc_c."""
    rng = np.random.default_rng(5)
    inits = [const(n, rng.standard_normal(s) * 0.3) for n, s in (("wa", (16, 16)), ("wb", (16, 8)), ("wc", (16, 8)))]
    nodes = [helper.make_node("MatMul", ["x", "wa"], ["h"], name="fc_a"),
             helper.make_node("MatMul", ["h", "wb"], ["b"], name="fc_b"),
             helper.make_node("MatMul", ["h", "wc"], ["c"], name="fc_c"),
             helper.make_node("Add", ["b", "c"], ["y"], name="sum")]
    return save(model(nodes, [vi("x", ["batch", 16])], [vi("y", ["batch", 8])], inits), path)


def test_a_kept_node_reads_an_input_it_shares_with_a_quantized_node_dequantized(tmp_path: Path) -> None:
    m = onnx.load(str(shared_input_model(tmp_path / "shared.onnx")))
    batches = [{"x": np.random.default_rng(i).uniform(-1, 1, (8, 16)).astype(np.float32)} for i in range(2)]
    params = {"op_types": ["MatMul"], "preprocess": False}

    one, info = transform_model(m, "int8", {**params, "keep_fp32": ["fc_b"]}, calibration=batches)
    by_name = {n.name: n for n in one.graph.node}
    weights = {i.name for i in one.graph.initializer}
    assert "wb" in by_name["fc_b"].input and "wb" in weights  # its weight stays FP32, read directly
    # fc_c is quantized, so h has a Q/DQ pair, and every reader of h reads its DequantizeLinear: fc_b too
    assert info["keep_fp32"]["reads_dequantized"] == {"fc_b": ["h_DequantizeLinear_Output"]}
    assert "fc_b" in info["nodes"]["quantized"]  # the record counts every node that reads a Q/DQ tensor

    # fc_a is quantized and quantizes its output too: keeping both readers of h still reads h dequantized
    two, info = transform_model(m, "int8", {**params, "keep_fp32": ["fc_b", "fc_c"]}, calibration=batches)
    assert info["keep_fp32"]["reads_dequantized"] == {"fc_b": ["h_DequantizeLinear_Output"],
                                                      "fc_c": ["h_DequantizeLinear_Output"]}
    assert reads_dequantized(two, ["fc_a", "fc_b", "fc_c"]) == info_of(two)
    # no quantized node reads or writes h: it stays FP32
    three, info = transform_model(m, "int8", {**params, "keep_fp32": ["fc_a", "fc_b", "fc_c"]}, calibration=batches)
    assert info["keep_fp32"]["reads_dequantized"] == {} and info.get("no_op")
    assert {n.name: list(n.input) for n in three.graph.node}["fc_b"] == ["h", "wb"]


def info_of(m: onnx.ModelProto) -> dict[str, list[str]]:
    """Every node reading a DequantizeLinear output, found the long way."""
    dq = {n.output[0] for n in m.graph.node if n.op_type == "DequantizeLinear"}
    return {n.name: [i for i in n.input if i in dq] for n in m.graph.node
            if n.name in ("fc_a", "fc_b", "fc_c") and any(i in dq for i in n.input)}


def test_the_doctors_report_says_which_kept_nodes_still_read_a_quantized_input() -> None:
    from harness.doctor.report import doctor_section, terminal_lines
    from harness.rows import DoctorRow

    row = DoctorRow(id="m-ort_cpu-int8-p", model="m", backend="ort_cpu", recipe="int8", profile="p",
                    recipe_kind="int8", status="fixed", keep_fp32=["fc_b", "fc_c"], candidates=3,
                    kept_read_dequantized={"fc_b": ["h_DequantizeLinear_Output"]})
    report = "\n".join(doctor_section([row]))
    assert ("FP32 weights and arithmetic; 1 of them still read an input through a Q/DQ pair" in report
            and "fc_b (`h_DequantizeLinear_Output`)" in report)
    assert "  1 kept node(s) still read an input quantized for other readers: fc_b" in terminal_lines([row])
    row.kept_read_dequantized = {}
    assert "read their inputs unquantized" in "\n".join(doctor_section([row]))
