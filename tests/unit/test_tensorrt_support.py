"""The TensorRT backend's library-free pieces: profiles, dtypes, buffer sizes, errors, profile slots, the
legacy calibrator's batching and cache file."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from harness.backends.tensorrt import check_options
from harness.backends.tensorrt.calibrator import CalibrationFeeder
from harness.backends.tensorrt.network import ParseError, distinct_dim_names, parse_error_message
from harness.backends.tensorrt.profiles import ProfileSlots, profile_shapes
from harness.backends.tensorrt.tensors import buffer_nbytes, numpy_dtype
from harness.errors import BuildError, ModeUnsupported, ProfileError
from harness.profiles import Profile


def test_profile_translation_for_set_shape():
    p = Profile.from_strings("dyn", min="x:1x3x32x32,m:1x7", opt="x:8x3x64x64,m:8x7", max="x:32x3x128x128,m:32x7")
    shapes = profile_shapes(p, {"x": (-1, 3, -1, -1), "m": (-1, 7), "static": (2, 2)}, model="seg")
    assert shapes == [("x", (1, 3, 32, 32), (8, 3, 64, 64), (32, 3, 128, 128)), ("m", (1, 7), (8, 7), (32, 7))]


@pytest.mark.parametrize("network, problem", [
    ({"y": (-1, 3)}, "names input 'x', which the network does not have"),
    ({"x": (-1, 3), "z": (-1,)}, "input 'z' has dynamic shape"),
    ({"x": (-1, 4)}, "do not fit the network's"),
    ({"x": (-1, 3, 1)}, "do not fit the network's"),
])
def test_profile_translation_refuses_what_does_not_fit(network, problem):
    p = Profile.from_strings("p", min="x:1x3", opt="x:2x3", max="x:4x3")
    with pytest.raises(ProfileError, match=problem):
        profile_shapes(p, network, model="m")


def test_dtype_mapping_and_buffer_sizes():
    assert numpy_dtype("FLOAT", "x") == np.float32 and numpy_dtype("DataType.HALF", "x") == np.float16
    assert numpy_dtype("INT64", "ids") == np.int64 and numpy_dtype("BOOL", "m") == np.bool_
    with pytest.raises(ModeUnsupported, match="tensor 'y' has TensorRT type BF16"):
        numpy_dtype("BF16", "y")
    assert buffer_nbytes((8, 3, 224, 224), np.float16, "x") == 8 * 3 * 224 * 224 * 2
    assert buffer_nbytes((), np.float32, "scalar") == 4
    with pytest.raises(BuildError, match="tensor 'boxes' still has unknown dimensions .* output allocator"):
        buffer_nbytes((-1, 4), np.float32, "boxes")


def test_parse_errors_name_the_nodes(tmp_path):
    msg = parse_error_message(tmp_path / "m.onnx", [
        ParseError(3, "conv_7", "Conv", "weights must be constant", "INVALID_NODE"),
        ParseError(9, "", "", "unsupported"),
    ])
    assert "rejected" in msg and "(2 error(s))" in msg
    assert "node #3 'conv_7' (Conv): weights must be constant [INVALID_NODE]" in msg
    assert "node #9: unsupported" in msg


def test_one_profile_is_shared_by_every_context():
    slots = ProfileSlots(1, "e.plan")
    assert [slots.acquire() for _ in range(8)] == [0] * 8 and slots.shared and slots.in_use() == 0


def test_profile_copies_give_each_context_its_own_profile():
    slots = ProfileSlots(2, "e.plan")
    a, b = slots.acquire(), slots.acquire()
    assert {a, b} == {0, 1} and not slots.shared
    with pytest.raises(ModeUnsupported, match=r"built with 2 copies .*profile_copies=2.*all in use"):
        slots.acquire()
    slots.release(a)
    assert slots.acquire() == a


def test_options_are_checked():
    assert check_options(None)["profile_copies"] == 1 and check_options({"opt_level": 5})["opt_level"] == 5
    # --trt-options gives one target as a string, several as a list (SM86+SM89)
    assert check_options({"compute_capabilities": "SM86"})["compute_capabilities"] == ["SM86"]
    for bad, problem in (({"opt_levl": 3}, "unknown TensorRT build option"), ({"opt_level": 9}, "0-5"),
                         ({"legacy_precision": "int4"}, "fp16 or int8"), ({"profile_copies": 0}, ">= 1"),
                         ({"compute_capabilities": ["sm86"]}, "such as SM86")):
        with pytest.raises(BuildError, match=problem):
            check_options(bad)


def test_calibration_feeder_serves_full_batches_and_keeps_its_cache_atomically(tmp_path):
    rng = np.random.default_rng(0)
    batches = [{"x": rng.standard_normal((4, 3)).astype(np.float32)} for _ in range(3)]
    batches.append({"x": rng.standard_normal((2, 3)).astype(np.float32)})  # short tail: dropped
    feeder = CalibrationFeeder(iter(batches), tmp_path / "calib" / "m.cache", {"x": (4, 3)})
    served = []
    while (b := feeder.next_batch(["x"])) is not None:
        served.append(b["x"])
    assert len(served) == 3 and feeder.served == 3 and feeder.dropped == 1
    np.testing.assert_array_equal(served[1], batches[1]["x"])
    assert served[0].flags["C_CONTIGUOUS"]
    assert feeder.read_cache() is None
    feeder.write_cache(b"TRT-8601-EntropyCalibration2\nx: 3c010a14\n")
    assert feeder.read_cache().startswith(b"TRT-")
    assert [p.name for p in (tmp_path / "calib").iterdir()] == ["m.cache"]  # no temp file left
    with pytest.raises(BuildError, match="lacks input"):
        CalibrationFeeder(iter([{"y": np.zeros((4, 3))}]), tmp_path / "c", {"x": (4, 3)}).next_batch(["x"])


def test_dims_sharing_a_placeholder_name_are_told_apart():
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "?", "?"])
    other = helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", 1])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [inp, other],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, "h", "w"])])
    model = helper.make_model(g)
    p = Profile.from_strings("p", min="x:1x3x48x192,mask:1x1", opt="x:6x3x48x192,mask:6x1",
                             max="x:32x3x48x192,mask:32x1")
    renamed = distinct_dim_names(model, p)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "?__x_2", "?__x_3"] and len(renamed) == 2
    assert distinct_dim_names(model, p) == []  # nothing left to rename; shared "batch" agrees
    onnx.checker.check_model(model)
