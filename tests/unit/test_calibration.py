"""The streamed histogram calibration gives ONNX Runtime's own histograms, bit for bit, in bounded memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnxruntime.quantization import CalibrationMethod
from onnxruntime.quantization.calibrate import create_calibrator

from harness.recipes.calibration import ENTROPY_BINS, PERCENTILE_BINS, collect_histograms
from tests.helpers import FIXTURES


class _Reader:
    def __init__(self, batches):
        self.it = iter(batches)

    def get_next(self):
        return next(self.it, None)


@pytest.mark.parametrize("method, calib, extra", [
    ("entropy", CalibrationMethod.Entropy,
     {"num_bins": ENTROPY_BINS[0], "num_quantized_bins": ENTROPY_BINS[1], "symmetric": True}),
    ("percentile", CalibrationMethod.Percentile, {"num_bins": PERCENTILE_BINS, "percentile": 99.99, "symmetric": True}),
])
def test_streamed_histograms_equal_onnx_runtimes(tmp_path, method, calib, extra):
    rng = np.random.default_rng(0)
    # batches of growing spread: each batch widens every tensor's range, the case a per-batch merge gets wrong
    batches = [{"image": (rng.standard_normal((2, 3, 224, 224)) * (i + 1)).astype(np.float32)} for i in range(3)]
    model = FIXTURES / "models" / "classifier.onnx"
    ort_side = create_calibrator(model, [], augmented_model_path=str(Path(tmp_path) / "a.onnx"), calibrate_method=calib,
                                 extra_options=extra)
    ort_side.collect_data(_Reader(batches))
    theirs = ort_side.collector.histogram_dict
    ours = collect_histograms(ort_side.infer_session, sorted(ort_side.tensors_to_calibrate), batches, method,
                              extra["num_bins"])
    assert set(ours) == set(theirs) and len(ours) > 40
    for tensor, expected in theirs.items():
        got = ours[tensor]
        assert len(got) == len(expected), tensor
        for a, b in zip(got, expected):
            assert np.asarray(a).dtype == np.asarray(b).dtype and np.array_equal(a, b), tensor
