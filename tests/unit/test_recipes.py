"""Recipes on small constructed models that break naive FP16 conversion and default INT8 quantization.

Each model is run in ONNX Runtime before and after the recipe; the recipe's own record is checked too.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.cache import Cache
from harness.errors import RecipeError, RegistryError
from harness.recipes import Recipe, RecipeWarning, all_recipes, apply_recipe, recipe_from_table
from harness.recipes.float16 import convert_float
from harness.registry import load_registry
from tests.helpers import FIXTURES, mlp_model, write_registry


def run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b))


def make(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "t", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def test_batchnorm_variance_beyond_fp16_range_is_folded_before_conversion():
    rng = np.random.default_rng(0)
    c = 4
    w = rng.standard_normal((c, 3, 3, 3)).astype(np.float32) * 30
    var = np.array([2e6, 5e5, 9e4, 7e4], np.float32)  # every channel beyond 65504
    mean = np.array([300, -200, 10, 0], np.float32)
    bn = [numpy_helper.from_array(a, n) for a, n in ((np.ones(c, np.float32), "g"), (np.zeros(c, np.float32), "b"),
                                                     (mean, "m"), (var, "v"))]
    bn2 = [numpy_helper.from_array(a.copy(), n + "2") for a, n in ((np.ones(c, np.float32), "g"),
                                                                   (np.full(c, 0.5, np.float32), "b"), (mean, "m"), (var, "v"))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["bnc"], name="bn_after_conv"),
             helper.make_node("Relu", ["bnc"], ["r"], name="relu"),
             helper.make_node("Mul", ["r", "k"], ["big"], name="scale_up"),
             helper.make_node("BatchNormalization", ["big", "g2", "b2", "m2", "v2"], ["y"], name="bn_alone")]
    model = make(nodes, [vi("x", ["N", 3, 8, 8])], [vi("y", ["N", c, 8, 8])],
                 [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.float32(1000.0), "k"), *bn, *bn2])
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32) * 10
    ref = run(model, {"x": x})[0]

    fp16, info = convert_float(model, "fp16")
    out = run(fp16, {"x": x})[0]
    assert np.isfinite(out).all() and rel(out, ref) < 5e-3
    assert info["batchnorm_folded_into_conv"] == 1 and info["batchnorm_to_mul_add"] == 1
    assert info["weights_clamped"] == 0

    # the same conversion without folding clamps the variances and breaks the model: the fold is what works
    naive, naive_info = convert_float(model, "fp16", fold=False)
    assert naive_info["weights_clamped"] >= 3 and "warning" in naive_info
    assert rel(run(naive, {"x": x})[0], ref) > 0.1


def test_existing_cast_to_float_follows_the_conversion():
    # y = x / float(len(x's last axis)): exporters write Cast(to=FLOAT) on shape arithmetic
    nodes = [helper.make_node("Shape", ["x"], ["s"], start=-1, name="shape"),
             helper.make_node("Cast", ["s"], ["n"], to=TensorProto.FLOAT, name="cast_len"),
             helper.make_node("Div", ["x", "n"], ["y"], name="div")]
    model = make(nodes, [vi("x", ["N", "L"])], [vi("y", ["N", "L"])])
    x = np.random.default_rng(1).standard_normal((3, 7)).astype(np.float32)
    fp16, info = convert_float(model, "fp16")
    cast = next(n for n in fp16.graph.node if n.name == "cast_len")
    assert cast.attribute[0].i == TensorProto.FLOAT16
    assert info["casts_retyped"] == 1
    np.testing.assert_allclose(run(fp16, {"x": x})[0], x / 7, rtol=2e-3)


def test_a_graph_output_also_read_inside_the_graph():
    w = numpy_helper.from_array(np.random.default_rng(2).standard_normal((4, 4)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Relu", ["h"], ["y"], name="relu")]
    model = make(nodes, [vi("x", ["N", 4])], [vi("h", ["N", 4]), vi("y", ["N", 4])], [w])
    x = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
    ref_h, ref_y = run(model, {"x": x})
    fp16, info = convert_float(model, "fp16")
    assert [o.type.tensor_type.elem_type for o in fp16.graph.output] == [TensorProto.FLOAT] * 2
    assert info["outputs_cast_back"] == ["h", "y"]
    h, y = run(fp16, {"x": x})
    assert h.dtype == np.float32 and rel(h, ref_h) < 2e-3 and rel(y, ref_y) < 2e-3
    relu = next(n for n in fp16.graph.node if n.name == "relu")
    assert relu.input[0] == "h__fp16"  # reads the FP16 value, not the FP32 graph output


def test_if_subgraphs_convert_inside_with_fp32_at_their_boundary():
    w = numpy_helper.from_array(np.full((4, 4), 0.25, np.float32), "w")
    then_g = helper.make_graph([helper.make_node("Mul", ["h", "two"], ["t_out"], name="then_mul")], "then", [],
                               [vi("t_out", ["N", 4])], [numpy_helper.from_array(np.float32(2.0), "two")])
    else_g = helper.make_graph([helper.make_node("Sigmoid", ["h"], ["e_out"], name="else_sigmoid")], "else", [],
                               [vi("e_out", ["N", 4])])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("If", ["cond"], ["branch"], then_branch=then_g, else_branch=else_g, name="choose"),
             helper.make_node("Add", ["branch", "h"], ["y"], name="add")]
    model = make(nodes, [vi("x", ["N", 4]), vi("cond", [], TensorProto.BOOL)], [vi("y", ["N", 4])], [w])
    x = np.random.default_rng(4).standard_normal((3, 4)).astype(np.float32)
    fp16, info = convert_float(model, "fp16")
    kept = {k["node"]: k["reason"] for k in info["nodes_kept_fp32"]}
    assert "its subgraphs are converted inside" in kept["choose"]
    assert sorted(info["subgraphs_converted"]) == ["choose.else_branch", "choose.then_branch"]
    if_node = next(n for n in fp16.graph.node if n.op_type == "If")
    then_g = next(a.g for a in if_node.attribute if a.name == "then_branch")
    # the branch reads an FP32 copy of the outer value, casts it for its FP16 Mul, and returns FP32
    cast_in = next(n for n in then_g.node if n.op_type == "Cast" and n.input[0] == "h__to_fp32")
    then_mul = next(n for n in then_g.node if n.name == "then_mul")
    assert then_mul.input[0] == cast_in.output[0] and cast_in.attribute[0].i == TensorProto.FLOAT16
    assert then_g.output[0].name == "t_out" and "then_mul" in info["nodes"]["converted"]
    for cond in (True, False):
        feeds = {"x": x, "cond": np.array(cond)}
        assert rel(run(fp16, feeds)[0], run(model, feeds)[0]) < 2e-3


def test_resize_scales_stay_float32():
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest", name="up")]
    model = make(nodes, [vi("x", ["N", 1, 2, 2])], [vi("y", ["N", 1, 4, 4])],
                 [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")])
    fp16, _ = convert_float(model, "fp16")
    scales = next(i for i in fp16.graph.initializer if i.name == "scales")
    assert scales.data_type == TensorProto.FLOAT
    x = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)
    np.testing.assert_array_equal(run(fp16, {"x": x})[0], x.repeat(2, 2).repeat(2, 3))


def test_bf16_rounds_weights_to_nearest_even():
    w = np.array([[1.0, 1.00390625, 1.01171875, -3.0e38]], np.float32)  # 1 + 2^-8 ties to even
    nodes = [helper.make_node("Mul", ["x", "w"], ["y"], name="mul")]
    model = make(nodes, [vi("x", ["N", 4])], [vi("y", ["N", 4])], [numpy_helper.from_array(w, "w")])
    bf16, _ = convert_float(model, "bf16")
    init = next(i for i in bf16.graph.initializer if i.name == "w")
    assert init.data_type == TensorProto.BFLOAT16
    bits = np.frombuffer(init.raw_data, dtype="<u2").astype(np.uint32) << 16
    assert bits.view(np.float32).tolist() == [1.0, 1.0, 1.015625, pytest.approx(-3.0e38, rel=1e-2)]


# ---------------------------------------------------------------------------------------------- int8


@pytest.fixture
def mlp_registry(tmp_path):
    def build(opset: int = 17, recipes: str = ""):
        mlp_model(tmp_path / "mlp.onnx", opset=opset)
        path = write_registry(tmp_path, f"""
            {recipes}
            [models.mlp]
            path = "mlp.onnx"
            [models.mlp.inputs.x]
            range = [-2, 2]
            [models.mlp.calibration]
            size = 16
            [models.mlp.profiles]
            dynamic = {{ min = "x:1x8", opt = "x:8x8", max = "x:64x8" }}
            """)
        return load_registry(path)
    return build


def test_per_channel_int8_upgrades_an_opset_11_model(mlp_registry, tmp_path):
    reg = mlp_registry(opset=11)
    recipe = all_recipes(reg)["int8-minmax-pc"]
    art = apply_recipe(recipe, reg.models["mlp"], Cache(tmp_path / "cache"))
    model = onnx.load(str(art.path))
    assert art.info["opset"] == 11 and art.info["opset_upgraded_to"] == 13
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13
    assert art.info["nodes_quantized"]["MatMul"] == 2
    dq_axes = [a.i for n in model.graph.node if n.op_type == "DequantizeLinear" for a in n.attribute if a.name == "axis"]
    assert dq_axes, "per-channel weights carry DequantizeLinear's axis"
    assert art.info["validation"]["onnxruntime_cpu"] == "ran one sample"


def test_per_channel_int8_is_refused_clearly_when_the_upgrade_fails(mlp_registry, tmp_path, monkeypatch):
    # the harness's own error path: ONNX's converter is made to fail, as it does on some real models
    import harness.recipes.int8 as int8

    def fail(model, target):
        raise RuntimeError("no adapter for op Foo")

    monkeypatch.setattr(int8, "upgrade_opset", fail)
    reg = mlp_registry(opset=11)
    with pytest.raises(RecipeError, match=r"model 'mlp' has opset 11; per-channel Q/DQ needs opset 13 .*no adapter for op Foo"):
        apply_recipe(all_recipes(reg)["int8-minmax-pc"], reg.models["mlp"], Cache(tmp_path / "cache"))


def test_int8_restricted_to_absent_op_types_warns_that_it_quantized_nothing(mlp_registry, tmp_path):
    reg = mlp_registry(recipes='[recipes.int8-conv]\nkind = "int8"\nop_types = ["Conv"]')
    with pytest.warns(RecipeWarning, match="quantized nothing in 'mlp'"):
        art = apply_recipe(all_recipes(reg)["int8-conv"], reg.models["mlp"], Cache(tmp_path / "cache"))
    assert art.info["qdq_pairs"] == 0 and art.info["nodes_left_fp32"] == {"MatMul": 2, "Relu": 1}


def test_int8_restricted_to_matmul_leaves_layernorm_in_fp32(tmp_path):
    reg = load_registry(FIXTURES / "models.toml")
    recipe = recipe_from_table("int8-mm", {"kind": "int8", "op_types": ["MatMul"]}, "test")
    art = apply_recipe(recipe, reg.models["encoder"], Cache(tmp_path / "cache"))
    assert art.info["nodes_quantized"].get("MatMul") == 6
    assert "LayerNormalization" in art.info["nodes_left_fp32"]
    everything = apply_recipe(all_recipes(reg)["int8-minmax"], reg.models["encoder"], Cache(tmp_path / "cache"))
    assert everything.info["qdq_pairs"] > art.info["qdq_pairs"]


def test_recipe_options_are_checked():
    with pytest.raises(RegistryError, match=r"models.toml, field 'recipes.x': unknown option\(s\) methd"):
        recipe_from_table("x", {"kind": "int8", "methd": "entropy"}, "models.toml")
    with pytest.raises(RegistryError, match="method must be minmax, entropy or percentile, got 'kl'"):
        recipe_from_table("x", {"kind": "int8", "method": "kl"}, "models.toml")
    r = recipe_from_table("x", {"kind": "int8", "method": "percentile", "percentile": 99.9}, "models.toml")
    assert isinstance(r, Recipe) and r.options["percentile"] == 99.9
