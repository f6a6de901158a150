"""Collection policy: which harness cases a run asks for, where the registry file is collected, and which option
values pytest would take for test paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.collect import collection_args, names_marker, selects
from harness.pytest_setup import separate_values


@pytest.mark.parametrize("expr, perf, build", [
    ("", False, False),
    ("accuracy", False, False),
    ("perf", True, False),
    ("not perf", False, False),
    ("accuracy or build", False, True),
    ("perf and not gpu", True, False),
    ("perf and gpu", True, False),  # a perf case on a GPU backend carries both marks
    ("not accuracy", False, False),  # names neither: perf and build are never run by accident
    ("perfect", False, False),
])
def test_perf_and_build_cases_run_when_the_expression_names_and_selects_them(pytester, expr, perf, build):
    config = pytester.parseconfig("-m", expr) if expr else pytester.parseconfig()
    assert (selects(config, "perf"), selects(config, "build")) == (perf, build)


def test_names_marker_matches_whole_names():
    assert names_marker("perf or build", "build") and not names_marker("rebuild", "build")
    assert not names_marker("perf.x", "perf")


def test_the_registry_follows_the_default_paths_and_is_left_alone_when_paths_are_named(pytester):
    pytester.makeini("[pytest]\ntestpaths = tests\n")
    (pytester.path / "tests").mkdir()
    registry = pytester.path / "models" / "registry.toml"
    inside = pytester.path / "tests" / "registry.toml"
    config = pytester.parseconfig()
    assert collection_args(config, registry, gates_only=False) == ["tests", str(registry)]
    assert collection_args(config, inside, gates_only=False) is None  # pytest walks to it
    assert collection_args(config, registry, gates_only=True) == [str(registry)]
    config = pytester.parseconfig("tests")
    assert collection_args(config, registry, gates_only=False) is None


def test_option_values_pytest_would_take_for_test_paths(tmp_path):
    existing = str(tmp_path)
    args = ["-m", "accuracy", "--report-dir", existing, "--engine-cache=" + existing, "--models", "mlp",
            "--baseline", str(tmp_path / "missing.json"), "tests", "--", "--registry", existing]
    assert separate_values(args) == [("--report-dir", existing)]
    assert separate_values(["--registry", str(Path(__file__))]) == [("--registry", str(Path(__file__)))]
