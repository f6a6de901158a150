"""The streaming statistics against exact numpy answers, below and past the 65,536-sample exact cap.

Three kinds of data, as the metrics produce them: error-like (lognormal relative L2 errors, some exactly 0),
cosine-like (``1 − s·Exp`` crowding near 1, some exactly 1) and agreement-like (mostly exactly 1.0, the rest
``k/n`` fractions of pixels). Below the cap every answer equals numpy's; past it every answer keeps the
guarantee stated in :mod:`harness.sketch`.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.sketch import DistanceSketch, StreamingStat

CAP = StreamingStat.EXACT_CAP
GAMMA = (1 + StreamingStat.ALPHA) / (1 - StreamingStat.ALPHA)
TINY = DistanceSketch.TINY
QS = (0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)


def make(kind: str, n: int, seed: int, spread: float, perfect: float) -> tuple[np.ndarray, float]:
    """``n`` values of one kind and the metric's best value; ``spread`` in [0, 1] sets the scale, ``perfect``
    the share of samples exactly at the best value."""
    rng = np.random.default_rng(seed)
    if kind == "error":  # rel_l2: lognormal, medians from 1e-7 to 0.3
        v, best = rng.lognormal(-16 + 15 * spread, 0.2 + 2.8 * rng.random(), n), 0.0
    elif kind == "cosine":  # 1 - s * Exp with s from 1e-7 to 0.1
        v, best = np.clip(1.0 - 10 ** (-7 + 6 * spread) * rng.exponential(size=n), 0.0, 1.0), 1.0
    else:  # top-1 agreement of segmentations: mostly perfect, else k of npix pixels agree
        npix = int(1 + 4095 * spread)
        v, best = rng.integers(0, npix, n) / npix, 1.0
        perfect = max(perfect, 0.5)
    v[rng.random(n) < perfect] = best
    return v, best


def feed(values: np.ndarray, best: float, chunks: int, tracked: tuple[float, ...] = ()) -> StreamingStat:
    stat = StreamingStat(tracked, best=best)
    for chunk in np.array_split(values, chunks):
        stat.add(chunk)
    return stat


def check_exact(stat: StreamingStat, v: np.ndarray, qs: list[float], thresholds: list[float]) -> None:
    assert stat.exact
    for q in qs:
        assert stat.quantile(q) == pytest.approx(np.quantile(v, q), rel=1e-12, abs=1e-15)
    for t in thresholds:
        assert stat.share_over(t) == (v > t).mean() and stat.share_under(t) == (v < t).mean()


def check_sketch(stat: StreamingStat, v: np.ndarray, best: float, qs: list[float], thresholds: list[float]) -> None:
    assert not stat.exact
    x = np.sort(v)
    slack = 1 + 1e-9  # bucket indices come from a float log: a value on a bound may land one bucket over

    def tol(value: float) -> float:
        return StreamingStat.ALPHA * abs(value - best) * slack + TINY + 4e-16 * abs(value)

    for q in qs:
        h = q * (v.size - 1)
        lo, hi = x[math.floor(h)], x[math.ceil(h)]
        got = stat.quantile(q)
        assert lo - tol(lo) <= got <= hi + tol(hi), (q, got, np.quantile(v, q), lo, hi)
    for t in thresholds:
        delta = (GAMMA * slack - 1) * abs(t - best) + TINY
        assert (v > t + delta).mean() <= stat.share_over(t) <= (v > t - delta).mean() + 1e-12, t
        assert (v < t - delta).mean() <= stat.share_under(t) <= (v < t + delta).mean() + 1e-12, t


def check_memory(stat: StreamingStat, v: np.ndarray, best: float) -> None:
    # one counter per occupied bucket: per side of best, at most the buckets between TINY and its largest
    # distance, and the zero bucket; a metric on [0, 1] therefore needs at most 2,765
    lg = math.log(GAMMA)
    bound = 1
    for side in (v[v > best + TINY] - best, best - v[v < best - TINY]):
        if side.size:
            bound += math.ceil(math.log(side.max()) / lg) - math.ceil(math.log(TINY) / lg) + 1
    assert stat.memory_values() <= bound
    if v.min() >= 0.0 and v.max() <= 1.0:
        assert stat.memory_values() <= 2765


kinds = st.sampled_from(["error", "cosine", "agreement"])
spreads = st.floats(0.0, 1.0)
perfects = st.sampled_from([0.0, 0.0, 0.1, 0.9])
extra_qs = st.lists(st.floats(0.0, 1.0), max_size=5)
threshold_qs = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(kinds, st.one_of(st.integers(1, 3000), st.just(CAP)), st.integers(0, 2**32 - 1), spreads, perfects,
       st.integers(1, 40), extra_qs, threshold_qs)
def test_below_the_cap_every_answer_is_numpys(kind, n, seed, spread, perfect, chunks, qs, tqs):
    v, best = make(kind, n, seed, spread, perfect)
    thresholds = [*np.quantile(v, tqs).tolist(), best]
    stat = feed(v, best, chunks, tracked=thresholds[:1])
    check_exact(stat, v, [*QS, *qs], thresholds)
    assert stat.count == n and stat.mean == pytest.approx(v.mean()) and (stat.min, stat.max) == (v.min(), v.max())


@settings(max_examples=24, deadline=None)
@given(kinds, st.integers(CAP + 1, 3 * CAP), st.integers(0, 2**32 - 1), spreads, perfects, st.integers(2, 60),
       extra_qs, threshold_qs)
def test_past_the_cap_quantiles_and_shares_keep_the_stated_guarantee(kind, n, seed, spread, perfect, chunks, qs,
                                                                      tqs):
    v, best = make(kind, n, seed, spread, perfect)
    thresholds = [*np.quantile(v, tqs).tolist(), best]
    stat = feed(v, best, chunks, tracked=thresholds[:1])
    check_sketch(stat, v, best, [*QS, *qs], thresholds)
    check_memory(stat, v, best)
    # tracked thresholds stay exact; count, mean, min and max are never approximated
    assert stat.share_over(thresholds[0]) == (v > thresholds[0]).mean()
    assert stat.share_under(thresholds[0]) == (v < thresholds[0]).mean()
    assert stat.count == n and stat.mean == pytest.approx(v.mean()) and (stat.min, stat.max) == (v.min(), v.max())


def test_cosine_near_one_is_resolved_past_the_cap():
    # the case that a sketch of relative error on the value gets wrong: 400k cosines 1 - 2e-4 * Exp have a
    # p1-p99 spread of 9.2e-4; buckets 1 % wide on the value put them all in 4 buckets
    rng = np.random.default_rng(0)
    v = 1.0 - 2e-4 * rng.exponential(size=400_000)
    stat = feed(v, 1.0, 40)
    for q in (0.01, 0.05, 0.1, 0.5, 0.99):
        exact = np.quantile(v, q)
        assert abs(stat.quantile(q) - exact) <= 0.005 * (1.0 - exact) + 1e-9
    for t in np.quantile(v, [0.01, 0.5, 0.9]):
        assert stat.share_under(t) == pytest.approx((v < t).mean(), abs=0.002)
        assert stat.share_over(t) == pytest.approx((v > t).mean(), abs=0.002)
    assert stat.memory_values() < 2000


def test_share_over_threshold_is_monotone_on_both_sides_of_the_cap():
    rng = np.random.default_rng(3)
    for n in (500, CAP + 10_000):
        v = rng.lognormal(-5, 2, n)
        stat = feed(v, 0.0, 7)
        ts = np.sort(rng.lognormal(-5, 2, 50))
        over = [stat.share_over(t) for t in ts]
        under = [stat.share_under(t) for t in ts]
        assert all(a >= b for a, b in zip(over, over[1:])) and all(a <= b for a, b in zip(under, under[1:]))
        assert all(0.0 <= s <= 1.0 for s in over + under)
