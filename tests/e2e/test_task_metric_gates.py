"""Task metrics in the gates: each catches damage that the generic errors let through.

Every damaged model is gated against its original (``reference = ...``) with budgets that hold the generic
error where an INT8 budget would, plus the task's own bound.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from harness.checks import AccuracyGateFailure, check_accuracy
from harness.finish import finish_run
from harness.results import run_rows
from harness.session import AccuracyCase, HarnessSession, Settings
from tests import models
from tests.helpers import write_registry

# the budget an INT8 recipe is typically held to, and the task's own
GENERIC = '"p99(rel_l2) <= 10%", "p1(cosine) >= 0.99"'

REGISTRY = f"""
[models.detector_degraded]
path = "map_degraded.onnx"
reference = "map.onnx"
recipes = ["fp32"]
[models.detector_degraded.inputs.image]
range = [-2, 2]
distribution = "smooth"
[models.detector_degraded.outputs.prob]
metrics = ["iou", "dice"]
threshold = 0.5
[models.detector_degraded.evaluation]
size = 16
[models.detector_degraded.profiles]
dynamic = {{ min = "image:1x1x32x32", opt = "image:4x1x32x32", max = "image:8x1x32x32" }}
[models.detector_degraded.budgets]
fp32 = ["p1(cosine) >= 0.99", "p1(iou) >= 0.75"]

[models.boxes_shifted]
path = "boxes_shifted.onnx"
reference = "boxes.onnx"
recipes = ["fp32"]
[models.boxes_shifted.inputs.x]
range = [-2, 2]
distribution = "normal"
[models.boxes_shifted.outputs.boxes]
metrics = ["abs_err", "abs_err_max"]
channel_axis = 2
channels = [0, 1, 2, 3]            # centre x, y, width, height, in pixels
[models.boxes_shifted.evaluation]
size = 16
[models.boxes_shifted.profiles]
dynamic = {{ min = "x:1x32", opt = "x:4x32", max = "x:8x32" }}
[models.boxes_shifted.budgets]
fp32 = [{GENERIC}, "p99(abs_err_max[boxes]) <= 4"]

[models.reader_noisy]
path = "ctc_noisy.onnx"
reference = "ctc.onnx"
recipes = ["fp32"]
[models.reader_noisy.inputs.x]
range = [-3, 3]
distribution = "normal"
[models.reader_noisy.outputs.probs]
class_axis = 2
metrics = ["ctc_exact"]
ctc_blank = 0
[models.reader_noisy.evaluation]
size = 32
[models.reader_noisy.profiles]
dynamic = {{ min = "x:1x24x16", opt = "x:8x24x16", max = "x:16x24x16" }}
[models.reader_noisy.budgets]
fp32 = [{GENERIC}, "mean(top1) >= 0.95", "mean(ctc_exact) >= 0.9"]

[models.classifier_noisy]
path = "clf_noisy.onnx"
reference = "clf.onnx"
recipes = ["fp32"]
[models.classifier_noisy.outputs.logits]
class_axis = 1
labels = "labels"
[models.classifier_noisy.evaluation]
samples = "clf.npz"
size = 256
[models.classifier_noisy.calibration]
size = 8
[models.classifier_noisy.profiles]
dynamic = {{ min = "x:1x16", opt = "x:16x16", max = "x:64x16" }}
[models.classifier_noisy.budgets]
fp32 = ["mean(label_top1) >= 99% of fp32"]

[models.classifier]
path = "clf.onnx"
recipes = ["fp16"]
[models.classifier.outputs.logits]
class_axis = 1
labels = "labels"
[models.classifier.evaluation]
samples = "clf.npz"
size = 256
[models.classifier.calibration]
size = 8
[models.classifier.profiles]
dynamic = {{ min = "x:1x16", opt = "x:16x16", max = "x:64x16" }}
[models.classifier.budgets]
fp16 = ["mean(label_top1) >= 99% of fp32"]
"""


@pytest.fixture(scope="module")
def hs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tasks")
    models.probability_map_model(d / "map.onnx")
    models.probability_map_model(d / "map_degraded.onnx", noise=0.05)
    models.probability_map_model(d / "map_dead.onnx", noise=0.05, scale=0.45)  # the same map, scaled under 0.5
    models.box_regression_model(d / "boxes.onnx")
    models.box_regression_model(d / "boxes_shifted.onnx", width_shift=40.0)
    models.ctc_sequence_model(d / "ctc.onnx")
    models.ctc_sequence_model(d / "ctc_noisy.onnx", noise=0.05)
    models.labelled_classifier_model(d / "clf.onnx")
    models.labelled_classifier_model(d / "clf_noisy.onnx", noise=0.6)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((264, 16)).astype(np.float32)
    import onnxruntime as ort

    truth = ort.InferenceSession(str(d / "clf.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    labels = truth.argmax(1)
    flip = rng.random(264) < 0.2  # the FP32 model is right on about 80 %
    labels[flip] = rng.integers(0, 10, int(flip.sum()))
    np.savez(d / "clf.npz", x=x, labels=labels)
    dead = REGISTRY.split("[models.boxes_shifted]")[0].replace("detector_degraded", "detector_dead").replace(
        "map_degraded.onnx", "map_dead.onnx")
    write_registry(d, REGISTRY + dead)
    s = HarnessSession(Settings(registry=d / "models.toml", report_dir=d / "reports", cache_dir=d / "cache"))
    yield s
    s.close()


def run(hs: HarnessSession, model: str, recipe: str = "fp32") -> tuple[dict, bool]:
    try:
        return check_accuracy(hs, AccuracyCase(model, "ort_cpu", recipe, "dynamic")).to_dict(), True
    except AccuracyGateFailure:
        rows = [r for r in run_rows(hs.settings.report_dir, hs.run_id) if r.model == model and r.recipe == recipe]
        return rows[-1].to_dict(), False


def _budget(row: dict, text: str) -> dict:
    return next(b for b in row["budgets"] if b["budget"] == text)


def test_a_dead_detector_has_the_degraded_ones_cosine_and_no_overlap(hs):
    degraded, degraded_ok = run(hs, "detector_degraded")
    dead, dead_ok = run(hs, "detector_dead")
    # cosine cannot tell them apart: the dead map is the degraded one scaled below the threshold
    assert dead["metrics"]["cosine.min"] == pytest.approx(degraded["metrics"]["cosine.min"], abs=1e-6)
    assert _budget(dead, "p1(cosine) >= 0.99")["passed"] and _budget(degraded, "p1(cosine) >= 0.99")["passed"]
    # the mask IoU can
    assert degraded_ok and degraded["metrics"]["iou.p1"] > 0.75
    assert not dead_ok and dead["metrics"]["iou.mean"] == 0.0 and dead["metrics"]["dice.mean"] == 0.0
    assert "p1(iou) >= 0.75: measured 0" in dead["message"]


def test_boxes_off_by_40_pixels_pass_the_generic_budget_and_fail_in_pixels(hs):
    row, ok = run(hs, "boxes_shifted")
    assert not ok
    passed = {b["budget"]: b["passed"] for b in row["budgets"]}
    assert passed == {"p99(rel_l2) <= 10%": True, "p1(cosine) >= 0.99": True, "p99(abs_err_max[boxes]) <= 4": False}
    assert row["metrics"]["abs_err_max.p99"] == pytest.approx(40.0, rel=1e-4)
    assert row["metrics"]["abs_err.mean"] == pytest.approx(10.0, rel=1e-4)  # one of four coordinates off by 40


def test_a_reader_that_misreads_a_few_steps_keeps_its_step_agreement_and_loses_lines(hs):
    row, ok = run(hs, "reader_noisy")
    assert not ok
    passed = {b["budget"]: b["passed"] for b in row["budgets"]}
    assert passed["mean(top1) >= 0.95"] and passed["p1(cosine) >= 0.99"] and not passed["mean(ctc_exact) >= 0.9"]
    assert row["metrics"]["top1.mean"] > 0.95 and row["metrics"]["ctc_exact.mean"] < 0.8


def test_the_mlperf_form_against_labels(hs):
    import onnxruntime as ort

    spec = hs.model("classifier_noisy")
    data = np.load(spec.samples.path)
    x, labels = data["x"][:256], data["labels"][:256]
    accuracy = {}
    for name in ("clf.onnx", "clf_noisy.onnx"):
        logits = ort.InferenceSession(str(spec.path.parent / name), providers=["CPUExecutionProvider"]).run(
            None, {"x": x})[0]
        accuracy[name] = float((logits.argmax(1) == labels).mean())
    noisy, noisy_ok = run(hs, "classifier_noisy")
    assert noisy["fp32_label_metrics"]["label_top1.mean"] == pytest.approx(accuracy["clf.onnx"])
    assert noisy["metrics"]["label_top1.mean"] == pytest.approx(accuracy["clf_noisy.onnx"])
    assert accuracy["clf_noisy.onnx"] < 0.99 * accuracy["clf.onnx"] and not noisy_ok
    budget = _budget(noisy, "mean(label_top1) >= 99% of fp32")
    assert budget["fp32"] == pytest.approx(accuracy["clf.onnx"]) and not budget["passed"]
    fp16, fp16_ok = run(hs, "classifier", "fp16")
    assert fp16_ok and _budget(fp16, "mean(label_top1) >= 99% of fp32")["passed"]


def test_the_report_shows_task_metrics(hs):
    for model in ("detector_degraded", "reader_noisy"):
        run(hs, model)
    hs.close()
    finish_run(hs)
    report = (hs.settings.report_dir / "REPORT.md").read_text()
    assert re.search(r"\| task metrics +\|", report) and "iou p1 0." in report and "ctc_exact mean 0." in report
    assert "label_top1 mean 0." in report and "(fp32 0." in report
