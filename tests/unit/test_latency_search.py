"""The latency-bounded search (harness.latency_search): the bound's grammar, the exact binomial interval, and the
search over rates against a simulated queue whose answer is known."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.latency_search import LatencyBound, SearchPolicy, clopper_pearson, judge, search
from harness.server import ServerRun, poisson_arrivals


@pytest.mark.parametrize("text, q, seconds, slug", [
    ("p99<=20ms", 0.99, 0.020, "p99le20ms"),
    (" p95 <= 5 ms ", 0.95, 0.005, "p95le5ms"),
    ("p99.9<=250us", 0.999, 250e-6, "p99_9le250us"),
    ("p50<=1.5s", 0.5, 1.5, "p50le1_5s"),
])
def test_a_bound_reads_a_percentile_and_a_time(text, q, seconds, slug):
    b = LatencyBound.parse(text)
    assert b.quantile == pytest.approx(q) and b.seconds == pytest.approx(seconds) and b.slug == slug


@pytest.mark.parametrize("text", ["p99<20ms", "99<=20ms", "p99<=20", "p100<=1ms", "p0<=1ms", "p99<=0ms", ""])
def test_a_bad_bound_is_refused_naming_the_option_and_the_form(text):
    with pytest.raises(HarnessError, match=r"--perf-latency-bound: cannot use .*(e\.g\. p99<=20ms|strictly between)"):
        LatencyBound.parse(text)


def _tail(k: int, n: int, p: Fraction, upper: bool) -> float:
    """P(X >= k) (upper) or P(X <= k), exactly, with integers."""
    terms = range(k, n + 1) if upper else range(0, k + 1)
    return float(sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in terms))


@pytest.mark.parametrize("k, n", [(0, 10), (10, 10), (7, 10), (95, 100), (990, 1000), (1, 200)])
def test_clopper_pearson_bounds_are_where_the_binomial_tails_equal_alpha(k, n):
    lower, upper = clopper_pearson(k, n, 0.95)
    assert 0.0 <= lower <= k / n <= upper <= 1.0
    if k > 0:
        assert _tail(k, n, Fraction(lower), upper=True) == pytest.approx(0.05, abs=1e-6)
    else:
        assert lower == 0.0
    if k < n:
        assert _tail(k, n, Fraction(upper), upper=False) == pytest.approx(0.05, abs=1e-6)
    else:
        assert upper == 1.0
    if k == 0:
        assert upper == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-6)


def simulated_server(service: float):
    """``run(rate, seconds, seed)``: a single FIFO server with a fixed service time, computed (no clock): its
    p99 latency at each rate is known by running it long."""
    def run(rate: float, seconds: float, seed: int) -> ServerRun:
        a = poisson_arrivals(rate, seconds, seed)
        ends = np.empty_like(a)
        free = 0.0
        for i, t in enumerate(a):
            free = max(t, free) + service
            ends[i] = free
        return ServerRun(rate, 1, 1, seconds, a, ends - service, ends, np.zeros(a.size, bool))
    return run


def true_p99(service: float, rate: float) -> float:
    return simulated_server(service)(rate, 200_000 / rate, 99).quantile(0.99)


def test_the_search_brackets_the_highest_rate_within_the_bound_and_says_how_sure():
    service = 0.001  # capacity 1,000 requests / s
    bound = LatencyBound.parse("p99<=10ms")
    policy = SearchPolicy(min_seconds=2.0, max_seconds=20.0, tolerance=0.05)
    found = search(1000.0, bound, simulated_server(service), policy)
    assert found.best is not None and found.above is not None
    assert found.best.verdict == "holds" and found.above.verdict == "fails"
    assert found.above.rate - found.best.rate <= 0.05 * found.above.rate or len(found.steps) == policy.max_steps
    # the bracket is where the real p99 crosses the bound (give or take the runs' sampling)
    assert true_p99(service, found.best.rate * 0.95) <= bound.seconds <= true_p99(service, found.above.rate * 1.05)
    assert f"{found.best.rate:,.1f} req/s keeps p99<=10ms" in found.statement
    assert "at 95 % confidence" in found.statement and "lies between them" in found.statement
    d = found.as_dict()
    assert d["best_rate"] == pytest.approx(found.best.rate) and d["capacity"] == 1000.0


def test_a_bound_below_the_service_time_is_kept_by_no_rate():
    found = search(1000.0, LatencyBound.parse("p99<=0.5ms"), simulated_server(0.001), SearchPolicy(min_seconds=1.0))
    assert found.best is None and len(found.steps) == 1
    assert found.statement.startswith("no rate keeps p99<=0.5ms: even a light load does not")


def test_a_rate_the_counts_cannot_decide_is_run_again_then_decided_by_the_point_estimate():
    calls = []

    def run(rate, seconds, seed):  # exactly 99 % within the bound, every time: the interval straddles 0.99
        calls.append(seed)
        a = np.arange(100) / 100.0
        lat = np.where(np.arange(100) == 0, 1.0, 0.001)
        return ServerRun(rate, 1, 1, 1.0, a, a, a + lat, np.zeros(100, bool))

    step = judge(100.0, LatencyBound.parse("p99<=10ms"), SearchPolicy(rounds=3), run)
    assert calls == [0, 1, 2] and step.requests == 300 and step.within == 297
    assert step.verdict == "holds" and not step.sure
    assert "point estimate only" in step.describe(LatencyBound.parse("p99<=10ms"))
