"""``pytest --doctor``: at the end of a session (on the controller, under xdist too) the precision doctor examines
the accuracy cases that failed; its findings go to the terminal summary, REPORT.md and results.json."""

from __future__ import annotations

import json

from tests.e2e.conftest import Project
from tests.helpers import write_registry
from tests.models import fp16_range_model

REGISTRY = """
[models.range]
path = "range.onnx"
recipes = ["fp32", "fp16"]
[models.range.inputs.x]
range = [-1.0, 1.0]
[models.range.evaluation]
size = 32
[models.range.profiles]
dynamic = { min = "x:1x16", opt = "x:8x16", max = "x:32x16" }
[models.range.budgets]
fp16 = ["p99(rel_l2) <= 1%"]
"""


def test_doctor_examines_the_failed_cases_at_the_end_of_the_session(project: Project) -> None:
    fp16_range_model(project.path / "range.onnx")
    registry = write_registry(project.path, REGISTRY)
    result = project.run("-m", "accuracy", "-n", "2", "--doctor", "--doctor-max-minutes", "3",
                         "--perf-duration", "0.1", registry=registry)
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "doctor range-ort_cpu-fp16-dynamic: searching 4 candidate nodes (most sensitive: to_units" in out
    assert "doctor range-ort_cpu-fp16-dynamic: fixed; error passes 0.01 first at to_units (Div)" in out
    assert "keep 1 of 4 nodes in FP32: to_units" in out
    rows = project.results()
    doctor = [r for r in rows if r["type"] == "doctor"]
    assert len(doctor) == 1 and doctor[0]["status"] == "fixed" and doctor[0]["keep_fp32"] == ["to_units"]
    assert doctor[0]["worker"] == "main"  # the controller's
    report = project.report()
    assert "## Precision doctor" in report and "### range-ort_cpu-fp16-dynamic: fixed" in report
    toml = (project.path / "reports" / "doctor" / "range-ort_cpu-fp16-dynamic.toml").read_text()
    assert "[recipes.range-fp16-doctor]" in toml and '"to_units"' in toml
    # without --doctor nothing is examined
    again = project.run("-m", "accuracy", registry=registry, report="plain")
    again.assert_outcomes(passed=1, failed=1)
    assert "doctor range" not in again.stdout.str()
    assert not any(r["type"] == "doctor" for r in json.loads((project.path / "plain" / "results.json").read_text())["rows"])
