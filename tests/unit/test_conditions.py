"""Expectations scoped to where they hold: device conditions, [[models.NAME.where]] blocks, CPU features."""

from __future__ import annotations

import re

import pytest

from harness.backends import get_backend
from harness.checks import case_expectation, check_accuracy
from harness.conditions import ConditionError, DeviceExpr, device_words
from harness.cpu_features import cpu_features, feature_words, int8_kernels, saturating_int8
from harness.errors import RegistryError
from harness.registry import load_registry
from harness.session import AccuracyCase, HarnessSession, Settings
from tests.helpers import mlp_model, write_registry

# the device words of three CPUs: an AVX2-only x86 (e.g. AMD Zen 2), an AVX-512 VNNI x86, an Arm server
AVX2 = device_words({"type": "cpu", "family": "x86", "features": ["avx", "avx2", "fma", "f16c"]})
VNNI = device_words({"type": "cpu", "family": "x86", "features": ["avx2", "avx512f", "avx512bw", "avx512_vnni"]})
ARM = device_words({"type": "cpu", "family": "arm", "features": ["asimd", "asimddp", "i8mm"]})
H100 = device_words({"type": "gpu", "name": "NVIDIA H100", "compute_capability": "9.0"})


def test_device_words_name_the_architecture_its_features_and_their_groups():
    assert {"cpu", "x86", "avx2"} <= AVX2 and not AVX2 & {"vnni", "avx512", "gpu"}
    assert {"vnni", "avx512", "avx512_vnni"} <= VNNI
    assert {"arm", "asimddp", "i8mm"} <= ARM and "x86" not in ARM
    assert H100 == {"gpu", "sm90"}


@pytest.mark.parametrize("text, avx2, vnni, arm, gpu", [
    ("x86 and not vnni", True, False, False, False),
    ("vnni or amx", False, True, False, False),
    ("not (x86 and not vnni)", False, True, True, True),
    ("cpu", True, True, True, False),
    ("sm90 or sm89", False, False, False, True),
    ("arm and (asimddp or i8mm)", False, False, True, False),
])
def test_a_device_condition_holds_where_its_words_say(text, avx2, vnni, arm, gpu):
    expr = DeviceExpr.parse(text)
    assert [expr.holds(w) for w in (AVX2, VNNI, ARM, H100)] == [avx2, vnni, arm, gpu]


@pytest.mark.parametrize("text, problem", [
    ("x86 and not vnn1", "unknown word 'vnn1'"),
    ("x86 and", "ends too early"),
    ("(x86 or arm", "'(' is not closed"),
    ("x86 arm", "unexpected 'arm'"),
    ("x86 & vnni", "cannot read '& vnni'"),
    ("", "non-empty string"),
])
def test_a_bad_device_condition_is_refused_with_the_reason(text, problem):
    with pytest.raises(ConditionError, match=problem.replace("(", r"\(")):
        DeviceExpr.parse(text)


def test_int8_kernel_classes_follow_the_features():
    assert saturating_int8(AVX2) and not saturating_int8(VNNI) and not saturating_int8(ARM)
    assert "saturates" in int8_kernels(AVX2) and int8_kernels(VNNI).startswith("vnni")
    # this machine's own answer agrees with its features, whatever CPU runs the tests
    here = feature_words()
    assert saturating_int8() == ("x86" in here and not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(cpu_features()))


SCOPED = """
[models.mlp]
path = "mlp.onnx"
[models.mlp.inputs.x]
range = [-1, 1]
[models.mlp.evaluation]
size = 8
[models.mlp.profiles]
dynamic = {{ min = "x:1x8", opt = "x:4x8", max = "x:16x8" }}
[models.mlp.budgets]
fp32 = ["p99(rel_l2) <= 1e-5"]
int8 = ["p99(rel_l2) <= 10%"]
[models.mlp.known_failures]
int8-entropy = "everywhere"

[[models.mlp.where]]
backends = ["ort_cpu"]
device = "x86 and not vnni"
why = "u8s8 kernels saturate"
budgets = {{ int8-minmax-pc = ["p99(rel_l2) <= 30%"] }}
known_failures = {{ int8-minmax = "saturates here" }}

[[models.mlp.where]]
device = "gpu"
budgets = {{ int8 = ["p99(rel_l2) <= 5%"] }}
{extra}
"""


@pytest.fixture
def scoped(tmp_path):
    mlp_model(tmp_path / "mlp.onnx")

    def load(extra: str = ""):
        return write_registry(tmp_path, SCOPED.format(extra=extra))

    return load


def test_scoped_budgets_and_known_failures_apply_only_where_their_condition_holds(scoped):
    spec = load_registry(scoped()).models["mlp"]
    # on an AVX2 CPU under ONNX Runtime CPU: the first block holds
    e = spec.expectation("int8-minmax-pc", "int8", "ort_cpu", AVX2)
    assert [b.label for b in e.budgets] == ["p99(rel_l2) <= 30%"] and e.known_failure is None
    assert e.scopes == ("on ort_cpu, where x86 and not vnni (u8s8 kernels saturate)",)
    assert spec.expectation("int8-minmax", "int8", "ort_cpu", AVX2).known_failure == "saturates here"
    # the same cases on a VNNI CPU, on Arm, and on another backend on the AVX2 machine: the model's own
    for backend, words in (("ort_cpu", VNNI), ("ort_cpu", ARM), ("tensorrt_rtx", AVX2)):
        e = spec.expectation("int8-minmax-pc", "int8", backend, words)
        assert [b.label for b in e.budgets] == ["p99(rel_l2) <= 10%"] and e.scopes == ()
        assert spec.expectation("int8-minmax", "int8", backend, words).known_failure is None
    # a block scoped by kind covers every int8 recipe on its device; unscoped entries stay where none applies
    gpu = spec.expectation("int8-percentile", "int8", "ort_cuda", H100)
    assert [b.label for b in gpu.budgets] == ["p99(rel_l2) <= 5%"]
    assert spec.expectation("int8-entropy", "int8", "ort_cuda", H100).known_failure == "everywhere"
    assert [b.label for b in spec.expectation("fp32", "fp32", "ort_cuda", H100).budgets] == ["p99(rel_l2) <= 1e-5"]


@pytest.mark.parametrize("extra, field, problem", [
    ('[[models.mlp.where]]\ndevice = "x86 and not vnn1"\nknown_failures = { fp16 = "x" }', "where[2].device",
     "unknown word 'vnn1'"),
    ('[[models.mlp.where]]\nknown_failures = { fp16 = "x" }', "where[2]", "neither backends nor a device"),
    ('[[models.mlp.where]]\nbackends = ["ort_cpu"]', "where[2]", "neither budgets nor known_failures"),
    ('[[models.mlp.where]]\nbackends = ["ort_cpu"]\nbudget = { fp16 = ["p99(rel_l2) <= 1%"] }', "where[2].budget",
     "unknown field"),
    ('[[models.mlp.where]]\nbackends = ["ort_cpu"]\nknown_failures = { fp16 = "" }', "where[2].known_failures",
     r"recipe name \(or kind\)"),
])
def test_a_bad_scope_is_refused_naming_the_block(scoped, extra, field, problem):
    with pytest.raises(RegistryError, match=rf"model 'mlp', field '{re.escape(field)}': .*{problem}"):
        load_registry(scoped(extra))


def test_a_scope_changes_the_verdict_of_a_real_case_only_on_the_device_it_names(scoped, tmp_path):
    """The same fp32 case under two registries whose scoped budget is impossible: the one scoped to this
    machine's own device fails the gate (and the row names the scope), the one scoped elsewhere passes."""
    here = get_backend("ort_cpu").device_words()
    other = "gpu" if "cpu" in here else "cpu"
    for device, should_fail in (("cpu", True), (other, False)):
        block = (f'[[models.mlp.where]]\nbackends = ["ort_cpu"]\ndevice = "{device}"\n'
                 'budgets = { fp32 = ["max(rel_l2) < 0"] }')
        hs = HarnessSession(Settings(registry=scoped(block), report_dir=tmp_path / f"r-{device}",
                                     cache_dir=tmp_path / "cache"))
        case = AccuracyCase("mlp", "ort_cpu", "fp32", "dynamic")
        assert bool(case_expectation(hs, case).scopes) == should_fail
        if should_fail:
            with pytest.raises(AssertionError, match=r"max\(rel_l2\) < 0: measured"):
                check_accuracy(hs, case)
        else:
            row = check_accuracy(hs, case)
            assert row.status == "pass" and row.expectation_scopes == []
        hs.close()



