"""Helpers for end-to-end runs of the plugin in a separate pytest process (pytester)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT


class Project:
    """A throwaway project folder with the gate suites and the plugin, run in a subprocess."""

    def __init__(self, pytester: pytest.Pytester, cache: Path):
        self.pytester = pytester
        self.cache = cache
        self.path = pytester.path
        gates = self.path / "gates"
        gates.mkdir()
        for f in (ROOT / "tests" / "gates").glob("test_*.py"):
            shutil.copy(f, gates / f.name)
        pytester.makeconftest('pytest_plugins = ["harness.plugin"]\n')
        pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")

    def argv(self, *args: str, registry: Path | None = None, report: str = "reports") -> list[str]:
        return ["gates", f"--report-dir={report}", f"--engine-cache={self.cache}",
                f"--registry={registry or ROOT / 'fixtures' / 'models.toml'}", *args]

    def run(self, *args: str, registry: Path | None = None, report: str = "reports") -> pytest.RunResult:
        return self.pytester.runpytest_subprocess(*self.argv(*args, registry=registry, report=report))

    def start(self, *args: str, report: str = "reports") -> subprocess.Popen[bytes]:
        """The same run in the background (to be killed midway): output goes to ``<report>.log``."""
        with open(self.path / f"{report}.log", "wb") as log:  # the child keeps its own copy of the handle
            return subprocess.Popen([sys.executable, "-m", "pytest", *self.argv(*args, report=report)],
                                    cwd=self.path, stdout=log, stderr=subprocess.STDOUT)

    def results(self, report: str = "reports") -> list[dict]:
        return json.loads((self.path / report / "results.json").read_text())["rows"]

    def report(self, report: str = "reports") -> str:
        return (self.path / report / "REPORT.md").read_text()


@pytest.fixture
def project(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Project:
    # the subprocess imports the harness from this checkout, installed or not
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return Project(pytester, tmp_path_factory.mktemp("cache"))
