"""The TensorRT backend type-checked against TensorRT's published stubs (tensorrt_stubs).

The stubs (10.13) do not parse as published: parameters named ``in`` (a keyword) and a parameter without a
default after defaulted ones. The test repairs exactly those two things in a copy, runs mypy on the backend
with the copy on MYPYPATH, and requires no error in the backend's package; a deliberately misspelled call in a copy
of the backend must be caught, so the check cannot pass vacuously. docs/tensorrt-api.md lists every
TensorRT call the backend makes, with the API documentation for each, including those the 10.13 stubs lack.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.contract.api_names import repair_stub_text
from tests.helpers import ROOT

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None or importlib.util.find_spec("tensorrt_stubs") is None,
    reason="needs mypy and tensorrt_stubs (pip install mypy; pip install --no-deps tensorrt_stubs)")

BACKEND = ROOT / "harness" / "backends" / "tensorrt"  # the package: every module of it


def repaired_stubs(dest: Path) -> Path:
    files = [f for f in importlib.metadata.files("tensorrt_stubs") or [] if str(f).endswith(".pyi")]
    assert files, "tensorrt_stubs installs no .pyi files"
    for f in files:
        src = Path(f.locate())
        out = dest / str(f)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(repair_stub_text(src.read_text()))
    return dest


def mypy_errors(target: Path, stubs: Path) -> list[str]:
    env = {**os.environ, "MYPYPATH": str(stubs)}
    proc = subprocess.run([sys.executable, "-m", "mypy", "--check-untyped-defs", "--ignore-missing-imports",
                           "--follow-imports=silent", "--no-incremental", str(target)],
                          capture_output=True, text=True, cwd=target.parent.parent.parent, env=env)
    return [line for line in proc.stdout.splitlines() if line.startswith("harness/") and ": error:" in line]


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    return repaired_stubs(tmp_path_factory.mktemp("stubs"))


def test_the_backend_type_checks_against_the_tensorrt_stubs(stubs):
    assert mypy_errors(BACKEND, stubs) == []


def test_a_misspelled_tensorrt_call_is_caught(stubs, tmp_path):
    copy = tmp_path / "proj"
    shutil.copytree(ROOT / "harness", copy / "harness")
    builder = copy / "harness" / "backends" / "tensorrt" / "builder.py"
    builder.write_text(builder.read_text().replace("builder.create_network(", "builder.create_netwrk(", 1))
    errors = mypy_errors(copy / "harness" / "backends" / "tensorrt", stubs)
    assert any('"Builder" has no attribute "create_netwrk"' in e for e in errors), errors
