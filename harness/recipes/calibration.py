"""Histogram calibration (entropy, percentile) streamed batch by batch, with ONNX Runtime's exact numbers.

ONNX Runtime's ``HistogramCalibrater`` keeps every calibrated tensor of every calibration batch in memory
and then builds one histogram per tensor over all of it: on the PP-OCRv4 recognizer (379 tensors, 32 lines)
that is gigabytes, and minutes of copying. This runs the same augmented model (every calibrated tensor made
an output) twice instead: a first pass finds each tensor's range, a second adds each batch's counts into a
histogram over that range. ``np.histogram`` with a fixed range bins each element on its own, so the counts,
edges and extremes equal ONNX Runtime's exactly (``tests/unit/test_calibration.py`` compares them); its
thresholds then come from ONNX Runtime's own percentile code, or from the vectorized entropy search
(:mod:`harness.recipes.entropy`), and go to ``quantize_static`` as a calibration cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ENTROPY_BINS = (2048, 128)  # histogram bins, quantized bins: what TensorRT's entropy calibrator uses
PERCENTILE_BINS = 2048  # ONNX Runtime's default for percentile


class _Range:
    """One tensor's extremes over the calibration set (what ONNX Runtime takes over all batches at once)."""

    def __init__(self) -> None:
        self.mins: list[Any] = []
        self.maxs: list[Any] = []
        self.abs_mins: list[Any] = []
        self.abs_maxs: list[Any] = []
        self.dtype: np.dtype | None = None

    def add(self, x: np.ndarray) -> None:
        self.dtype = x.dtype
        if x.size:
            self.mins.append(np.nanmin(x))
            self.maxs.append(np.nanmax(x))
            a = np.abs(x)
            self.abs_mins.append(a.min())
            self.abs_maxs.append(a.max())

    def extremes(self) -> tuple[Any, Any]:
        if not self.mins:
            zero = np.array(0, dtype=self.dtype)
            return zero, zero
        return np.nanmin(np.array(self.mins, dtype=self.dtype)), np.nanmax(np.array(self.maxs, dtype=self.dtype))


def collect_histograms(session: Any, tensors: Sequence[str], batches: Sequence[dict[str, np.ndarray]], method: str,
                       num_bins: int) -> dict[str, tuple]:
    """Per tensor, the histogram tuple ONNX Runtime's ``HistogramCollector`` builds for ``method``: entropy
    ``(hist, edges, min, max, threshold)`` over ``[-threshold, threshold]``; percentile (symmetric)
    ``(hist, edges, min, max)`` of absolute values over ``[min |x|, max |x|]``."""
    names = list(tensors)
    ranges = {t: _Range() for t in names}
    for feeds in batches:
        for t, x in zip(names, session.run(names, feeds)):
            ranges[t].add(np.asarray(x))
    bins: dict[str, dict[str, Any]] = {}
    for t, r in ranges.items():
        low, high = r.extremes()
        if method == "entropy":
            threshold = np.array(max(abs(low), abs(high)), dtype=r.dtype)
            bins[t] = {"range": (-threshold, threshold), "extra": (low, high, threshold)}
        else:
            if not r.abs_mins:
                raise ValueError(f"tensor {t!r} is empty in every calibration batch: no percentile can be taken")
            amin, amax = min(r.abs_mins), max(r.abs_maxs)
            bins[t] = {"range": (amin, amax), "extra": (low, high)}
    hists: dict[str, Any] = {}
    edges: dict[str, Any] = {}
    for feeds in batches:
        for t, x in zip(names, session.run(names, feeds)):
            data = np.asarray(x).ravel()
            if method != "entropy":
                data = np.abs(data)
            h, e = _histogram(t, data, num_bins, bins[t]["range"])
            hists[t] = h if t not in hists else hists[t] + h
            edges[t] = e
    out = {}
    for t in names:
        e = edges[t]
        if method != "entropy":
            e = e.astype(ranges[t].dtype)
        out[t] = (hists[t], e, *bins[t]["extra"])
    return out


def _histogram(tensor: str, data: np.ndarray, num_bins: int, bounds: tuple[Any, Any]) -> tuple[np.ndarray, np.ndarray]:
    try:
        return np.histogram(data, num_bins, range=bounds)
    except ValueError as exc:
        if "finite-sized bins" not in str(exc):
            raise ValueError(f"tensor {tensor!r}: {exc}") from None
    # a tensor that is one value but for rounding (a rate computed from a shared input): float32 cannot split
    # its range into num_bins bins (ONNX Runtime stops here); float64 can, and the thresholds stay inside it
    return np.histogram(data.astype(np.float64), num_bins, range=(float(bounds[0]), float(bounds[1])))


def histogram_ranges(model: Path, batches: Sequence[dict[str, np.ndarray]], op_types: list[str] | None, method: str,
                     out: Path, tmp: Path, *, percentile: float = 99.999) -> None:
    """Calibrate ``model`` on ``batches`` with ``method`` (entropy or percentile) and write the ranges as a
    calibration cache ``quantize_static`` reads (``calibration_cache_path``)."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import (
        HistogramCollector,
        TensorsData,
        create_calibrator,
        save_tensors_data,
    )

    from .entropy import compute_entropy

    calib = CalibrationMethod.Entropy if method == "entropy" else CalibrationMethod.Percentile
    if method == "entropy":
        extra: dict[str, Any] = {"num_bins": ENTROPY_BINS[0], "num_quantized_bins": ENTROPY_BINS[1], "symmetric": True}
    else:  # what quantize_static passes for percentile: symmetric, 2048 bins
        extra = {"num_bins": PERCENTILE_BINS, "percentile": percentile, "symmetric": True}
    calibrator = create_calibrator(model, op_types or [], augmented_model_path=str(tmp / "augmented.onnx"),
                                   calibrate_method=calib, extra_options=extra)
    tensors = sorted(calibrator.tensors_to_calibrate)
    hist = collect_histograms(calibrator.infer_session, tensors, batches, method, extra["num_bins"])
    if method == "entropy":
        thresholds = compute_entropy(hist, ENTROPY_BINS[1])
    else:
        collector = HistogramCollector(method="percentile", symmetric=True, num_bins=PERCENTILE_BINS,
                                       num_quantized_bins=None, percentile=percentile, scenario="same")
        collector.histogram_dict = hist
        thresholds = collector.compute_collection_result()
    save_tensors_data(TensorsData(calib, thresholds), out)
