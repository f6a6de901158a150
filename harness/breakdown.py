"""trtexec's breakdown of a GPU request: where its time goes.

Per iteration, from CUDA events on the runner's stream: the host-to-device copy of the inputs (``h2d``),
the compute (``compute``), the device-to-host copy of the outputs (``d2h``); and, from the host's clock, the
time the call that queues the compute takes (``enqueue``: ONNX Runtime's run with synchronization off, or
TensorRT's ``execute_async_v3`` or graph launch). ``latency`` is h2d + compute + d2h, trtexec's "Latency".

It is measured in a pass of its own after the timed window, one request at a time, always with both
copies (as trtexec does unless ``--noDataTransfers``): the timed loop records no timing events, so they never
cost it throughput, and every GPU row can quote both
``throughput_compute`` = batch / mean compute time (the device's bound, transfers excluded) and
``throughput_transfers`` = batch / mean latency (one request at a time with its copies).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

PARTS = ("h2d", "compute", "d2h", "enqueue", "latency")


@dataclass
class Breakdown:
    h2d: np.ndarray  # seconds per iteration
    compute: np.ndarray
    d2h: np.ndarray
    enqueue: np.ndarray

    @classmethod
    def from_lists(cls, h2d: list[float], compute: list[float], d2h: list[float], enqueue: list[float]) -> Breakdown:
        return cls(*(np.asarray(x, dtype=np.float64) for x in (h2d, compute, d2h, enqueue)))

    @property
    def iterations(self) -> int:
        return int(self.compute.size)

    @property
    def latency(self) -> np.ndarray:
        return self.h2d + self.compute + self.d2h

    def part(self, name: str) -> np.ndarray:
        return self.latency if name == "latency" else getattr(self, name)

    def summary(self, batch: int) -> dict[str, Any]:
        """Row fields: ``breakdown_ms`` (per part: mean, p50, p99 in ms, and the iterations), ``gpu_ms`` (the
        compute's, as rows have had), and the two throughputs."""
        ms = 1e3
        stats = {name: _stats(self.part(name), ms) for name in PARTS}
        compute, latency = float(self.compute.mean()), float(self.latency.mean())
        return {
            "breakdown_ms": {**stats, "iterations": self.iterations},
            "gpu_ms": stats["compute"],
            "throughput_compute": batch / compute if compute > 0 else None,
            "throughput_transfers": batch / latency if latency > 0 else None,
        }


def _stats(x: np.ndarray, scale: float) -> dict[str, float]:
    return {"mean": float(x.mean()) * scale, "p50": float(np.percentile(x, 50)) * scale,
            "p99": float(np.percentile(x, 99)) * scale}


def pass_length(timed_iterations: int) -> int:
    """Iterations of the breakdown pass: a fifth of the timed ones, at least 10 and at most 200, so that a
    slow model's pass stays short beside its window and a fast one's percentiles have enough requests."""
    return max(10, min(200, timed_iterations // 5))
