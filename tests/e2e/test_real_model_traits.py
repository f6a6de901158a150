"""Traits of real trained models, each reproduced by a small constructed model, and the verdict each now gets.

1. inputs without a batch axis beside batched ones, and a recurrent state batched on axis 1;
2. INT8 on If subgraphs and on Gemms with row biases;
3. recipes that change nothing are not passes;
4. budgets by default, strictness about cases without one, and fp32 across a recurrence;
5. declared output shapes that are wrong;
6. task metrics that catch what generic errors miss (masks, boxes, CTC sequences, labels);
7. keep_fp32 by node name or glob;
8. ids outside an embedding table, IR versions ONNX Runtime cannot read, float64 samples.

Run through ``check_accuracy`` on ONNX Runtime CPU. INT8 numbers differ between CPUs with and without VNNI, so
the INT8 assertions here are about verdicts (no errors, no-ops) and relations that hold on both.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from harness.checks import AccuracyGateFailure, NoOpRecipe, check_accuracy
from harness.errors import HarnessError, RecipeError, RegistryError
from harness.recipes import apply_recipe, transform_model
from harness.reference import reference_outputs
from harness.registry import load_registry
from harness.results import run_rows
from harness.session import AccuracyCase, HarnessSession, Settings
from tests import models
from tests.helpers import write_registry

REGISTRY = """
[recipes.int8-w7]
kind = "int8"
reduce_range = true               # 7-bit weights: the same verdicts with and without VNNI

[recipes.int8-w7-percentile]
kind = "int8"
method = "percentile"
reduce_range = true

[recipes.fp16-keep-nothing]
kind = "fp16"
keep_fp32 = ["*"]

[models.recurrent]
path = "recurrent.onnx"
[models.recurrent.inputs.sr]
value = 16000  # a shared scalar: one value per batch
[models.recurrent.inputs.state]
range = [-1, 1]
[models.recurrent.inputs.x]
range = [-1, 1]
[models.recurrent.evaluation]
size = 12
[models.recurrent.profiles]       # state's batch shape follows x's
dynamic = { min = "x:1x8x8", opt = "x:4x8x8", max = "x:8x8x8" }
single = { shapes = "x:1x8x8" }

[models.branchy]
path = "if_subgraph.onnx"
[models.branchy.inputs.sr]
value = 16000
[models.branchy.evaluation]
size = 8
[models.branchy.calibration]
size = 8
[models.branchy.profiles]
dynamic = { min = "x:1x16", opt = "x:4x16", max = "x:8x16" }

[models.all_in_if]
path = "whole_network_in_if.onnx"
[models.all_in_if.inputs.sr]
value = 16000
[models.all_in_if.evaluation]
size = 8
[models.all_in_if.profiles]
dynamic = { min = "x:1x16", opt = "x:4x16", max = "x:8x16" }

[models.bytes]
path = "gemm_row_bias.onnx"
[models.bytes.inputs.ids]
range = [0, 255]
[models.bytes.outputs.logits]
class_axis = 1
[models.bytes.evaluation]
size = 8
[models.bytes.profiles]
dynamic = { min = "ids:1x8", opt = "ids:4x8", max = "ids:8x8" }

[models.outlier]
path = "outlier_weight_classifier.onnx"
[models.outlier.inputs.x]
range = [-1, 1]
[models.outlier.outputs.logits]
class_axis = 1
[models.outlier.evaluation]
size = 32
[models.outlier.profiles]
dynamic = { min = "x:1x16", opt = "x:8x16", max = "x:32x16" }
[models.outlier.budgets]
fp16 = []                         # explicitly unbudgeted

[models.timemajor]
path = "wrong_declared_shape.onnx"
[models.timemajor.outputs.probs]
class_axis = 2                    # right for the real [width, batch, classes]; the file declares rank 2
metrics = ["ctc_exact"]
[models.timemajor.evaluation]
size = 8
[models.timemajor.profiles]
dynamic = { min = "x:1x8x10", opt = "x:4x8x10", max = "x:8x8x10" }

[models.one_batch]
path = "declared_one_batch_damaged.onnx"
reference = "declared_one_batch.onnx"
[models.one_batch.evaluation]
size = 12
[models.one_batch.profiles]
dynamic = { min = "x:1x5", opt = "x:4x5", max = "x:8x5" }
[models.one_batch.budgets]
fp32 = ["max(rel_l2) <= 10"]
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("traits")
    models.recurrent_state_model(d / "recurrent.onnx")
    models.if_subgraph_model(d / "if_subgraph.onnx")
    models.whole_network_in_if_model(d / "whole_network_in_if.onnx")
    models.gemm_row_bias_model(d / "gemm_row_bias.onnx")
    models.outlier_weight_classifier_model(d / "outlier_weight_classifier.onnx")
    models.wrong_declared_shape_model(d / "wrong_declared_shape.onnx")
    models.declared_one_batch_model(d / "declared_one_batch.onnx")
    models.declared_one_batch_model(d / "declared_one_batch_damaged.onnx", seed=60)
    write_registry(d, REGISTRY)
    return d


def relocated(folder) -> str:
    """The registry with absolute model paths, to edit and write elsewhere."""
    text = (folder / "models.toml").read_text()
    return text.replace('path = "', f'path = "{folder}/').replace('reference = "', f'reference = "{folder}/')


def session(folder, name: str = "reports", **settings) -> HarnessSession:
    return HarnessSession(Settings(registry=folder / "models.toml", report_dir=folder / name,
                                   cache_dir=folder / "cache", **settings))


@pytest.fixture(scope="module")
def hs(folder):
    s = session(folder)
    yield s
    s.close()


def run(hs: HarnessSession, model: str, recipe: str, profile: str = "dynamic") -> tuple[dict, str]:
    """The case's row and how it ended: pass, fail, no-op (or the HarnessError's text)."""
    try:
        return check_accuracy(hs, AccuracyCase(model, "ort_cpu", recipe, profile)).to_dict(), "pass"
    except AccuracyGateFailure:
        outcome = "fail"
    except NoOpRecipe:
        outcome = "no-op"
    rows = [r for r in run_rows(hs.settings.report_dir, hs.run_id) if r.model == model and r.recipe == recipe
            and r.profile == profile]
    return rows[-1].to_dict(), outcome


# ---------------------------------------------------------------------------------------------------- 1


def test_a_shared_scalar_and_a_state_batched_on_axis_1_run_at_any_batch(hs):
    spec = hs.model("recurrent")
    assert spec.inputs["sr"].shared and spec.inputs["state"].batch_axis == 1 and spec.inputs["x"].batch_axis == 0
    assert spec.profiles["dynamic"].opt["state"] == (2, 4, 16)  # derived from x's batch
    # int8-w7-percentile: the sample rate, constant in float32, once stopped histogram calibration ("Too many bins")
    for recipe in ("fp32", "fp16", "int8-w7", "int8-w7-percentile"):
        row, outcome = run(hs, "recurrent", recipe)
        assert row["status"] in ("pass", "fail") and row["batch"] == 4 and row["samples"] == 12, row.get("message")
        assert row["output_layout"]["batch_axes"] == {"prob": 0, "state_out": 1}
    assert run(hs, "recurrent", "fp32")[1] == "pass"
    # the state output is split along its real batch axis: per sample, batch 4 gives what batch 1 gives
    spec, _ = hs.layout(hs.model("recurrent"))
    from harness.data import SampleSet

    four = reference_outputs(hs.cache, spec, SampleSet(spec, spec.profiles["dynamic"]))
    one = reference_outputs(hs.cache, spec, SampleSet(spec, spec.profiles["single"]))
    for name in ("prob", "state_out"):
        a = np.concatenate([np.moveaxis(four.slice(i, i + 1)[name], 1 if name == "state_out" else 0, 0)
                            for i in range(12)])
        b = np.concatenate([np.moveaxis(one.slice(i, i + 1)[name], 1 if name == "state_out" else 0, 0)
                            for i in range(12)])
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_samples_that_differ_in_a_shared_input_within_a_batch_are_named(folder, tmp_path):
    body = relocated(folder).replace("[models.recurrent.evaluation]\nsize = 12",
                        '[models.recurrent.evaluation]\nsize = 4\nsamples = "rec.npz"')
    body = body.replace("[models.recurrent.inputs.sr]\nvalue = 16000  # a shared scalar: one value per batch",
                        "[models.recurrent.inputs.sr]")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "rec.npz", x=rng.random((40, 8, 8), dtype=np.float32), state=np.zeros((40, 2, 16), np.float32),
             sr=np.array([16000] * 20 + [8000] * 20, np.int64))
    spec = load_registry(write_registry(tmp_path, body)).models["recurrent"]
    from harness.data import SampleSet

    samples = SampleSet(spec, spec.profiles["dynamic"], size=40 - 32)
    assert samples.samples(0, 4)["sr"].shape == ()  # one value per batch
    np.savez(tmp_path / "rec.npz", x=rng.random((40, 8, 8), dtype=np.float32), state=np.zeros((40, 2, 16), np.float32),
             sr=np.array([16000, 8000] * 20, np.int64))
    with pytest.raises(HarnessError, match=r"input 'sr' has no batch axis .* different values for samples #0 and #1"):
        SampleSet(spec, spec.profiles["dynamic"], size=8).samples(0, 4)


# ---------------------------------------------------------------------------------------------------- 2


def test_int8_on_if_subgraphs_gives_valid_artifacts_and_verdicts(hs):
    for recipe in ("int8-minmax", "int8-entropy", "int8-percentile", "int8-minmax-pc"):
        row, outcome = run(hs, "branchy", recipe)
        info = row["recipe_info"]
        assert outcome in ("pass", "fail") and row["status"] in ("pass", "fail"), row.get("message")
        assert info["validation"]["checker"] == "ok" and info["nodes_quantized"].get("MatMul") == 2
        assert info["subgraph_nodes_left_fp32"] == 6


def test_the_if_model_reproduces_onnx_runtimes_unsorted_artifact(hs, tmp_path):
    # what ONNX Runtime's quantizer writes for it on its own: nodes that subgraphs read come after the If
    from onnxruntime.quantization import QuantFormat, quantize_static

    spec = hs.model("branchy")
    feeds = [{"x": np.ones((2, 16), np.float32), "sr": np.array(16000, np.int64)}]

    class Reader:
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(spec.path), str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ)
    with pytest.raises(Exception, match="topologically sorted"):
        onnx.checker.check_model(str(tmp_path / "q.onnx"), full_check=True)


def test_per_channel_int8_on_gemms_with_row_biases(hs, tmp_path):
    row, outcome = run(hs, "bytes", "int8-minmax-pc")
    assert row["status"] in ("pass", "fail") and row["recipe_info"]["nodes_quantized"]["Gemm"] == 2, row.get("message")
    # ONNX Runtime's quantizer alone dies on it; the same failure, through the harness's step, is named
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from harness.recipes.int8 import step

    feeds = [{"ids": np.arange(16, dtype=np.int32).reshape(2, 8)}]

    class Reader:
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    with pytest.raises(RecipeError) as err, step("quantization", "bytes", "int8-minmax-pc"):
        quantize_static(str(hs.model("bytes").path), str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QInt8,
                        extra_options={"QuantizeBias": False, "WeightSymmetric": True, "ActivationSymmetric": True})
    message = str(err.value)
    assert message.startswith("recipe 'int8-minmax-pc' on model 'bytes' failed at quantization, at ")
    assert "tensor 'w" in message and "truth value" in message and "Try op_types" in message and "keep_fp32" in message


def test_a_calibration_failure_names_the_step_and_what_to_try(hs):
    from harness.recipes.int8 import quantize

    model = onnx.load(str(hs.model("branchy").path))
    bad = [{"x": np.ones((2, 16), np.float32)}]  # sr missing: ONNX Runtime refuses the run
    with pytest.raises(RecipeError, match=r"recipe 'int8-entropy' on model 'branchy' failed at calibration: .*sr.*"
                                          r"Try another method \(method = \"minmax\""):
        quantize(model, hs.settings.report_dir / "x.onnx", iter(bad), model_name="branchy", recipe_name="int8-entropy",
                 method="entropy", per_channel=False, op_types=None, percentile=99.9, preprocess=False)


# ---------------------------------------------------------------------------------------------------- 3


def test_fp16_converts_inside_if_subgraphs(hs):
    row, outcome = run(hs, "all_in_if", "fp16")
    info = row["recipe_info"]
    assert outcome == "pass" and row["status"] == "pass"
    assert info["subgraphs_converted"] == ["branch.else_branch", "branch.then_branch"]
    assert info["nodes_converted"] == {"MatMul": 2, "Relu": 1, "Tanh": 1} or sum(info["nodes_converted"].values()) >= 4
    assert 0 < row["metrics"]["rel_l2.max"] < 1e-2  # FP16 weights inside: no longer exactly the FP32 model


def test_recipes_that_change_nothing_are_no_ops_not_passes(hs):
    for recipe in ("int8-minmax", "int8-percentile"):
        row, outcome = run(hs, "all_in_if", recipe)
        assert outcome == "no-op" and row["status"] == "no-op"
        assert "quantized nothing" in row["no_op"] and "inside If / Loop / Scan subgraphs" in row["no_op"]
        assert row["metrics"]["rel_l2.max"] == 0
    row, outcome = run(hs, "branchy", "fp16-keep-nothing")
    assert outcome == "no-op" and "every float node is kept in FP32" in row["no_op"] and "in keep_fp32" in row["no_op"]


# ---------------------------------------------------------------------------------------------------- 4


def test_a_private_registry_gets_every_precision_with_default_budgets(hs):
    assert hs.model_recipes(hs.model("outlier")) == ["fp32", "fp16", "bf16", "int8-minmax", "int8-entropy",
                                                     "int8-percentile", "int8-minmax-pc"]
    row, outcome = run(hs, "outlier", "int8-minmax")
    # one weight 4000x the others: per-tensor int8 rounds the rest to zero, and the decisions with them
    assert outcome == "fail" and row["budget_source"] == "built-in defaults"
    assert row["metrics"]["top1.mean"] < 0.9
    assert any(b["budget"] == "mean(top1) >= 0.9" and not b["passed"] for b in row["budgets"])


def test_unbudgeted_is_visible_and_strict_budgets_fail_it(folder, hs):
    row, outcome = run(hs, "outlier", "fp16")
    assert outcome == "pass" and row["status"] == "unbudgeted" and row["unbudgeted"] and row["budget_source"] == "none"
    strict = session(folder, "strict", strict_budgets=True)
    try:
        row, outcome = run(strict, "outlier", "fp16")
    finally:
        strict.close()
    assert outcome == "fail" and row["status"] == "fail"
    assert "no budget applies to recipe 'fp16'" in row["message"] and "--strict-budgets" in row["message"]
    from harness.finish import status_lines
    from harness.rows import parse_row

    assert any(line.startswith("unbudgeted: 1 case(s) failed (--strict-budgets): outlier/fp16")
               for line in status_lines([parse_row(row, "test")], strict=True))


def test_fp32_default_tolerates_reordering_across_a_recurrence(tmp_path):
    # 64 steps of a 512-unit tanh recurrence: ONNX Runtime's optimizations fuse MatMul and Add and change how sums
    # round, and the rounding differences pass through every step
    models.recurrent_state_model(tmp_path / "deep.onnx", steps=64, hidden=512, gain=0.8)
    write_registry(tmp_path, """
        [models.deep]
        path = "deep.onnx"
        recipes = ["fp32"]
        [models.deep.inputs.sr]
        value = 16000
        [models.deep.inputs.x]
        range = [-1, 1]
        [models.deep.inputs.state]
        value = 0.0
        [models.deep.evaluation]
        size = 16
        [models.deep.profiles]
        dynamic = { min = "x:1x64x8", opt = "x:8x64x8", max = "x:16x64x8" }
        """)
    hs = HarnessSession(Settings(registry=tmp_path / "models.toml", report_dir=tmp_path / "r", cache_dir=tmp_path / "c"))
    try:
        row = check_accuracy(hs, AccuracyCase("deep", "ort_cpu", "fp32", "dynamic")).to_dict()
    finally:
        hs.close()
    assert row["status"] == "pass" and row["budget_source"] == "built-in defaults"
    assert row["metrics"]["rel_l2.p99"] <= 1e-3


# ---------------------------------------------------------------------------------------------------- 5


def test_real_output_shapes_settle_the_batch_axis_and_class_axis(hs):
    row, outcome = run(hs, "timemajor", "fp16")
    assert outcome == "pass" and row["samples"] == 8
    assert row["output_layout"]["batch_axes"] == {"probs": 1}
    assert row["output_layout"]["shapes"]["probs"] == {"1": [10, 1, 6], "2": [10, 2, 6]}
    assert any("declared [1, L] but the model returns [10, 1, 6] at batch 1" in n for n in row["notes"])
    assert row["metrics"]["ctc_exact.mean"] == 1.0 and row["metrics"]["top1.mean"] == 1.0


def test_metrics_are_per_sample_where_the_declaration_says_one_batch(hs):
    row, outcome = run(hs, "one_batch", "fp32")
    assert outcome == "pass" and row["output_layout"]["batch_axes"] == {"y": 0} and row["samples"] == 12
    # the same numbers per sample, computed independently
    import onnxruntime as ort

    from harness.data import SampleSet

    spec = hs.model("one_batch")
    x = SampleSet(spec, spec.profiles["dynamic"]).samples(0, 12)["x"]
    ref = ort.InferenceSession(str(spec.reference_model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(spec.path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    rel = np.linalg.norm(got.astype(np.float64) - ref, axis=1) / np.linalg.norm(ref.astype(np.float64), axis=1)
    assert row["metrics"]["rel_l2.max"] == pytest.approx(rel.max(), rel=1e-6)
    assert row["metrics"]["rel_l2.p50"] == pytest.approx(np.median(rel), rel=1e-6)


def test_a_registry_batch_axis_that_the_real_output_contradicts_is_refused(folder, tmp_path):
    body = relocated(folder).replace("class_axis = 2                    #", "batch_axis = 0\nclass_axis = 2 #")
    hs = HarnessSession(Settings(registry=write_registry(tmp_path, body), report_dir=tmp_path / "r",
                                 cache_dir=tmp_path / "c"))
    try:
        with pytest.raises(HarnessError, match=r"output 'probs': the registry's batch_axis 0 does not fit the real "
                                               r"output \(\[10, 1, 6\] at batch 1 and \[10, 2, 6\] at batch 2\): its "
                                               "batch is axis 1"):
            check_accuracy(hs, AccuracyCase("timemajor", "ort_cpu", "fp32", "dynamic"))
    finally:
        hs.close()


# ---------------------------------------------------------------------------------------------------- 7


def test_keep_fp32_by_node_name_and_glob_through_the_api(hs):
    model = onnx.load(str(hs.model("branchy").path))
    fp16, info = transform_model(model, "fp16", {"keep_fp32": ["fc0", "then_*"]})
    assert info["keep_fp32"]["nodes"] == ["fc0", "then_fc1", "then_fc2", "then_relu"]
    assert {"fc0", "then_fc1"} <= set(info["nodes"]["kept_fp32"]) and "else_fc1" in info["nodes"]["converted"]
    fc0 = next(n for n in fp16.graph.node if n.name == "fc0")
    assert fc0.input[0] == "x"  # reads the FP32 input itself, no Cast
    spec = hs.model("branchy")
    from harness.recipes import calibration_set

    calib = calibration_set(spec, {"calibration": "auto", "calibration_size": 0})
    feeds = [b.feeds for b in calib.batches(4)]
    int8, qinfo = transform_model(model, "int8", {"keep_fp32": ["head"]}, calibration=feeds, model_name="branchy")
    assert qinfo["keep_fp32"]["nodes"] == ["head"] and "head" not in qinfo["nodes"]["quantized"]
    assert "fc0" in qinfo["nodes"]["quantized"]
    with pytest.raises(RecipeError, match=r"keep_fp32 pattern 'hed' matches no node of the model"):
        transform_model(model, "fp16", {"keep_fp32": ["hed"]})


def test_keep_fp32_is_recorded_in_the_row(folder, tmp_path):
    body = '[recipes.fp16-head32]\nkind = "fp16"\nkeep_fp32 = ["head"]\n' + relocated(folder)
    hs = HarnessSession(Settings(registry=write_registry(tmp_path, body), report_dir=tmp_path / "r",
                                 cache_dir=tmp_path / "c"))
    try:
        row = check_accuracy(hs, AccuracyCase("branchy", "ort_cpu", "fp16-head32", "dynamic")).to_dict()
        art = apply_recipe(hs.recipe("fp16-head32"), hs.model("branchy"), hs.cache)
    finally:
        hs.close()
    assert row["recipe_info"]["keep_fp32"] == {"patterns": ["head"], "nodes": ["head"]}
    assert "nodes" not in row["recipe_info"] and "head" in art.info["nodes"]["kept_fp32"]
    assert row["recipe_params"]["keep_fp32"] == ["head"]


# ---------------------------------------------------------------------------------------------------- 8


def test_ids_outside_an_embedding_table_are_refused_naming_the_gather(tmp_path):
    models.embedding_lookup_model(tmp_path / "emb.onnx", rows=100)
    body = """
        [models.emb]
        path = "emb.onnx"
        [models.emb.inputs.ids]
        range = [0, 150]
        [models.emb.profiles]
        dynamic = { min = "ids:1x4", opt = "ids:4x4", max = "ids:8x4" }
        """
    with pytest.raises(RegistryError, match=r"model 'emb', field 'inputs.ids.range': ids from 0 to 150 \(range\) index "
                                            r"Gather node 'embed', whose table has 100 rows: ids must lie in \[0, 99\]"):
        load_registry(write_registry(tmp_path, body))
    np.savez(tmp_path / "ids.npz", ids=np.full((40, 4), 120, np.int64))
    body = body.replace("range = [0, 150]", "range = [0, 99]") + '[models.emb.evaluation]\nsamples = "ids.npz"\n'
    with pytest.raises(RegistryError, match=r"field 'evaluation.samples': ids from 120 to 120 \(array 'ids'\)"):
        load_registry(write_registry(tmp_path, body))


def test_an_ir_version_onnx_runtime_cannot_read_is_refused_when_the_registry_loads(tmp_path):
    models.future_ir_version_model(tmp_path / "future.onnx", ir=99)
    body = """
        [models.future]
        path = "future.onnx"
        [models.future.profiles]
        dynamic = { min = "x:1x4", opt = "x:2x4", max = "x:4x4" }
        """
    with pytest.raises(RegistryError, match=r"field 'path': future.onnx has IR version 99, which onnxruntime \S+ cannot "
                                            r"load \(it reads up to IR \d+\).*re-save the model with an older one"):
        load_registry(write_registry(tmp_path, body))


def test_float64_real_samples_feed_a_float32_input(tmp_path):
    models.labelled_classifier_model(tmp_path / "clf.onnx")
    np.savez(tmp_path / "s.npz", x=np.random.default_rng(0).standard_normal((20, 16)))  # float64
    write_registry(tmp_path, """
        [models.clf]
        path = "clf.onnx"
        recipes = ["fp32"]
        [models.clf.evaluation]
        samples = "s.npz"
        [models.clf.calibration]
        size = 4
        [models.clf.profiles]
        dynamic = { min = "x:1x16", opt = "x:4x16", max = "x:8x16" }
        """)
    hs = HarnessSession(Settings(registry=tmp_path / "models.toml", report_dir=tmp_path / "r", cache_dir=tmp_path / "c"))
    try:
        row = check_accuracy(hs, AccuracyCase("clf", "ort_cpu", "fp32", "dynamic")).to_dict()
    finally:
        hs.close()
    assert row["status"] == "pass" and row["data"] == "real" and row["samples"] == 16
