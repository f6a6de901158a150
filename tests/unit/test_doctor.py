"""The precision doctor: node matching, the node-by-node comparison and its memory, the search, the recipe it
writes, and two constructed models whose answer is known (one node breaks FP16, one node breaks INT8).

The numbers asserted hold on any x86 CPU: the node-by-node comparison runs the artifacts as their ONNX defines
them (ONNX Runtime CPU, optimizations off), the FP16 case's failure is in the file (a clamped constant), and the
INT8 recipe has 7-bit weights (``reduce_range``), which ONNX Runtime's kernels give alike with and without VNNI.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

from harness.budgets import Budget
from harness.doctor.compare import compare_models, rel_l2
from harness.doctor.gate import GateResult
from harness.doctor.prescription import recipe_from_toml, recipe_toml, with_keep
from harness.doctor.run import DoctorOptions, doctor_case, error_scale, toml_path
from harness.doctor.search import Search
from harness.doctor.tensors import Graph, Matcher
from harness.errors import HarnessError
from harness.recipes import recipe_from_table, transform_model
from harness.rows import DoctorRow, parse_row
from harness.session import AccuracyCase, HarnessSession, Settings
from tests.helpers import FIXTURES, ROOT, write_registry
from tests.models import fp16_range_model, int8_outlier_model, long_chain_model

REGISTRY = """
[recipes.int8-matmul-w7]
kind = "int8"
op_types = ["MatMul"]
reduce_range = true

[models.range]
path = "range.onnx"
recipes = ["fp16", "bf16"]
[models.range.inputs.x]
range = [-1.0, 1.0]
[models.range.evaluation]
size = 32
[models.range.profiles]
dynamic = { min = "x:1x16", opt = "x:8x16", max = "x:32x16" }
[models.range.budgets]
fp16 = ["p99(rel_l2) <= 1%"]

[models.outlier]
path = "outlier.onnx"
recipes = ["int8-matmul-w7"]
[models.outlier.inputs.x]
range = [-1.0, 1.0]
[models.outlier.evaluation]
size = 32
[models.outlier.profiles]
dynamic = { min = "x:1x16", opt = "x:8x16", max = "x:32x16" }
[models.outlier.budgets]
int8 = ["p99(rel_l2) <= 5%"]
"""
QUICK = DoctorOptions(price_seconds=0.1, max_minutes=5)


@pytest.fixture
def session(tmp_path: Path) -> HarnessSession:
    fp16_range_model(tmp_path / "range.onnx")
    int8_outlier_model(tmp_path / "outlier.onnx")
    registry = write_registry(tmp_path, REGISTRY)
    return HarnessSession(Settings(registry=registry, report_dir=tmp_path / "reports", cache_dir=tmp_path / "cache"))


def _rows(hs: HarnessSession) -> list[dict]:
    hs.close()
    return [json.loads(line) for line in (hs.rows_dir / "main.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------ known answers


def test_fp16_known_answer_the_clamped_node_first_and_alone(session: HarnessSession) -> None:
    """to_units divides by 1e5, which FP16 clamps to 65504: its output is 1.53x too large. The doctor names it
    as the first node past the budget's scale, with the largest error of its own, and keeps it alone."""
    progress: list[str] = []
    row = doctor_case(session, AccuracyCase("range", "ort_cpu", "fp16", "dynamic"), QUICK, progress.append)
    assert row.status == "fixed"
    assert row.first_over is not None and row.first_over["node"] == "to_units"
    assert row.first_over["local"] == pytest.approx(1e5 / 65504 - 1, rel=1e-3)  # the clamped divisor, exactly
    by_local = sorted(row.nodes, key=lambda n: -(n["local"] or 0))
    assert by_local[0]["node"] == "to_units" and by_local[1]["local"] < 1e-2  # the others add FP16 rounding only
    assert row.keep_fp32 == ["to_units"] and row.candidates == 4
    assert not row.gate_before["passed"] and row.gate_before["values"][0]["value"] > 0.5
    assert row.gate_after["passed"] and row.gate_after["values"][0]["value"] < 1e-2
    # the recipe as written: the registry reads it, and it keeps exactly that node
    text = toml_path(session.settings.report_dir, row.id).read_text()
    assert text == row.toml
    fixed = recipe_from_toml(text, "test")
    assert fixed.options["keep_fp32"] == ["to_units"] and fixed.kind == "fp16"
    _, info = transform_model(onnx.load(str(session.model("range").path)), "fp16", fixed.options)
    assert info["keep_fp32"]["nodes"] == ["to_units"] and "to_units" not in info["nodes"]["converted"]
    # priced on the same backend, through the perf code path
    assert set(row.price["throughput"]) == {"fixed", "failing", "fp32"}
    assert all(v > 0 for v in row.price["throughput"].values())
    assert any("grow: keep 1 node(s) in FP32: PASS" in line for line in progress)
    assert _rows(session)[-1]["type"] == "doctor"


def test_int8_known_answer_the_outlier_reader_first_and_alone(session: HarnessSession) -> None:
    """widen makes one channel 100x the others; fc2 reads it through per-tensor INT8, which rounds the other 31
    channels away. fc2 adds the error (run alone on FP32 inputs); the nodes before it add a little; keeping
    fc2 alone in FP32 passes."""
    row = doctor_case(session, AccuracyCase("outlier", "ort_cpu", "int8-matmul-w7", "dynamic"), QUICK)
    assert row.status == "fixed", row.reason
    assert row.first_over is not None and row.first_over["node"] == "fc2"
    local = {n["node"]: n["local"] for n in row.nodes}
    assert local["fc2"] > 0.3 and local["fc1"] < 0.05 and local["widen"] == 0.0  # widen is not quantized
    cumulative = {n["node"]: n["cumulative"] for n in row.nodes}
    assert cumulative["relu1"] < 0.05 < cumulative["fc2"]  # where the error starts
    assert row.keep_fp32 == ["fc2"] and row.kept_read_dequantized == {}  # widen's output is not quantized
    assert row.gate_before["values"][0]["value"] > 0.1 and row.gate_after["values"][0]["value"] < 0.05
    fixed = recipe_from_toml(row.toml or "", "test")
    assert fixed.options["keep_fp32"] == ["fc2"] and fixed.options["reduce_range"] is True
    assert fixed.options["op_types"] == ["MatMul"]


def test_a_passing_gate_is_diagnosed_and_left_alone(session: HarnessSession) -> None:
    options = DoctorOptions(price_seconds=0.1, budgets=["p99(rel_l2) <= 80%"])
    row = doctor_case(session, AccuracyCase("range", "ort_cpu", "fp16", "dynamic"), options)
    assert row.status == "passes" and row.search == [] and row.keep_fp32 == []
    assert row.budget_labels == ["p99(rel_l2) <= 80%"] and row.scale == pytest.approx(0.8)
    assert row.first_over is None  # no node's error reaches 80 %


@pytest.mark.parametrize(("recipe", "words"), [("bf16", "bfloat16"), ("fp32", "fp16 and int8")])
def test_recipes_it_cannot_fix_are_refused_with_a_row(session: HarnessSession, recipe: str, words: str) -> None:
    with pytest.raises(HarnessError, match=words):
        doctor_case(session, AccuracyCase("range", "ort_cpu", recipe, "dynamic"), QUICK)
    row = _rows(session)[-1]
    assert row["type"] == "doctor" and row["status"] == "error" and words in row["message"]


# ------------------------------------------------------------------------------- matching and comparison


def test_matching_through_folding_casts_and_output_qdq(tmp_path: Path) -> None:
    # fp16 of the bundled classifier: each BatchNorm is folded into its Conv, which then writes the BatchNorm's
    # output name; inputs come through Casts (glue); nothing is left unmatched
    src = onnx.load(str(FIXTURES / "models" / "classifier.onnx"))
    art, _ = transform_model(src, "fp16", {})
    matcher = Matcher(Graph.of(art), Graph.of(src))
    plans = {p.label: p for p in matcher.plan()}
    assert plans["conv_1"].outputs == [("bn_1", "bn_1")]
    assert [art.graph.node[k].op_type for k in plans["conv_1"].glue] == ["Cast"]
    assert plans["conv_1"].boundary == [("image", "image")]
    assert all(p.no_local is None for p in plans.values())
    # int8: a quantized graph output is written NAME_QuantizeLinear_Input, then Q/DQ write NAME; its producer is
    # compared at NAME with that pair as its own
    m = onnx.load(str(int8_outlier_model(tmp_path / "o.onnx")))
    batches = [{"x": np.random.default_rng(i).uniform(-1, 1, (8, 16)).astype(np.float32)} for i in range(2)]
    q, _ = transform_model(m, "int8", {"preprocess": False}, calibration=batches)
    plans = {p.label: p for p in Matcher(Graph.of(q), Graph.of(m)).plan()}
    assert plans["bias"].outputs == [("y", "y")]
    assert [q.graph.node[k].op_type for k in plans["bias"].after] == ["QuantizeLinear", "DequantizeLinear"]
    assert sorted(q.graph.node[k].op_type for k in plans["fc2"].glue) == ["DequantizeLinear", "DequantizeLinear",
                                                                          "QuantizeLinear"]
    assert plans["fc2"].boundary == [("wide", "wide")]


def test_the_first_node_adds_what_it_carries() -> None:
    """Fed the same inputs, the first node's local run is its cumulative run: equal errors (and real ones)."""
    src = onnx.load(str(FIXTURES / "models" / "classifier.onnx"))
    art, _ = transform_model(src, "fp16", {})
    x = np.random.default_rng(0).uniform(-2, 2, (1, 3, 224, 224)).astype(np.float32)
    comp = compare_models(src, art, [{"image": x}], chunk=8)
    first = comp.nodes[0]
    assert first.node == "conv_1" and first.local == first.cumulative and 1e-5 < first.cumulative < 1e-2
    assert comp.chunks > 1 and len(comp.nodes) == 30 and comp.unmatched == 0
    assert all(n.local is not None for n in comp.nodes)
    # errors grow along the network while each node adds about the same (FP16 rounding of its weights)
    assert comp.nodes[-1].cumulative > 3 * first.cumulative
    assert max(n.local for n in comp.nodes if n.local is not None) < 2e-3


def test_rel_l2_says_inf_for_non_finite_values() -> None:
    r = np.ones(4, dtype=np.float32)
    assert rel_l2(np.array([1, 1, 1, np.inf], dtype=np.float16), r) == math.inf
    assert rel_l2(r * 1.1, r) == pytest.approx(0.1)
    assert math.isnan(rel_l2(np.ones(3), r))


MEMORY = """
import json, sys
import numpy as np, onnx, psutil
from harness.doctor.compare import compare_models
from harness.doctor.compare import _session
from onnx import TensorProto, helper
src, art = onnx.load(sys.argv[1]), onnx.load(sys.argv[2])
x = np.random.default_rng(0).random((1, 16, 64, 64), dtype=np.float32)
# ONNX Runtime's own pages (its library, thread pools) are counted before, not as the comparison's
tiny = helper.make_model(helper.make_graph([helper.make_node("Relu", ["a"], ["b"])], "t",
    [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])]),
    opset_imports=[helper.make_opsetid("", 17)])
tiny.ir_version = 8
_session(tiny.SerializeToString()).run(None, {"a": np.ones(1, np.float32)})
# the peak RSS of this process from here on: VmHWM, reset (getrusage's ru_maxrss keeps the parent's RSS at fork)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = psutil.Process().memory_info().rss
comp = compare_models(src, art, [{"x": x}], chunk=int(sys.argv[3]))
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) * 1024
print(json.dumps({"grew_mb": (peak - before) / 2**20, "held": comp.held_peak_bytes, "nodes": len(comp.nodes)}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="peak RSS from /proc/self/status (Linux)")
def test_memory_is_bounded_by_the_chunk_not_the_model(tmp_path: Path) -> None:
    """240 nodes of 256 KB activations (per sample): the peak RSS a comparison adds (VmHWM, a fresh process
    each, over its RSS before) and the tensors it holds grow with the chunk, not with the model; marking
    everything at once (what a chunk as large as the model does) holds them all."""
    chain = long_chain_model(tmp_path / "chain.onnx", nodes=240)
    art, _ = transform_model(onnx.load(str(chain)), "fp16", {})
    onnx.save(art, str(tmp_path / "chain16.onnx"))
    script = tmp_path / "memory.py"
    script.write_text(MEMORY)
    tensor = 16 * 64 * 64 * 4

    def measure(chunk: int) -> dict:
        out = subprocess.run([sys.executable, str(script), str(chain), str(tmp_path / "chain16.onnx"), str(chunk)],
                             capture_output=True, text=True, check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
        return json.loads(out.stdout.strip().splitlines()[-1])

    small, whole = measure(16), measure(100_000)
    assert small["nodes"] == whole["nodes"] == 240
    # held at once: the chunk's FP32 values and the recipe's FP16 values, local feeds and outputs
    assert small["held"] <= 3 * 16 * tensor < whole["held"] / 10
    assert whole["held"] >= 240 * tensor  # every FP32 activation at once
    assert small["grew_mb"] < 56, small
    assert whole["grew_mb"] > 4 * small["grew_mb"] and whole["grew_mb"] > 120, (small, whole)


# -------------------------------------------------------------------------------------------- the search


def _gate(needed: set[str], calls: list[list[str]]):
    """A gate that passes when every node of ``needed`` is kept (and records what was asked)."""

    def gate(keep: list[str]) -> GateResult:
        calls.append(sorted(keep))
        ok = needed <= set(keep)
        return GateResult(ok, [{"budget": "p99(rel_l2) <= 1%", "output": "y", "value": 0.0 if ok else 0.5,
                                "passed": ok}], seconds=0.01)

    return gate


NAMES = [f"n{i}" for i in range(40)]


@pytest.mark.parametrize("needed", [{"n0"}, {"n0", "n3"}, {"n2", "n9", "n30"}, {"n39"}])
def test_search_finds_exactly_the_nodes_needed(needed: set[str]) -> None:
    calls: list[list[str]] = []
    found = Search(NAMES, _gate(needed, calls), deadline=math.inf).run()
    assert found.keep is not None and set(found.keep) == needed and not found.out_of_time
    assert found.result is not None and found.result.passed
    assert len(calls) == len(set(map(tuple, calls)))  # no gate evaluated twice
    assert [s.phase for s in found.steps][0] == "grow"


def test_search_with_a_well_ranked_node_needs_one_gate() -> None:
    calls: list[list[str]] = []
    found = Search(NAMES, _gate({"n0"}, calls), deadline=math.inf).run()
    assert found.keep == ["n0"] and calls == [["n0"]]


def test_search_says_when_no_keep_list_helps() -> None:
    calls: list[list[str]] = []
    found = Search(NAMES, _gate({"elsewhere"}, calls), deadline=math.inf).run()
    assert found.keep is None and "even with all 40 candidate nodes kept" in found.reason
    assert [len(c) for c in calls] == [1, 2, 4, 8, 16, 32, 40]  # doubling, then all


def test_search_stops_at_its_deadline_with_what_passed() -> None:
    now = [0.0]
    calls: list[list[str]] = []
    inner = _gate({"n0", "n5"}, calls)

    def slow_gate(keep: list[str]) -> GateResult:
        now[0] += 10.0
        return inner(keep)

    found = Search(NAMES, slow_gate, deadline=45.0, clock=lambda: now[0]).run()
    assert found.out_of_time and found.keep is not None and {"n0", "n5"} <= set(found.keep)
    assert len(calls) == 5 and "may not be the smallest" in found.reason
    assert Search(NAMES, slow_gate, deadline=-1.0, clock=lambda: now[0]).run().keep is None


# ------------------------------------------------------------------------------------ recipe and scale


def test_the_recipe_written_reads_back_as_the_recipe_searched() -> None:
    base = recipe_from_table("int8-x", {"kind": "int8", "method": "percentile", "percentile": 99.9,
                                        "keep_fp32": ["head/*"]}, "test")
    fixed = with_keep(base, ["b", "a \"quoted\" node"], "m-int8-x-doctor")
    text = recipe_toml(fixed, ["a comment"])
    assert text.startswith("# a comment\n[recipes.m-int8-x-doctor]\nkind = \"int8\"\n")
    assert "calibration" not in text  # defaults left out
    back = recipe_from_toml(text, "test")
    assert back == fixed
    assert back.options["keep_fp32"] == ["head/*", "a \"quoted\" node", "b"]


def test_error_scale_comes_from_the_budgets() -> None:
    def scale(*texts: str) -> float:
        return error_scale([Budget.parse(t) for t in texts])[0]

    assert scale("p99(rel_l2) <= 5%", "p50(rel_l2) <= 1%") == pytest.approx(0.01)
    assert scale("share_over(rel_l2, 2%) <= 10%") == pytest.approx(0.02)
    assert scale("p1(cosine) >= 0.98") == pytest.approx(math.sqrt(0.04))
    assert scale("mean(top1) >= 0.9") == 0.01


def test_failed_cases_once_each_unexpected_first() -> None:
    from harness.doctor.run import failed_cases

    def acc(recipe: str, status: str, gpu: int) -> dict:
        return {"type": "accuracy", "model": "m", "backend": "ort_cuda", "recipe": recipe, "profile": "p",
                "status": status, "device": {"host": "h", "kind": "gpu", "name": "H200", "index": gpu}}

    rows = [parse_row(acc(r, s, g), "t") for r, s, g in
            [("a", "known failure", 0), ("b", "fail", 0), ("b", "fail", 1), ("c", "pass", 0)]]
    assert [c.recipe for c in failed_cases(rows)] == ["b", "a"]  # b failed on two GPUs: one case


def test_doctor_rows_round_trip() -> None:
    row = DoctorRow(model="m", backend="ort_cpu", recipe="fp16", profile="p", status="fixed", keep_fp32=["a"],
                    price={"throughput": {"fixed": 90.0, "failing": 100.0}}, budget_labels=["p99(rel_l2) <= 1%"])
    back = parse_row(json.loads(json.dumps(row.to_dict())), "test")
    assert isinstance(back, DoctorRow) and back.keep_fp32 == ["a"] and back.key() == row.key()
    assert {n.name: n.value for n in back.numbers()} == {"keep_fp32": 1.0, "price": 0.9}


def test_cli_doctor_writes_the_recipe_and_the_report(session: HarnessSession, capsys: pytest.CaptureFixture) -> None:
    from harness.cli import main

    s = session.settings
    code = main(["doctor", "range", "fp16", "--registry", str(s.registry), "--report-dir", str(s.report_dir),
                 "--engine-cache", str(s.cache_dir), "--price-seconds", "0.1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "doctor range-ort_cpu-fp16-dynamic: fixed; error passes 0.01 first at to_units (Div)" in out
    assert "keep 1 of 4 nodes in FP32: to_units" in out
    report = (s.report_dir / "REPORT.md").read_text()
    assert "## Precision doctor" in report and "**to_units**" in report and "keep_fp32 = [\n  \"to_units\"," in report
    assert textwrap.dedent("""
        | fixed   | range-fp16-doctor""").strip() in report
    # a case it cannot fix exits 1
    assert main(["doctor", "range", "fp16", "--registry", str(s.registry), "--report-dir", str(s.report_dir),
                 "--engine-cache", str(s.cache_dir), "--budget", "min(cosine) >= 1.5", "--price-seconds",
                 "0.1"]) == 1


def test_int8_variants_calibrate_once_and_alike(tmp_path: Path) -> None:
    """The search quantizes one model many times with other keep_fp32 lists: the calibration ranges are computed
    once per process (they do not depend on keep_fp32) and the artifacts are those a fresh calibration gives."""
    from harness.recipes import int8

    m = onnx.load(str(int8_outlier_model(tmp_path / "o.onnx")))
    batches = [{"x": np.random.default_rng(i).uniform(-1, 1, (8, 16)).astype(np.float32)} for i in range(2)]
    params = {"method": "percentile", "op_types": ["MatMul"]}
    first, _ = transform_model(m, "int8", params, calibration=batches)
    files = set(int8._RANGES[0].iterdir())
    again, _ = transform_model(m, "int8", params, calibration=batches)
    kept, info = transform_model(m, "int8", {**params, "keep_fp32": ["fc2"]}, calibration=batches)
    assert set(int8._RANGES[0].iterdir()) == files  # no new calibration
    assert again.SerializeToString() == first.SerializeToString()
    assert info["keep_fp32"]["nodes"] == ["fc2"] and "fc2" not in info["nodes"]["quantized"]
    for f in files:  # without the kept ranges: calibrated afresh, the same artifact
        f.unlink()
    fresh, _ = transform_model(m, "int8", params, calibration=batches)
    assert fresh.SerializeToString() == first.SerializeToString()


def test_cli_doctor_refuses_bad_input_naming_it(session: HarnessSession, capsys: pytest.CaptureFixture) -> None:
    from harness.cli import main

    s = session.settings
    base = ["--registry", str(s.registry), "--report-dir", str(s.report_dir), "--engine-cache", str(s.cache_dir)]
    assert main(["doctor", "range", "fp16", "--samples", "0", *base]) == 2
    assert "--samples must be positive, got 0" in capsys.readouterr().err
    assert main(["doctor", "nosuch", "fp16", *base]) == 2
    assert "unknown model 'nosuch'" in capsys.readouterr().err
    assert main(["doctor", "range", "fp16", "--budget", "p99(rel_l2) < lots", *base]) == 2
    assert "--budget: cannot read budget 'p99(rel_l2) < lots'" in capsys.readouterr().err
