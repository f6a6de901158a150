"""Stations in the registry: both spellings of the members, defaults, and errors naming the registry file, the
station and the field; the cases generated for them and the options that select them."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError, RegistryError
from harness.registry import load_registry
from harness.session import HarnessSession, PerfSettings, Settings
from harness.spec import StationMember
from harness.stations.check import skip_reason, station_cases
from tests.helpers import FIXTURES, mlp_model, write_registry

MODELS = """
[defaults]
perf_recipes = ["fp32", "fp16"]

[models.det]
path = "det.onnx"
[models.det.profiles]
dynamic = {{ min = "x:1x8", opt = "x:4x8", max = "x:16x8" }}
fixed = {{ shapes = "x:4x8" }}

[models.cls]
path = "cls.onnx"
recipes = ["fp16", "fp32"]
[models.cls.profiles]
dynamic = {{ min = "x:1x8", opt = "x:8x8", max = "x:32x8" }}

{stations}
"""


@pytest.fixture
def folder(tmp_path):
    mlp_model(tmp_path / "det.onnx", seed=1)
    mlp_model(tmp_path / "cls.onnx", seed=2)
    return tmp_path


def load(folder, stations):
    return load_registry(write_registry(folder, MODELS.format(stations=stations)))


def session(folder, body, tmp_path, **perf):
    reg = write_registry(folder, MODELS.format(stations=body))
    settings = Settings(registry=reg, report_dir=tmp_path / "r", cache_dir=tmp_path / "c", backends=["ort_cpu"],
                        perf=PerfSettings(**perf))
    return HarnessSession(settings)


def test_both_spellings_of_the_members_load_with_their_defaults(folder):
    reg = load(folder, """
[stations.pair]
models = ["det", "det", { model = "cls", recipe = "fp16" }]
batches = [1, 4]
fps = 30
description = "two detectors and a classifier"

[stations.tables]
recipe = "fp16"
profile = "dynamic"
[[stations.tables.members]]
model = "det"
profile = "fixed"
[[stations.tables.members]]
model = "cls"
""")
    pair, tables = reg.stations["pair"], reg.stations["tables"]
    assert pair.members == (StationMember("det"), StationMember("det"), StationMember("cls", "fp16"))
    assert pair.models == ["det", "det", "cls"] and pair.batches == (1, 4) and pair.fps == 30.0
    assert pair.source == str(folder / "models.toml")
    assert tables.members == (StationMember("det", None, "fixed"), StationMember("cls"))
    assert (tables.recipe, tables.profile, tables.batches, tables.fps) == ("fp16", "dynamic", (), None)


@pytest.mark.parametrize("body, field, problem", [
    ('[stations.s]\nmodels = ["det", "dett"]', "models[1]", "unknown model 'dett'; the registry has det, cls"),
    ('[stations.s]\nmodels = []', "models", "must be a non-empty list"),
    ('[stations.s]\nbatches = [1]', "models", "either as models"),
    ('[stations.s]\nmodels = ["det"]\n[[stations.s.members]]\nmodel = "cls"', "models", "not both"),
    ('[stations.s]\nmodels = ["det"]\nspeed = 3', "speed", "unknown field; allowed here: batches, description"),
    ('[stations.s]\nmodels = [{ model = "det", precision = "fp16" }]', "models[0].precision", "unknown field"),
    ('[stations.s]\nmodels = [{ recipe = "fp16" }]', "models[0].model", "must name a model"),
    ('[stations.s]\nmodels = [3]', "models[0]", "must be a model name or a table"),
    ('[stations.s]\nmodels = [{ model = "cls", profile = "fixed" }]', "models[0].profile",
     "model 'cls' has no profile 'fixed'; its profiles are dynamic"),
    ('[stations.s]\nmodels = ["det", "cls"]\nprofile = "fixed"', "profile", "model 'cls' has no profile 'fixed'"),
    ('[stations.s]\nmodels = ["det", "cls"]\nbatches = [1, 20]', "batches",
     "batch 20 is outside the profile 'dynamic' of member 0 (det), which admits batches 1 to 16"),
    ('[stations.s]\nmodels = ["det"]\nbatches = [0]', "batches", "positive integers"),
    ('[stations.s]\nmodels = ["det"]\nfps = -5', "fps", "positive number of frames per second"),
    ('[stations.s]\nmodels = ["det"]\nrecipe = 16', "recipe", "must be a name"),
])
def test_a_bad_station_is_refused_naming_the_file_the_station_and_the_field(folder, body, field, problem):
    with pytest.raises(RegistryError) as err:
        load(folder, body)
    text = str(err.value)
    assert text.startswith(f"{folder / 'models.toml'}: station 's', ")
    assert f"field {field!r}" in text and problem in text


def test_cases_resolve_each_members_recipe_and_profile(folder, tmp_path):
    hs = session(folder, '[stations.pair]\nmodels = ["det", "det", "cls"]\nbatches = [1, 4]', tmp_path)
    cases = list(station_cases(hs))
    assert [c.id for c in cases[:3]] == ["station-pair-ort_cpu-fp32+fp16-serial-b1",
                                         "station-pair-ort_cpu-fp32+fp16-serial-b4",
                                         "station-pair-ort_cpu-fp32+fp16-multistream-b1"]
    assert {c.mode for c in cases} == {"serial", "multistream", "threadpool", "merged"} and len(cases) == 8
    # each member's first perf recipe among its own recipes: det has the defaults (fp32 first), cls lists fp16 first
    assert cases[0].recipes == ("fp32", "fp32", "fp16") and cases[0].profiles == ("dynamic",) * 3
    assert skip_reason(hs, cases[0]) is None


def test_perf_recipes_sweep_the_members_that_name_no_recipe(folder, tmp_path):
    hs = session(folder, '[stations.pair]\nmodels = ["det", { model = "cls", recipe = "fp32" }]', tmp_path,
                 recipes=["fp16", "int8-minmax"], station_modes=["serial"])
    assert [(c.id, c.recipes) for c in station_cases(hs)] == [
        ("station-pair-ort_cpu-fp16+fp32-serial-b1", ("fp16", "fp32")),
        ("station-pair-ort_cpu-int8-minmax+fp32-serial-b1", ("int8-minmax", "fp32"))]


def test_perf_batches_override_the_stations_and_skip_what_a_profile_does_not_admit(folder, tmp_path):
    hs = session(folder, '[stations.pair]\nmodels = ["det", "cls"]\nbatches = [2]', tmp_path, batches=[1, 32],
                 station_modes=["threadpool"])
    assert [c.batch for c in station_cases(hs)] == [1]  # det's profile stops at 16


def test_stations_are_selected_by_name_or_by_the_selected_models(folder, tmp_path):
    body = '[stations.dets]\nmodels = ["det", "det"]\n[stations.both]\nmodels = ["det", "cls"]'
    names = lambda hs: sorted({c.station for c in station_cases(hs)})  # noqa: E731
    assert names(session(folder, body, tmp_path)) == ["both", "dets"]
    assert names(session(folder, body, tmp_path, stations=["both"])) == ["both"]
    hs = session(folder, body, tmp_path)
    hs.settings.models = ["det"]
    assert names(hs) == ["dets"]
    with pytest.raises(HarnessError, match="--stations names unknown station.s. nope; the registry .* has dets, both"):
        list(station_cases(session(folder, body, tmp_path, stations=["nope"])))
    with pytest.raises(HarnessError, match="--station-modes names unknown mode.s. fused; known: serial, multistream"):
        list(station_cases(session(folder, body, tmp_path, station_modes=["fused"])))


def test_an_unknown_recipe_is_refused_naming_the_station_and_field(folder, tmp_path):
    hs = session(folder, '[stations.s]\nmodels = ["det", { model = "cls", recipe = "fp17" }]', tmp_path)
    with pytest.raises(RegistryError, match=r"station 's', field 'models\[1\].recipe': unknown recipe 'fp17' for cls"):
        list(station_cases(hs))


def test_a_member_the_backend_cannot_run_skips_the_case_naming_the_member(folder, tmp_path):
    hs = session(folder, '[stations.s]\nmodels = ["det", { model = "cls", recipe = "bf16" }]', tmp_path,
                 station_modes=["serial"])
    (case,) = station_cases(hs)
    assert skip_reason(hs, case) == ("station 's', member 1 (cls): ort_cpu cannot run bf16: ONNX Runtime's CPU "
                                     "provider has no bfloat16 kernels for most operators")


def test_the_bundled_stations_load_and_generate_every_mode():
    reg = load_registry(FIXTURES / "models.toml")
    assert {"vision", "ocr", "classifiers"} <= set(reg.stations)
    assert reg.stations["classifiers"].models == ["classifier"] * 5 and reg.stations["classifiers"].batches == (1,)
    assert reg.stations["vision"].models == ["segmenter", "segmenter", "classifier"]
