"""A user's own repository: the package installed, their model and registry, ``pytest`` run there.

Each test makes a fresh project folder outside this checkout (a small model built with onnx.helper, a
registry, a ``pyproject.toml`` with harness_* settings and a unit test of the user's own) and runs pytest
there in a subprocess, with nothing of this checkout on ``sys.path`` but the installed package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ROOT, mlp_model

pytestmark = pytest.mark.skipif(
    not any(ep.value == "harness.plugin" for ep in metadata.entry_points(group="pytest11")),
    reason="the package is not installed (pip install -e .): its pytest11 entry point is what a user gets")

REGISTRY = """
[models.mlp]
path = "mlp.onnx"
recipes = ["fp32", "fp16"]
shapes = ["opt"]
[models.mlp.inputs.x]
range = [-1, 1]
[models.mlp.evaluation]
size = 16
[models.mlp.profiles]
dynamic = { min = "x:1x8", opt = "x:4x8", max = "x:16x8" }
[models.mlp.budgets]
fp32 = ["p99(rel_l2) <= 1e-5"]
fp16 = ["p99(rel_l2) <= 1%"]
"""

PYPROJECT = """
[project]
name = "their-models"
version = "1.0"

[tool.pytest.ini_options]
testpaths = ["tests"]
harness_registry = "models/registry.toml"
harness_report_dir = "build/reports"
harness_engine_cache = "build/cache"
harness_backends = "ort_cpu"
"""


class UserProject:
    def __init__(self, folder: Path):
        self.path = folder
        models = folder / "models"
        models.mkdir()
        mlp_model(models / "mlp.onnx")
        self.registry = models / "registry.toml"
        self.registry.write_text(REGISTRY)
        (folder / "pyproject.toml").write_text(PYPROJECT)
        (folder / "tests").mkdir()
        (folder / "tests" / "test_theirs.py").write_text("def test_their_own_code():\n    assert 1 + 1 == 2\n")
        # the environment a user has: no PYTHONPATH reaching into this checkout
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
        self.env["PYTHONDONTWRITEBYTECODE"] = "1"

    def run(self, *args: str, module: str = "pytest", cwd: Path | None = None) -> subprocess.CompletedProcess:
        extra = ["-p", "no:cacheprovider"] if module == "pytest" else []
        return subprocess.run([sys.executable, "-m", module, *extra, *args], cwd=cwd or self.path, env=self.env,
                              capture_output=True, text=True, timeout=600)

    def rows(self, report: Path | None = None) -> list[dict]:
        folder = report or self.path / "build" / "reports"
        return json.loads((folder / "results.json").read_text())["rows"]

    def edit_registry(self, old: str, new: str) -> None:
        text = self.registry.read_text()
        assert old in text
        self.registry.write_text(text.replace(old, new))


@pytest.fixture
def project(tmp_path_factory: pytest.TempPathFactory) -> UserProject:
    folder = tmp_path_factory.mktemp("their-repo")
    assert ROOT not in folder.parents
    return UserProject(folder)


def out(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def test_the_environment_reaches_the_harness_only_through_the_installed_package(project):
    proc = subprocess.run([sys.executable, "-c", "import json, sys, harness; print(json.dumps(sys.path))"],
                          cwd=project.path, env=project.env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert str(ROOT) not in json.loads(proc.stdout)


def test_pytest_in_a_users_folder_runs_their_tests_and_the_gates_and_reports_there(project):
    proc = project.run("-v")
    assert proc.returncode == 0, out(proc)
    text = out(proc)
    assert f"rootdir: {project.path}" in text and "configfile: pyproject.toml" in text
    for case in ("test_accuracy[mlp-ort_cpu-fp32-dynamic]", "test_accuracy[mlp-ort_cpu-fp16-dynamic]"):
        assert f"models/registry.toml::{case} PASSED" in text
    assert "tests/test_theirs.py::test_their_own_code PASSED" in text
    for case in ("test_consistency[mlp-ort_cpu-fp32-dynamic]", "test_determinism[mlp-ort_cpu-fp16-dynamic]"):
        assert f"models/registry.toml::{case} PASSED" in text  # the deployment conditions' gates too
    assert "7 passed" in text and "deselected" not in text  # perf and build cases are not even collected
    report = project.path / "build" / "reports"
    assert f"report: {report / 'REPORT.md'}" in text
    rows = project.rows()
    assert {(r["type"], r["recipe"], r["status"]) for r in rows} == {
        (t, recipe, "pass") for t in ("accuracy", "selfcheck") for recipe in ("fp32", "fp16")}
    assert "### mlp" in (report / "REPORT.md").read_text()
    assert list((project.path / "build" / "cache" / "engines" / "mlp" / "ort_cpu").iterdir())

    # the perf sweep and the build cases, when asked for, land in the same report
    proc = project.run("-m", "perf", "--perf-modes=serial", "--perf-duration=0.05", "--perf-warmup=0.01", "-q")
    assert proc.returncode == 0, out(proc)
    proc = project.run("-m", "build", "-q")
    assert proc.returncode == 0, out(proc)
    types = [r["type"] for r in project.rows()]
    assert sorted(set(types)) == ["accuracy", "build", "perf", "selfcheck"] and types.count("build") == 2


def test_harness_run_takes_the_registry_and_the_selections_from_the_users_folder(project):
    other = project.path / "elsewhere"
    proc = project.run("run", "--accuracy-only", "--registry", "models/registry.toml", "--recipes", "fp32",
                       "--eval-size", "8", "--report-dir", str(other), module="harness")
    assert proc.returncode == 0, out(proc)
    # the gates alone: accuracy, batch consistency and determinism
    assert "3 passed" in proc.stdout and "test_their_own_code" not in proc.stdout
    (row,) = [r for r in project.rows(other) if r["type"] == "accuracy"]
    assert (row["recipe"], row["samples"]) == ("fp32", 8)
    # the ini file's settings when none are given
    proc = project.run("run", "--perf-only", "--perf-modes", "serial", "--perf-batches", "1,16",
                       "--perf-duration", "0.05", "--perf-warmup", "0.01", module="harness")
    assert proc.returncode == 0, out(proc)
    assert {(r["type"], r["batch"]) for r in project.rows()} == {("perf", b) for b in (1, 16)}
    helptext = project.run("run", "--help", module="harness").stdout
    for flag in ("--registry PATH", "--models A,B", "--backends A,B", "--recipes A,B", "--profiles A,B",
                 "--eval-size N", "--report-dir PATH", "--engine-cache PATH", "--perf-batches N,M",
                 "--perf-concurrency N,M", "--perf-modes A,B", "--perf-duration X", "--accuracy-only"):
        assert flag in helptext, flag


@pytest.mark.parametrize("form", ["space", "equals"])
@pytest.mark.parametrize("option", ["--registry", "--report-dir", "--engine-cache", "--baseline"])
def test_each_path_option_works_in_both_forms_without_moving_the_rootdir(project, tmp_path_factory, option, form):
    # a value outside the project that exists: pytest alone would root the run there, without the ini file
    outside = tmp_path_factory.mktemp("outside")
    value = {"--registry": outside / "registry.toml", "--report-dir": outside, "--engine-cache": outside,
             "--baseline": outside / "base.json"}[option]
    if option == "--registry":
        mlp_model(outside / "mlp.onnx")
        value.write_text(REGISTRY.replace("models.mlp", "models.other"))  # another model: which registry ran
    if option == "--baseline":
        value.write_text(json.dumps({"rows": []}))
    given = [option, str(value)] if form == "space" else [f"{option}={value}"]
    proc = project.run(*given, "-m", "accuracy", "--recipes=fp32")
    text = out(proc)
    assert proc.returncode == 0, text
    assert f"rootdir: {project.path}" in text and "configfile: pyproject.toml" in text
    assert ("is an option's value, not a test path" in text) == (form == "space")
    # the accuracy, consistency and determinism gates; their unit test too: the ini file's testpaths were read
    assert "3 passed, 1 deselected" in text
    report = value if option == "--report-dir" else project.path / "build" / "reports"
    (row,) = [r for r in project.rows(report) if r["type"] == "accuracy"]
    assert row["id"] == ("other" if option == "--registry" else "mlp") + "-ort_cpu-fp32-dynamic"
    if option == "--engine-cache":
        assert list((outside / "engines" / "mlp" / "ort_cpu").iterdir())
    if option == "--baseline":
        assert "## Comparison with the baseline" in (report / "REPORT.md").read_text()


def test_a_suite_of_ones_own_gets_the_cases_and_the_registry_does_not_repeat_them(project):
    (project.path / "tests" / "test_gates.py").write_text(
        "def test_accuracy(accuracy_case, accuracy_check):\n    accuracy_check(accuracy_case)\n")
    for args in ((), (".",)):  # the registry collected after tests/, and (pytest .) before it
        proc = project.run("-v", *args)
        text = out(proc)
        assert proc.returncode == 0, text
        assert text.count("tests/test_gates.py::test_accuracy[") == 2
        assert "registry.toml::test_accuracy" not in text.replace("deselected", "")


def _samples(project: UserProject, kind: str) -> None:
    path = project.path / "models" / "s.npz"
    if kind == "pickled":
        np.savez(path, x=np.empty(4, dtype=object))
    else:
        path.write_text("x\n0.5\n")
    project.edit_registry("size = 16", 'size = 16\nsamples = "s.npz"')


BAD_INPUTS = {
    "--profiles nope": (["--profiles", "nope"], None,
                        "--profiles names nope, which none of the selected models (mlp) has; their profiles: dynamic"),
    "--perf-batches 0": (["-m", "perf", "--perf-batches", "0"], None,
                         "--perf-batches: cannot use '0': give positive integers separated by commas"),
    "--perf-batches -4": (["-m", "perf", "--perf-batches=-4"], None, "--perf-batches: cannot use '-4'"),
    "--perf-batches 100000": (["-m", "perf", "--perf-batches", "100000"], None,
                              "--perf-batches 100000 fits no selected profile, so it would time nothing; the "
                              "profiles' batch sizes: mlp dynamic 1-16"),
    "--perf-concurrency 0": (["-m", "perf", "--perf-concurrency", "0"], None, "--perf-concurrency: cannot use '0'"),
    "--backends foo": (["--backends", "foo"], None, "--backends: cannot use 'foo': foo is not one of auto, ort_cpu"),
    "--perf-latency-bound": (["-m", "perf", "--perf-latency-bound", "p99<20ms"], None,
                             "--perf-latency-bound: cannot use 'p99<20ms': give a percentile and a time, e.g. p99<=20ms"),
    "--server-rates fast": (["-m", "perf", "--perf-modes", "server", "--server-rates", "90%,fast"], None,
                            "--server-rates: cannot use 'fast': give requests per second (200) or a share of the "
                            "measured capacity (90%)"),
    "--shapes wide": (["--shapes", "opt,wide"], None,
                      "--shapes: no selected profile has the shape(s) wide; give min, opt, max, extra"),
    "extra shape": ([], lambda p: p.edit_registry('max = "x:16x8" }', 'max = "x:16x8", extra = { big = "x:64x8" } }'),
                    "model 'mlp', field 'profiles.dynamic.extra.big': "),
    "ini value": ([], lambda p: (p.path / "pyproject.toml").write_text(PYPROJECT + 'harness_eval_size = "none"\n'),
                  "harness_eval_size in pyproject.toml: cannot use 'none': give a positive integer"),
    "unknown field": ([], lambda p: p.edit_registry("range = [-1, 1]", "range = [-1, 1]\nrnage = 2"),
                      "registry.toml: model 'mlp', field 'inputs.x.rnage': unknown field"),
    "budget output": ([], lambda p: p.edit_registry('fp16 = ["p99(rel_l2)', 'fp16 = ["p99(rel_l2[logits])'),
                      "model 'mlp', field 'budgets.fp16': budget 'p99(rel_l2[logits]) <= 1%' names output 'logits'; "
                      "the model's outputs are y"),
    "onnx.checker": ([], lambda p: _break_model(p.path / "models" / "mlp.onnx"),
                     "model 'mlp', field 'path': "),
    "unknown recipe": ([], lambda p: p.edit_registry('"fp32", "fp16"', '"fp32", "fp61"'),
                       "model 'mlp', field 'recipes': unknown recipe 'fp61'; known recipes: fp32"),
    "known_failures": ([], lambda p: p.edit_registry("[models.mlp.budgets]", '[models.mlp.known_failures]\n'
                                                     'int8-foo = "saturates"\n[models.mlp.budgets]'),
                       "model 'mlp', field 'known_failures.int8-foo': unknown recipe 'int8-foo'"),
    "pickled .npz": ([], lambda p: _samples(p, "pickled"),
                     "field 'evaluation.samples': {models}/s.npz: array 'x' holds Python objects (a pickle)"),
    "non-zip .npz": ([], lambda p: _samples(p, "text"),
                     "field 'evaluation.samples': {models}/s.npz is not a .npz file (not a zip archive)"),
}


def _break_model(path: Path) -> None:
    import onnx
    from onnx import helper

    m = onnx.load(str(path))
    m.graph.node.append(helper.make_node("Relu", ["nowhere"], ["z"]))
    path.write_bytes(m.SerializeToString())


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_a_bad_input_is_one_line_before_anything_is_collected(project, name):
    args, change, expected = BAD_INPUTS[name]
    if change is not None:
        change(project)
    proc = project.run(*args)
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, out(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR: "), proc.stderr
    assert expected.format(models=project.path / "models") in lines[0]
    assert "collected" not in proc.stdout and not (project.path / "build").exists()


def test_without_a_registry_the_plugin_stays_out_of_the_way(project):
    (project.path / "pyproject.toml").write_text('[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
    proc = project.run("-q")
    assert proc.returncode == 0 and "1 passed" in proc.stdout, out(proc)
    assert "harness" not in proc.stdout and not (project.path / "reports").exists()
    proc = project.run("--gates-only")
    assert proc.returncode == 4 and "--gates-only: no model registry: name one with harness_registry" in proc.stderr
