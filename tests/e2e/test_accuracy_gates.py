"""End to end on ONNX Runtime CPU: the gate suite run as users run it, in a separate pytest process."""

import re

from harness.results import comparable
from tests.helpers import FIXTURES, copy_fixture_model, perturb_initializer, write_registry


def test_serial_and_two_workers_give_the_same_report_rows(project):
    select = ("-m", "accuracy", "--eval-size=8", "--models=classifier,segmenter,ranker,encoder",
              "--recipes=fp32,fp16")
    serial = project.run(*select, report="serial")
    serial.assert_outcomes(passed=16)
    parallel = project.run(*select, "-n", "2", report="parallel")
    parallel.assert_outcomes(passed=16)
    a = [comparable(r) for r in project.results("serial")]
    b = [comparable(r) for r in project.results("parallel")]
    assert len(a) == 16 and a == b
    assert {r["worker"] for r in project.results("parallel")} == {"gw0", "gw1"}
    # the accuracy tables are the same too (the artifacts' cache column differs: the second run hit)
    def tables(text):
        body = text.split("## Accuracy", 1)[1].split("## Environment")[0]
        return re.sub(r"<details>.*?</details>", "", body, flags=re.S)

    assert tables(project.report("serial")) == tables(project.report("parallel"))
    assert (project.path / "serial" / "plots" / "classifier-accuracy.png").is_file()
    assert re.search(r"\| ort_cpu +\| fp32 +\| dynamic +\| – +\| 8 ", project.report("serial"))


def test_a_perturbed_weight_fails_its_gate_naming_the_worst_samples(project, tmp_path):
    original = copy_fixture_model("classifier", tmp_path)
    perturb_initializer(original, tmp_path / "broken.onnx", "w_4", (3, 0, 1, 1), 40.0)
    registry = write_registry(tmp_path, """
        [models.classifier]
        path = "broken.onnx"
        reference = "classifier.onnx"
        recipes = ["fp32"]
        [models.classifier.inputs.image]
        range = [-2.1, 2.6]
        distribution = "smooth"
        [models.classifier.outputs.logits]
        class_axis = 1
        [models.classifier.evaluation]
        size = 16
        [models.classifier.profiles]
        dynamic = { min = "image:1x3x224x224", opt = "image:4x3x224x224", max = "image:8x3x224x224" }
        [models.classifier.budgets]
        fp32 = ["p99(rel_l2) <= 1e-5"]
        """)
    result = project.run("-m", "accuracy", registry=registry)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "accuracy gate failed for classifier-ort_cpu-fp32-dynamic over 16 samples" in out
    m = re.search(r"p99\(rel_l2\) <= 1e-5: measured ([0-9.e+-]+) \(bound <= 1.000e-05\)", out)
    assert m and float(m.group(1)) > 1e-3, out
    worst = re.search(r"worst samples: (#\d+ \([0-9.e+-]+\)(, )?){5}", out)
    assert worst, out
    assert "report: " in out and "REPORT.md" in out
    row = project.results()[0]
    assert row["status"] == "fail" and row["metrics"]["rel_l2.p99"] > 1e-3
    assert "**FAIL**" in project.report() and "## Failures" in project.report()


def test_rows_already_written_survive_and_the_report_can_be_rerendered(project, tmp_path):
    project.run("-m", "accuracy", "--eval-size=4", "--models=ranker", "--recipes=fp32").assert_outcomes(passed=2)
    (project.path / "reports" / "results.json").unlink()
    (project.path / "reports" / "REPORT.md").unlink()
    from harness.cli import main

    assert main(["report", str(project.path / "reports")]) == 0
    assert len(project.results()) == 2
    assert "### ranker" in project.report()


def test_the_bundled_model_files_regenerate_byte_for_byte():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(FIXTURES / "make_models.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok ") == 5


NO_OP_REGISTRY = """
[models.all_in_if]
path = "all_in_if.onnx"
recipes = ["fp32", "int8-minmax"]
[models.all_in_if.inputs.sr]
value = 16000
[models.all_in_if.evaluation]
size = 4
[models.all_in_if.profiles]
dynamic = { min = "x:1x16", opt = "x:2x16", max = "x:4x16" }
[models.all_in_if.budgets]
fp32 = []
"""


def test_no_ops_skip_with_the_reason_and_unbudgeted_cases_are_named(project, tmp_path):
    from tests.models import whole_network_in_if_model

    whole_network_in_if_model(tmp_path / "all_in_if.onnx")
    registry = write_registry(tmp_path, NO_OP_REGISTRY)
    result = project.run("-m", "accuracy", "-rs", registry=registry)
    result.assert_outcomes(passed=1, skipped=1)
    out = result.stdout.str()
    assert "all_in_if-ort_cpu-int8-minmax-dynamic: no-op: the int8 recipe quantized nothing in 'all_in_if'" in out
    assert "no-op: 1 case(s) whose recipe converted or quantized nothing (no pass of that precision; skipped):" in out
    assert "unbudgeted: 1 case(s) passed with no budget; --strict-budgets fails them: all_in_if/fp32" in out
    report = project.report()
    assert "no-op (changed nothing)" in report and "## Recipes that changed nothing (no-op)" in report
    assert "no budget" in report
    strict = project.run("-m", "accuracy", "--strict-budgets", registry=registry, report="strict")
    strict.assert_outcomes(failed=1, skipped=1)
    assert "no budget applies to recipe 'fp32' (kind fp32) of model 'all_in_if'" in strict.stdout.str()
    assert "unbudgeted: 1 case(s) failed (--strict-budgets): all_in_if/fp32" in strict.stdout.str()
    project.pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\nharness_strict_budgets = true\n")
    project.run("-m", "accuracy", registry=registry, report="ini").assert_outcomes(failed=1, skipped=1)


def test_what_the_run_left_out_is_named_once_per_backend_and_model(project, tmp_path):
    """Backends this machine cannot run get no cases under the default `auto`; a model whose package is missing
    gets none either; the terminal summary names each once, with the reason (not a skip per case)."""
    from harness.backends import BACKENDS, get_backend

    copy_fixture_model("ranker", tmp_path)
    registry = write_registry(tmp_path, """
        [models.ranker]
        path = "ranker.onnx"
        [models.ranker.inputs.ids]
        range = [0, 7999]
        [models.ranker.evaluation]
        size = 4
        [models.ranker.profiles]
        dynamic = { min = "ids:1x8,dense:1x13", opt = "ids:4x8,dense:4x13", max = "ids:8x8,dense:8x13" }
        [models.shipped]
        package = "no_such_package_ships_this"
        path = "models/net.onnx"
        """)
    result = project.run("-m", "accuracy", "--recipes=fp32", registry=registry)
    result.assert_outcomes(passed=1)  # ranker on ort_cpu; nothing generated for the rest, nothing skipped
    out = result.stdout.str()
    assert out.count("not run here: model shipped: no cases: its package 'no_such_package_ships_this' is not "
                     "installed") == 1
    for name in BACKENDS:
        reason = get_backend(name).unavailable()
        assert (f"not run here: backend {name}:" in out) == (reason is not None), name
    # a recipe the backend has no kernels for generates no cases either: one line, no skip per case
    result = project.run("-m", "accuracy", "--recipes=fp32,bf16", registry=registry)
    result.assert_outcomes(passed=1)
    assert result.stdout.str().count("not run here: bf16 recipes on ort_cpu: no cases: ONNX Runtime's CPU provider "
                                     "has no bfloat16 kernels") == 1
    # a backend the user names gets every case, the ones it cannot run skipped with the reason
    named = project.run("-m", "accuracy", "--recipes=fp32,bf16", "--backends=ort_cpu", "-rs", registry=registry)
    named.assert_outcomes(passed=1, skipped=1)
    assert "ort_cpu cannot run bf16" in named.stdout.str()
