"""Change-point detection over nightly series: a real step is found at its run, noise and outliers are not."""

from __future__ import annotations

import numpy as np
import pytest

from harness.steps import detect_changes


def nightly(n: int, seed: int, noise: float = 0.03, level: float = 100.0) -> np.ndarray:
    return level * (1.0 + noise * np.random.default_rng(seed).standard_normal(n))


@pytest.mark.parametrize("seed", range(10))
def test_a_step_at_a_known_run_is_found_there(seed):
    y = nightly(40, seed, noise=0.02)
    y[25:] *= 0.85  # run 25 onwards is 15 % slower: a throughput step of 7.5 standard deviations
    segments, changes = detect_changes(list(y), min_step=0.05)
    (change,) = changes
    assert change.index == 25 and change.confirmed
    assert change.relative == pytest.approx(-0.15, abs=0.03)
    assert change.direction("higher") == "regression" and change.direction("lower") == "improvement"
    assert [s.start for s in segments] == [0, 25]


@pytest.mark.parametrize("seed", range(10))
def test_a_noisy_series_without_a_step_has_no_change_point(seed):
    assert detect_changes(list(nightly(40, seed, noise=0.03)), min_step=0.05)[1] == []


def test_one_wild_night_is_an_outlier_not_a_change():
    y = nightly(30, 7, noise=0.01)
    y[12] *= 1.6
    assert detect_changes(list(y))[1] == []


def test_a_change_on_the_last_night_is_reported_pending_and_small_steps_are_not():
    y = nightly(30, 8, noise=0.01)
    y[-1] *= 1.3
    (change,) = detect_changes(list(y), min_size=2)[1]
    assert change.index == 29 and not change.confirmed
    y = nightly(30, 9, noise=0.002)
    y[15:] *= 1.03  # real, but under the 5 % minimum step
    assert detect_changes(list(y), min_step=0.05)[1] == []
    assert [c.index for c in detect_changes(list(y), min_step=0.01)[1]] == [15]


def test_tiny_absolute_errors_do_not_make_changes():
    y = [1e-9] * 10 + [3e-9] * 10  # x3, but nothing anyone can measure in a relative error
    assert detect_changes(y, abs_floor=1e-6)[1] == []
    assert [c.index for c in detect_changes(y, abs_floor=1e-12)[1]] == [10]
