"""Latency histograms: quantiles within half a percent in bounded space; a seeded bootstrap of the median."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.histogram import LogHistogram, bootstrap_ratio
from harness.timing import TimingPolicy, run_serial


def test_the_latency_histogram_keeps_quantiles_within_half_a_percent_in_bounded_space():
    rng = np.random.default_rng(5)
    lat = np.concatenate([rng.lognormal(np.log(2e-3), 0.2, 50_000), rng.uniform(0.05, 2.0, 20)])  # + stalls
    h = LogHistogram.from_values(lat)
    for q in (0.01, 0.5, 0.9, 0.99):
        assert h.quantile(q) == pytest.approx(np.quantile(lat, q), rel=0.005)
    assert h.total == lat.size and h.index.size <= 512
    wide = LogHistogram.from_values(np.geomspace(1e-6, 10, 5000))  # 7 decades: buckets merge to fit
    assert wide.index.size <= 512 and wide.gamma > 1.01 and wide.total == 5000
    assert LogHistogram.from_dict(json.loads(json.dumps(h.to_dict()))).quantile(0.5) == h.quantile(0.5)
    a, b = LogHistogram.from_values(lat[:25_000]), LogHistogram.from_values(lat[25_000:] * 1.1)
    assert bootstrap_ratio(a, b) == bootstrap_ratio(a, b)  # seeded: the same interval every time


def test_the_timing_summary_carries_every_iteration_in_its_histogram():
    durations = iter(np.random.default_rng(2).uniform(0.001, 0.003, 2000))
    now = [0.0]

    def step() -> None:
        now[0] += next(durations)

    m = run_serial(step, TimingPolicy(warmup=0.0, min_duration=0.0, min_iters=500), batch=1, clock=lambda: now[0])
    h = LogHistogram.from_dict(m.summary()["latency_hist"])
    assert h.total == m.iterations == 500
    assert h.quantile(0.5) == pytest.approx(np.median(m.latencies), rel=0.005)
