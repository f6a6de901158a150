"""The vectorized entropy calibration agrees with ONNX Runtime's own implementation."""

import numpy as np
import pytest

from harness.recipes.entropy import entropy_threshold

calibrate = pytest.importorskip("onnxruntime.quantization.calibrate")


def histograms(seed: int, n: int):
    rng = np.random.default_rng(seed)
    for k in range(n):
        kind = k % 4
        if kind == 0:
            data = rng.normal(0, 1, 20000)
        elif kind == 1:
            data = np.maximum(rng.normal(0.3, 1, 20000), 0)  # post-ReLU: half the histogram empty
        elif kind == 2:
            data = np.concatenate([rng.normal(0, 0.1, 20000), rng.normal(0, 8, 50)])  # outliers
        else:
            data = rng.laplace(0, 0.5, 5000)
        bins = int(rng.choice([256, 512, 1000, 2048]))
        thr = np.abs(data).max()
        hist, edges = np.histogram(data.astype(np.float32), bins, range=(-thr, thr))
        yield (hist, edges.astype(np.float32), np.float32(data.min()), np.float32(data.max()), np.float32(thr))


@pytest.mark.parametrize("num_quantized_bins", [128, 64])
def test_thresholds_match_onnxruntime(num_quantized_bins):
    collector = calibrate.HistogramCollector("entropy", True, 2048, num_quantized_bins, 99.99, None)
    for h in histograms(7, 12):
        ours = entropy_threshold(h, num_quantized_bins)
        theirs = collector.get_entropy_threshold(h, num_quantized_bins)
        assert float(ours[0]) == pytest.approx(float(theirs[0]), rel=1e-6)
        assert float(ours[1]) == pytest.approx(float(theirs[1]), rel=1e-6)
