"""What the INT8 gates teach, measured on ONNX Runtime CPU and shown in the report."""

from __future__ import annotations

import importlib.util

import pytest

from harness.checks import AccuracyGateFailure, check_accuracy
from harness.finish import finish_run
from harness.rows import AccuracyRow, AnyRow
from harness.session import AccuracyCase, HarnessSession, Settings
from tests.helpers import FIXTURES


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("lessons")
    hs = HarnessSession(Settings(registry=FIXTURES / "models.toml", report_dir=root / "reports",
                                 cache_dir=root / "cache"))
    yield hs
    hs.close()


def run(hs: HarnessSession, model: str, recipe: str) -> tuple[AccuracyRow, bool]:
    """The case's row, and whether its gate passed."""
    try:
        return check_accuracy(hs, AccuracyCase(model, "ort_cpu", recipe, "dynamic")), True
    except AccuracyGateFailure:
        rows = [r for r in _rows(hs) if r.recipe == recipe and r.model == model]
        assert isinstance(rows[-1], AccuracyRow)
        return rows[-1], False


def _rows(hs: HarnessSession) -> list[AnyRow]:
    from harness.results import run_rows

    return run_rows(hs.settings.report_dir, hs.run_id)


def test_calibrating_on_real_traffic_beats_a_mismatched_distribution(session):
    real, real_ok = run(session, "ranker", "int8-minmax")
    generated, generated_ok = run(session, "ranker", "int8-minmax-generated")
    assert real.recipe_info["calibration_source"] == "real"
    assert generated.recipe_info["calibration_source"] == "generated"
    assert real_ok and not generated_ok
    r, g = real.metrics, generated.metrics
    assert r["rel_l2.mean"] * 1.5 < g["rel_l2.mean"]
    assert r["rel_l2.share_over_0.01"] < g["rel_l2.share_over_0.01"]
    assert generated.status == "known failure"
    session.close()
    finish_run(session)
    report = (session.settings.report_dir / "REPORT.md").read_text()
    assert "minmax, per-tensor, 256 real" in report and "minmax, per-tensor, 256 generated" in report
    assert "fails (known)" in report and "instead of real traffic" in report


@pytest.mark.skipif(importlib.util.find_spec("rapidocr_onnxruntime") is None,
                    reason="rapidocr_onnxruntime (extra 'ocr') is not installed: the OCR models ship in it")
def test_per_tensor_int8_breaks_the_trained_recognizer_and_per_channel_passes(session):
    per_tensor, per_tensor_ok = run(session, "ocr_rec", "int8-minmax")
    per_channel, per_channel_ok = run(session, "ocr_rec", "int8-minmax-pc")
    assert per_channel_ok and not per_tensor_ok
    assert per_tensor.recipe_info["opset"] == 12 and per_tensor.recipe_info["opset_upgraded_to"] == 13
    assert per_channel.metrics["top1.mean"] > per_tensor.metrics["top1.mean"] + 0.1
