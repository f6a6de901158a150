"""What is checked when a session starts, before any case runs: recipe names anywhere in the registry, and
options that select nothing."""

from __future__ import annotations

import re

import pytest

from harness.errors import HarnessError, RegistryError
from harness.preflight import check_registry, preflight
from harness.recipes import all_recipes
from harness.registry import load_registry
from harness.session import HarnessSession, PerfSettings, Settings
from tests.helpers import FIXTURES, mlp_model, write_registry

BODY = """
[defaults]
recipes = ["fp32", "fp16"]
{defaults}
[models.mlp]
path = "mlp.onnx"
{model}
[models.mlp.profiles]
dynamic = {{ min = "x:1x8", opt = "x:4x8", max = "x:16x8" }}
fixed = {{ shapes = "x:32x8" }}
{tables}
"""


@pytest.fixture
def registry(tmp_path):
    mlp_model(tmp_path / "mlp.onnx")

    def make(defaults: str = "", model: str = "", tables: str = ""):
        return write_registry(tmp_path, BODY.format(defaults=defaults, model=model, tables=tables))

    return make


def checked(path):
    reg = load_registry(path)
    check_registry(reg, all_recipes(reg))


@pytest.mark.parametrize("kw, model, field, name", [
    ({"model": 'recipes = ["fp32", "fp61"]'}, "mlp", "recipes", "fp61"),
    ({"tables": '[models.mlp.known_failures]\nint8-foo = "why"'}, "mlp", "known_failures.int8-foo", "int8-foo"),
    ({"tables": '[models.mlp.budgets]\nfp17 = ["p99(rel_l2) <= 1%"]'}, "mlp", "budgets.fp17", "fp17"),
    ({"tables": '[[models.mlp.where]]\nbackends = ["ort_cpu"]\nknown_failures = { int9 = "why" }'}, "mlp",
     "where[0].known_failures.int9", "int9"),
    ({"tables": '[[models.mlp.where]]\nbackends = ["ort_cpu"]\nbudgets = { fp6 = ["p99(rel_l2) <= 1%"] }'}, "mlp",
     "where[0].budgets.fp6", "fp6"),
    ({"defaults": '[defaults.budgets]\nint4 = ["p99(rel_l2) <= 1%"]'}, None, "defaults.budgets.int4", "int4"),
    ({"defaults": 'perf_recipes = ["fp32", "fp8"]'}, None, "defaults.perf_recipes", "fp8"),
])
def test_a_recipe_name_that_names_no_recipe_is_refused_naming_model_and_field(registry, kw, model, field, name):
    with pytest.raises(RegistryError) as err:
        checked(registry(**kw))
    assert err.value.model == model and err.value.field == field
    assert f"unknown recipe {name!r}; known recipes: fp32, fp16, bf16, int8-minmax" in str(err.value)


def test_budgets_and_known_failures_may_name_a_recipe_kind(registry):
    checked(registry(tables='[models.mlp.known_failures]\nint8 = "why"\n[models.mlp.budgets]\nbf16 = '
                            '["p99(rel_l2) <= 3%"]\n[[models.mlp.where]]\nbackends = ["ort_cpu"]\n'
                            'known_failures = { int8-minmax-pc = "why", fp16 = "why" }'))


def test_the_bundled_registry_passes():
    reg = load_registry(FIXTURES / "models.toml")
    check_registry(reg, all_recipes(reg))


def session(path, tmp_path, **kw) -> HarnessSession:
    perf = kw.pop("perf", PerfSettings())
    return HarnessSession(Settings(registry=path, report_dir=tmp_path / "r", cache_dir=tmp_path / "c", perf=perf,
                                   **kw))


@pytest.mark.parametrize("kw, perf, message", [
    ({"profiles": ["nope"]}, False, "--profiles names nope, which none of the selected models (mlp) has; their "
     "profiles: dynamic, fixed"),
    ({"profiles": ["dynamic", "dynamc"]}, False, "--profiles names dynamc"),
    ({"recipes": ["fp32", "fp61"]}, False, "--recipes names unknown recipe(s) fp61; known: fp32, fp16"),
    ({"models": ["mlp", "resnet"]}, False, "--models names unknown model(s) resnet; the registry has mlp"),
    ({"perf": PerfSettings(batches=[100000])}, True, "--perf-batches 100000 fits no selected profile, so it "
     "would time nothing; the profiles' batch sizes: mlp dynamic 1-16; mlp fixed 32"),
    ({"perf": PerfSettings(batches=[8, 20], profiles=["dynamic"])}, True, "--perf-batches 20 fits no selected"),
    ({"perf": PerfSettings(profiles=["nope"])}, True, "--perf-profiles names nope"),
    ({"perf": PerfSettings(recipes=["fp61"])}, True, "--perf-recipes names unknown recipe(s) fp61"),
])
def test_an_option_that_selects_nothing_is_refused_naming_it(registry, tmp_path, kw, perf, message):
    hs = session(registry(), tmp_path, **kw)
    with pytest.raises(HarnessError, match=re.escape(message)):
        preflight(hs, perf=perf)


def test_perf_options_are_checked_only_when_perf_cases_can_run(registry, tmp_path):
    preflight(session(registry(), tmp_path, perf=PerfSettings(batches=[100000])), perf=False)
    preflight(session(registry(), tmp_path, perf=PerfSettings(batches=[1, 32])), perf=True)  # each fits a profile


def test_the_option_is_named_as_the_user_set_it(registry, tmp_path):
    hs = session(registry(), tmp_path, profiles=["nope"], sources={"profiles": "harness_profiles in pytest.ini"})
    with pytest.raises(HarnessError, match=r"^harness_profiles in pytest.ini names nope"):
        preflight(hs, perf=False)
