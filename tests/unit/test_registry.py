"""The registry rejects bad entries with an error naming the registry, the model and the field."""

import re

import numpy as np
import pytest

from harness.errors import RegistryError
from harness.registry import load_registry
from tests.helpers import FIXTURES, mlp_model, write_registry

GOOD = """
[models.mlp]
path = "mlp.onnx"
[models.mlp.inputs.x]
range = [-1, 1]
[models.mlp.profiles]
dynamic = {{ min = "x:1x8", opt = "x:4x8", max = "x:16x8" }}
{extra}
"""


@pytest.fixture
def folder(tmp_path):
    mlp_model(tmp_path / "mlp.onnx")
    return tmp_path


def load(folder, body):
    return load_registry(write_registry(folder, body))


def test_the_bundled_registry_loads_and_matches_its_models():
    reg = load_registry(FIXTURES / "models.toml")
    assert {"classifier", "segmenter", "ranker", "encoder"} <= set(reg.models)
    seg = reg.models["segmenter"]
    assert seg.inputs["image"].dims == ("batch", 3, "height", "width")
    assert seg.profiles["dynamic"].max["image"] == (8, 3, 512, 512)
    assert seg.profiles["fixed"].fixed


def test_a_good_entry_loads(folder):
    spec = load(folder, GOOD.format(extra="")).models["mlp"]
    assert spec.inputs["x"].dims == ("batch", 8) and spec.inputs["x"].batch_axis == 0
    assert spec.output_batch_axes == {"y": 0}


@pytest.mark.parametrize("body, field, problem", [
    (GOOD.format(extra="").replace('"mlp.onnx"', '"missing.onnx"'), "path", "ONNX file not found"),
    (GOOD.format(extra="[models.mlp.inputs.image]\nrange = [0, 1]"), "inputs.image", "unknown input name"),
    (GOOD.format(extra="").replace('"x:4x8"', '"x:4by8"'), "profiles.dynamic", "dimensions must be positive integers"),
    (GOOD.format(extra="").replace('"x:4x8"', '"4x8"'), "profiles.dynamic", "no input name"),
    (GOOD.format(extra="").replace('"x:1x8"', '"y:1x8"'), "profiles.dynamic", "same inputs"),
    (GOOD.format(extra="").replace('"x:16x8"', '"x:16x9"'), "profiles.dynamic", "does not fit its shape"),
    (GOOD.format(extra='[models.mlp.budgets]\nfp16 = ["q95(rel_l2) <= 1%"]'), "budgets.fp16", "STAT is one of"),
    (GOOD.format(extra='[models.mlp.budgets]\nint8 = ["p99(cosine) >= 0.99"]'), "budgets.int8",
     "p99 bounds cosine's harmless (high) tail; '99 % of samples have cosine >= 0.99' is p1(cosine) >= 0.99"),
    (GOOD.format(extra='[models.mlp.budgets]\nfp16 = ["p99(relative) <= 1%"]'), "budgets.fp16", "unknown metric"),
    (GOOD.format(extra="[models.mlp.inputs.x.extra]"), "inputs.x.extra", "unknown field"),
    (GOOD.format(extra="").replace("range = [-1, 1]", "range = [1, -1]"), "inputs.x.range", "low <= high"),
    (GOOD.format(extra='[models.mlp.evaluation]\nsamples = "nope.npz"'), "evaluation.samples", "not found"),
    (GOOD.format(extra='[models.mlp.budgets]\nfp16 = ["p1(iou) >= 0.9"]'), "budgets.fp16",
     "budget 'p1(iou) >= 0.9': no output computes iou; add 'iou' to the output's metrics"),
    (GOOD.format(extra='[models.mlp.budgets]\nfp16 = ["p1(cosine[z]) >= 0.9"]'), "budgets.fp16", "names output 'z'"),
    (GOOD.format(extra='[models.mlp.outputs.y]\nmetrics = ["ctc_exact"]'), "outputs.y.metrics",
     "ctc_exact decodes the argmax along class_axis"),
    (GOOD.format(extra='[models.mlp.outputs.y]\nmetrics = ["bleu"]'), "outputs.y.metrics", "must be a list of task metrics"),
    (GOOD.format(extra='[models.mlp.outputs.y]\nclass_axis = 1\nlabels = "labels"'), "outputs.y.labels",
     "labels come from the real samples"),
    (GOOD.format(extra='[models.mlp.outputs.y]\nlabels = "labels"'), "outputs.y.labels", "needs a metric to score"),
    (GOOD.format(extra='[models.mlp.outputs.y]\nthreshold = 0.3'), "outputs.y.threshold", "applies to the iou and dice"),
    (GOOD.format(extra='[models.mlp.outputs.y]\nmetrics = ["abs_err"]\nchannels = [0]'), "outputs.y.channels",
     "needs channel_axis"),
    (GOOD.format(extra="").replace("range = [-1, 1]", 'range = [-1, 1]\nbatch_axis = "nope"'), "inputs.x.batch_axis",
     'or "none", got \'nope\''),
    (GOOD.format(extra="").replace("range = [-1, 1]", "value = [1.0, 2.0]"), "inputs.x.value",
     "has shape [2]; one sample of this input has shape [8]"),
    (GOOD.format(extra='[models.mlp.budgets]\nint8 = ["mean(cosine) >= 99% of fp32"]'), "budgets.int8",
     "'of fp32' compares with the FP32 model's own score"),
])
def test_bad_entries_name_model_and_field(folder, body, field, problem):
    with pytest.raises(RegistryError) as err:
        load(folder, body)
    msg = str(err.value)
    assert "models.toml: model 'mlp', field " in msg
    assert err.value.field == field, msg
    assert problem in msg


def test_a_changed_model_file_is_refused_until_its_hash_is_updated(folder):
    body = GOOD.format(extra="").replace('path = "mlp.onnx"', 'path = "mlp.onnx"\nsha256 = "' + "0" * 64 + '"')
    with pytest.raises(RegistryError, match=re.escape("field 'sha256'")):
        load(folder, body)


def test_samples_must_match_the_inputs(folder):
    np.savez(folder / "s.npz", x=np.zeros((10, 7), np.float32))
    body = GOOD.format(extra='[models.mlp.evaluation]\nsamples = "s.npz"')
    with pytest.raises(RegistryError, match=r"array 'x' has shape \(10, 7\); expected \(samples, 8\)"):
        load(folder, body)
    np.savez(folder / "s.npz", x=np.zeros((10, 8), np.float16))  # float16 widens exactly: accepted
    assert load(folder, body).models["mlp"].samples is not None
    np.savez(folder / "s.npz", x=np.full((10, 8), 0.25, np.float64))  # float64 within float32's range: accepted
    assert load(folder, body).models["mlp"].samples is not None
    np.savez(folder / "s.npz", x=np.full((10, 8), 1e39, np.float64))
    with pytest.raises(RegistryError, match=r"array 'x' has dtype float64 with values from 1e\+39 to 1e\+39, outside "
                       r"the input's float32 range"):
        load(folder, body)


def test_dynamic_inputs_need_a_profile_shape_and_shared_dims_agree(tmp_path):
    from tests.helpers import FIXTURES as F

    body = f"""
    [models.r]
    path = "{F / 'models' / 'ranker.onnx'}"
    [models.r.profiles]
    p = {{ shapes = "ids:4x8" }}
    """
    # dense's only dynamic dimension, 'batch', is bound by ids: its shape follows
    assert load(tmp_path, body).models["r"].profiles["p"].opt["dense"] == (4, 13)
    renamed = body.replace("[models.r.profiles]", '[models.r.inputs.ids]\nshape = ["rows", 8]\n[models.r.profiles]')
    with pytest.raises(RegistryError, match="input 'dense' has dynamic dimensions"):
        load(tmp_path, renamed)
    body = body.replace('"ids:4x8"', '"ids:4x8,dense:5x13"')
    with pytest.raises(RegistryError, match="dimension 'batch' is 4 for input 'ids' but 5 for input 'dense'"):
        load(tmp_path, body)


def test_batch_axes_follow_the_batch_name_and_shared_inputs_take_values(tmp_path):
    from tests.models import recurrent_state_model

    recurrent_state_model(tmp_path / "rec.onnx")
    body = """
    [models.rec]
    path = "rec.onnx"
    [models.rec.inputs.sr]
    value = 8000
    [models.rec.inputs.state]
    value = 0.0
    [models.rec.profiles]
    p = { min = "x:1x8x8", opt = "x:2x8x8", max = "x:4x8x8" }
    """
    spec = load(tmp_path, body).models["rec"]
    assert [(i.name, i.batch_axis) for i in spec.inputs.values()] == [("x", 0), ("sr", None), ("state", 1)]
    assert spec.inputs["sr"].value == 8000 and spec.inputs["state"].value.shape == ()
    assert spec.output_batch_axes == {"prob": 0, "state_out": 1}
    assert spec.profiles["p"].max["state"] == (2, 4, 16) and "sr" not in spec.profiles["p"].opt
    from harness.data import SampleSet

    feeds = SampleSet(spec, spec.profiles["p"], size=3).samples(0, 2)
    assert feeds["sr"].shape == () and feeds["sr"] == 8000 and feeds["state"].shape == (2, 2, 16)
    assert not feeds["state"].any()
    # the registry overrides: one state of batch 1, shared by (broadcast across) the whole batch
    fixed = body.replace("value = 0.0", 'batch_axis = "none"\nshape = [2, 1, 16]\nrange = [-1, 1]')
    spec = load(tmp_path, fixed).models["rec"]
    assert spec.inputs["state"].shared and "state" not in spec.profiles["p"].opt
    feeds = SampleSet(spec, spec.profiles["p"], size=3).samples(0, 2)
    assert feeds["state"].shape == (2, 1, 16) and feeds["state"].any()


@pytest.mark.parametrize("extra, field", [
    ('[models.mlp.budgets]\nfp16 = ["p99(rel_l2[logits]) <= 1%"]', "budgets.fp16"),
    ('[[models.mlp.where]]\nbackends = ["ort_cpu"]\nbudgets = { int8 = ["p1(cosine[probs]) >= 0.99"] }',
     "where[0].budgets.int8"),
])
def test_a_budget_naming_an_output_the_model_lacks_is_refused_at_load(folder, extra, field):
    with pytest.raises(RegistryError) as err:
        load(folder, GOOD.format(extra=extra))
    assert err.value.field == field and "the model's outputs are y" in str(err.value)


def test_a_default_budget_naming_an_output_a_model_lacks_names_the_model_and_the_defaults(folder):
    body = '[defaults.budgets]\nfp32 = ["max(rel_l2[logits]) <= 1e-4"]\n' + GOOD.format(extra="")
    with pytest.raises(RegistryError, match=r"model 'mlp', field 'defaults.budgets.fp32': budget "
                                            r"'max\(rel_l2\[logits\]\) <= 1e-4' names output 'logits'"):
        load(folder, body)


def test_a_model_that_fails_the_onnx_checker_is_refused_at_load(folder):
    import onnx
    from onnx import helper

    m = onnx.load(str(folder / "mlp.onnx"))
    m.graph.node.append(helper.make_node("Relu", ["nowhere"], ["z"]))  # an input nothing produces
    (folder / "mlp.onnx").write_bytes(m.SerializeToString())
    with pytest.raises(RegistryError) as err:
        load(folder, GOOD.format(extra=""))
    assert err.value.field == "path" and "fails the ONNX checker" in str(err.value) and "'nowhere'" in str(err.value)
    assert "\n" not in str(err.value)


def test_recipes_must_be_a_list_of_names(folder):
    with pytest.raises(RegistryError, match=r"field 'recipes': must be a list of recipe names"):
        load(folder, GOOD.format(extra="").replace('path = "mlp.onnx"', 'path = "mlp.onnx"\nrecipes = "fp16"'))


def test_a_samples_file_that_is_not_a_plain_npz_is_refused_naming_the_file(folder):
    body = GOOD.format(extra='[models.mlp.evaluation]\nsamples = "s.npz"')
    (folder / "s.npz").write_text("x,y\n1,2\n")
    with pytest.raises(RegistryError, match=r"field 'evaluation.samples': .*s\.npz is not a \.npz file \(not a zip"):
        load(folder, body)
    objects = np.empty(10, dtype=object)
    np.savez(folder / "s.npz", x=objects)
    with pytest.raises(RegistryError, match=r"s\.npz: array 'x' holds Python objects \(a pickle\), which the "
                                            r"harness never loads"):
        load(folder, body)
    (folder / "s.npz").write_bytes((folder / "s.npz").read_bytes()[:60])  # a zip cut short
    with pytest.raises(RegistryError, match=r"s\.npz (is not a \.npz file|cannot be read)"):
        load(folder, body)
