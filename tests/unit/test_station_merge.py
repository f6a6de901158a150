"""The merged engine: a station's models composed into one ONNX graph give the separate models' outputs, on
ONNX Runtime CPU; built and cached like any model; a merged engine that disagrees is caught before timing."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from harness.backends import get_backend
from harness.cache import Cache
from harness.profiles import Profile
from harness.registry import load_registry
from harness.session import HarnessSession, PerfSettings, Settings
from harness.stations.check import check_station, station_cases
from harness.stations.merge import (
    compare_outputs,
    compose,
    describe_failure,
    member_prefix,
    merge_station,
    merged_feeds,
    merged_profile,
)
from tests.helpers import FIXTURES, mlp_model, perturb_initializer


def run(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


@pytest.fixture
def mlps(tmp_path):
    """Three members: two copies of one model (same names everywhere) and another at an older opset."""
    a = mlp_model(tmp_path / "a.onnx", seed=1, opset=17)
    b = mlp_model(tmp_path / "b.onnx", seed=2, opset=13, hidden=32)
    return [("det", a), ("det", a), ("cls", b)]


def test_the_composed_graph_holds_every_member_side_by_side_and_gives_its_outputs(mlps, tmp_path):
    prefixes = [member_prefix(i, name) for i, (name, _) in enumerate(mlps)]
    model, info = compose([p for _, p in mlps], prefixes)
    assert prefixes == ["m0.det/", "m1.det/", "m2.cls/"]
    assert [i.name for i in model.graph.input] == ["m0.det/x", "m1.det/x", "m2.cls/x"]
    assert [o.name for o in model.graph.output] == ["m0.det/y", "m1.det/y", "m2.cls/y"]
    # the members' dynamic dimensions stay separate symbols
    assert [i.type.tensor_type.shape.dim[0].dim_param for i in model.graph.input] == \
        ["m0.det/batch", "m1.det/batch", "m2.cls/batch"]
    assert info["opset"] == 17 and info["upgraded"] == ["m2.cls 13 -> 17"] and info["nodes"] == 9
    path = tmp_path / "merged.onnx"
    onnx.save(model, str(path))
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((n, 8)).astype(np.float32)} for n in (3, 5, 2)]
    merged = run(path, merged_feeds(feeds, prefixes))
    for (_, member), f, prefix in zip(mlps, feeds, prefixes):
        np.testing.assert_array_equal(merged[prefix + "y"], run(member, f)["y"])


def test_the_merged_model_is_cached_and_built_by_the_backend_like_any_model(mlps, tmp_path):
    cache = Cache(tmp_path / "cache")
    dynamic = Profile.from_strings("dynamic", min="x:1x8", opt="x:4x8", max="x:16x8")
    members = [(name, path, name + str(i)) for i, (name, path) in enumerate(mlps)]
    first = merge_station("pair", "fp32", members, [dynamic] * 3, cache)
    again = merge_station("pair", "fp32", members, [dynamic] * 3, cache)
    assert first.entry is not None and again.entry is not None
    assert (first.entry.outcome, again.entry.outcome) == ("built", "hit") and first.path == again.path
    assert first.profile.opt == {"m0.det/x": (4, 8), "m1.det/x": (4, 8), "m2.cls/x": (4, 8)}
    backend = get_backend("ort_cpu")
    engine = backend.build(first.path, first.profile, cache, label="pair/ort_cpu/fp32-merged",
                           model_hash=first.model_hash)
    feeds = [{"x": np.full((4, 8), 0.5 * i, np.float32)} for i in range(3)]
    with engine.runner() as r:
        merged = r.infer(merged_feeds(feeds, first.prefixes))
    separate = [run(path, f) for (_, path), f in zip(mlps, feeds)]
    check = compare_outputs(separate, merged, first.prefixes, [1e-5] * 3)
    assert check["passed"] and check["max_rel_l2"] <= 1e-6 and len(check["outputs"]) == 3


def test_a_merged_engine_that_disagrees_is_named_with_its_numbers(mlps, tmp_path):
    (_, a), _, (_, b) = mlps
    broken = perturb_initializer(b, tmp_path / "broken.onnx", "w2", (0, 0), 50.0)
    prefixes = [member_prefix(0, "det"), member_prefix(1, "cls")]
    model, _ = compose([a, broken], prefixes)
    onnx.save(model, str(tmp_path / "m.onnx"))
    x = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    feeds = [{"x": x}, {"x": x}]
    merged = run(tmp_path / "m.onnx", merged_feeds(feeds, prefixes))
    check = compare_outputs([run(a, feeds[0]), run(b, feeds[1])], merged, prefixes, [1e-5, 1e-5])
    assert not check["passed"] and check["outputs"][0]["passed"] and not check["outputs"][1]["passed"]
    text = describe_failure(check)
    assert text.startswith("the merged engine's outputs differ from the separate models' in 1 of 2 outputs: "
                           "m1.cls/y: rel_l2 ")
    assert "> 1e-05 (max abs" in text
    missing = compare_outputs([{"z": np.ones(2)}], {}, ["m0.x/"], [1e-5])
    assert "m0.x/z: shape None where the separate model gives [2]" in describe_failure(missing)


def test_profiles_side_by_side_keep_each_members_ranges():
    det = Profile.from_strings("dynamic", min="x:1x8", opt="x:4x8", max="x:16x8")
    fixed = Profile.from_strings("fixed", shapes="x:4x8")
    both = merged_profile([det, fixed], ["m0.det/", "m1.cls/"])
    assert both.min == {"m0.det/x": (1, 8), "m1.cls/x": (4, 8)} and both.max["m0.det/x"] == (16, 8)
    assert both.name == "dynamic+fixed" and not both.fixed
    assert merged_profile([fixed, fixed], ["a/", "b/"]).fixed


BUNDLED = [s for s in load_registry(FIXTURES / "models.toml").stations]


@pytest.mark.parametrize("station", BUNDLED)
def test_each_bundled_stations_merged_engine_equals_its_separate_models_on_ort_cpu(station, tmp_path):
    """The station check itself, in merged mode: compose, build, compare, then a (short) timing."""
    perf = PerfSettings(station_modes=["merged"], stations=[station], duration=0.01, warmup=0.0, min_iters=2)
    hs = HarnessSession(Settings(registry=FIXTURES / "models.toml", report_dir=tmp_path / "r",
                                 cache_dir=tmp_path / "c", backends=["ort_cpu"], perf=perf))
    case = next(station_cases(hs))
    spec = hs.registry.stations[station]
    if any(hs.model(m).unavailable for m in spec.models):
        pytest.skip(f"station {station}: a member's package is not installed")
    row = check_station(hs, case)
    check = row.merged["check"]
    # one output per member model's output, each within the FP32 tolerance: the same kernels on the same inputs
    assert len(check["outputs"]) == sum(len(hs.model(m).outputs) for m in spec.models)
    assert check["passed"] and check["max_rel_l2"] <= 1e-5
    assert row.status in ("pass", "unstable") and row.iterations >= 2 and row.runners == 1
    assert row.merged["composition"]["members"] == len(spec.members)
