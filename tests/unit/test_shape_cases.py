"""The shapes accuracy gates run at (harness.shape_cases): min, opt, max and the registry's extra shapes, each a
case of its own; real samples fitted to another shape; bad entries and selections refused by name."""

from __future__ import annotations

import numpy as np
import pytest

from harness.data import SampleSet, fit_sample
from harness.errors import HarnessError, RegistryError
from harness.profiles import Profile
from harness.registry import load_registry
from harness.session import AccuracyCase
from harness.shape_cases import case_suffix, check_wanted, point_shapes, shape_points
from tests.helpers import mlp_model, write_registry

DYN = Profile.from_strings("dynamic", min="x:1x8", opt="x:4x8", max="x:16x8")


def test_a_dynamic_profile_is_gated_at_min_opt_and_max_and_a_fixed_one_at_its_shape():
    assert shape_points(DYN) == ["min", "opt", "max"]
    assert shape_points(Profile.from_strings("fixed", shapes="x:4x8")) == ["opt"]
    # a bound equal to opt is the same case: opt keeps it
    assert shape_points(Profile.from_strings("p", min="x:4x8", opt="x:4x8", max="x:16x8")) == ["opt", "max"]
    assert shape_points(DYN, ["max"]) == ["max"]


def test_extra_shapes_are_points_of_their_own_selected_by_name_or_all_together():
    prof = Profile(DYN.name, DYN.min, DYN.opt, DYN.max, extra={"odd": {"x": (3, 8)}, "same": {"x": (16, 8)}})
    assert shape_points(prof) == ["min", "opt", "max", "odd"]  # "same" repeats max
    assert shape_points(prof, ["opt", "odd"]) == ["opt", "odd"]
    assert shape_points(prof, ["extra"]) == ["odd", "same"]
    assert point_shapes(prof, "odd") == {"x": (3, 8)}
    with pytest.raises(HarnessError, match="profile 'dynamic' has no shape 'wide' .it has min, opt, max, odd, same"):
        point_shapes(prof, "wide")
    assert case_suffix("opt") == "" and case_suffix("odd") == "-odd"
    assert AccuracyCase("m", "ort_cpu", "fp32", "dynamic").id == "m-ort_cpu-fp32-dynamic"
    assert AccuracyCase("m", "ort_cpu", "fp32", "dynamic", "max").id == "m-ort_cpu-fp32-dynamic-max"
    with pytest.raises(HarnessError, match=r"--shapes: no selected profile has the shape\(s\) wide; give min, opt, "
                                           r"max, extra or one of odd, same"):
        check_wanted(["opt", "wide"], [prof], "--shapes")


def test_real_samples_are_cropped_or_padded_with_their_edge_to_another_shape():
    x = np.arange(2 * 2 * 3).reshape(2, 2, 3)  # two samples of 2 x 3
    assert fit_sample(x, (2, 2)).tolist() == [[[0, 1], [3, 4]], [[6, 7], [9, 10]]]
    wide = fit_sample(x, (3, 5))
    assert wide.shape == (2, 3, 5) and wide[0, 0].tolist() == [0, 1, 2, 2, 2] and wide[0, 2].tolist() == [3, 4, 5, 5, 5]
    with pytest.raises(HarnessError, match="ranks differ"):
        fit_sample(x, (2,))


@pytest.fixture
def folder(tmp_path):
    mlp_model(tmp_path / "mlp.onnx")
    return tmp_path


BODY = """
[models.mlp]
path = "mlp.onnx"
{model}
[models.mlp.profiles]
dynamic = {{ min = "x:1x8", opt = "x:4x8", max = "x:16x8"{extra} }}
"""


def test_the_registry_reads_extra_shapes_and_a_models_shape_selection(folder):
    reg = load_registry(write_registry(folder, BODY.format(model='shapes = ["opt", "odd"]',
                                                           extra=', extra = { odd = "x:3x8" }')))
    spec = reg.models["mlp"]
    assert spec.profiles["dynamic"].extra == {"odd": {"x": (3, 8)}} and spec.shapes == ["opt", "odd"]
    # extra shapes are test points, not build parameters: the engine's cache key does not see them
    assert spec.profiles["dynamic"].key() == DYN.key()
    samples = SampleSet(spec, spec.profiles["dynamic"], size=5, shapes={"x": (3, 8)})
    assert samples.batch == 3 and [b.count for b in samples.batches(fill=True)] == [3, 2]
    assert all(b.feeds["x"].shape == (3, 8) for b in samples.batches(fill=True))


@pytest.mark.parametrize("model, extra, field, problem", [
    ("", ', extra = { odd = "x:32x8" }', "profiles.dynamic.extra.odd", "outside profile 'dynamic'"),
    ("", ', extra = { max = "x:3x8" }', "profiles.dynamic.extra.max", "other than min, opt, max, extra, all"),
    ("", ', extra = { "a-b" = "x:3x8" }', "profiles.dynamic.extra.a-b", "a word of letters, digits and _"),
    ("", ', extra = { odd = "y:3x8" }', "profiles.dynamic.extra.odd", "names input(s) y that the profile"),
    ('shapes = ["opt", "wide"]', "", "shapes", "wide names no shape of its profiles; give min, opt, max, extra"),
    ("shapes = []", "", "shapes", "must be a list of shape names"),
])
def test_bad_shape_entries_are_refused_naming_model_and_field(folder, model, extra, field, problem):
    with pytest.raises(RegistryError) as info:
        load_registry(write_registry(folder, BODY.format(model=model, extra=extra)))
    text = str(info.value)
    assert "model 'mlp'" in text and field in text and problem in text, text
