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

# the gates of deployment conditions (issue 16): batch consistency and determinism, collected only by the tests
# about them (``deployment_project``), which also run accuracy gates at every shape of a profile; the others
# gate the opt shape, as they were written for, so that their case counts say what they test
DEPLOYMENT_GATES = ("test_consistency.py", "test_determinism.py")


class Project:
    """A throwaway project folder with the gate suites and the plugin, run in a subprocess."""

    def __init__(self, pytester: pytest.Pytester, cache: Path, *, deployment: bool = False):
        self.pytester = pytester
        self.cache = cache
        self.path = pytester.path
        self.deployment = deployment
        gates = self.path / "gates"
        gates.mkdir()
        for f in (ROOT / "tests" / "gates").glob("test_*.py"):
            if deployment or f.name not in DEPLOYMENT_GATES:
                shutil.copy(f, gates / f.name)
        pytester.makeconftest('pytest_plugins = ["harness.plugin"]\n')
        pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")

    def argv(self, *args: str, registry: Path | None = None, report: str = "reports") -> list[str]:
        return ["gates", f"--report-dir={report}", f"--engine-cache={self.cache}",
                f"--registry={registry or ROOT / 'fixtures' / 'models.toml'}",
                *([] if self.deployment else ["--shapes=opt"]), *args]

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


@pytest.fixture
def deployment_project(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory,
                       monkeypatch: pytest.MonkeyPatch) -> Project:
    """A project with every gate suite, the deployment conditions' included, at every shape of the profiles."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return Project(pytester, tmp_path_factory.mktemp("cache"), deployment=True)
