"""The highest request rate a configuration serves within a latency bound, and how sure that answer is.

``--perf-latency-bound "p99<=20ms"`` asks perf_analyzer's ``--latency-threshold`` question the MLPerf Server
way: at what Poisson arrival rate does the 99th percentile of latency (from arrival, :mod:`harness.server`) stay
within 20 ms? The bound holds at a rate when F(L), the share of requests served within L, is at least q.

**At one rate.** A run of ``n`` requests of which ``k`` finished within L (unfinished ones never do) estimates
F(L) by k / n. Its exact one-sided Clopper-Pearson interval at ``confidence`` (95 %) decides: the bound *holds*
when the interval's lower end is at least q, *fails* when its upper end is below q; otherwise the rate is run
again and the requests pooled, up to ``rounds`` runs, after which the point estimate decides and the step is
marked *uncertain*. A run lasts long enough for the tail to hold requests (``tail`` requests expected beyond
the quantile: 20 / (1 - q) requests, 2,000 for a p99), between ``min_seconds`` and ``max_seconds``.

**Over rates.** The capacity C (requests per second the same N runners complete closed-loop) brackets the
answer: a rate above it cannot be served, and its queue grows without end. The search tries a light load
(``floor`` x C) first — if even that breaks the bound, no rate keeps it and the search says so with the
numbers — then C itself (rarely kept: the queue is critical there), and then bisects between the highest rate
that held and the lowest that failed until they are within ``tolerance`` (5 %) of each other.

**The stop rule says how sure it is.** The answer is the highest rate that held, stated with its evidence,
e.g. "820 req/s keeps p99<=20ms: 99.6 % of 2,410 requests within 20 ms (>= 99.3 % at 95 % confidence); 870
req/s does not (97.1 %, <= 97.8 %); the highest such rate lies between them (6 % apart)". Requests of one run
are not independent (a slow phase delays its neighbours in the queue), so the binomial interval is optimistic:
it says how sure the counting is, not how repeatable the machine is, and a step decided by the point estimate
alone says so.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import HarnessError

_BOUND = re.compile(r"^\s*p(?P<q>\d+(?:\.\d+)?)\s*<=\s*(?P<v>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*(?P<u>us|ms|s)\s*$")
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass(frozen=True)
class LatencyBound:
    """``p99<=20ms``: the ``quantile`` of latency must stay within ``seconds``."""

    quantile: float
    seconds: float
    text: str

    @classmethod
    def parse(cls, text: str, source: str = "--perf-latency-bound") -> LatencyBound:
        m = _BOUND.match(text or "")
        if not m:
            raise HarnessError(f"{source}: cannot use {text!r}: give a percentile and a time, e.g. p99<=20ms, "
                               "p95<=5ms or p99.9<=100us (units us, ms, s)")
        q = float(m.group("q")) / 100.0
        seconds = float(m.group("v")) * _UNIT[m.group("u")]
        if not 0 < q < 1 or seconds <= 0:
            raise HarnessError(f"{source}: cannot use {text!r}: the percentile must lie strictly between 0 and "
                               "100 and the time be positive")
        return cls(q, seconds, f"p{m.group('q')}<={m.group('v')}{m.group('u')}")

    @property
    def slug(self) -> str:
        """For case ids: ``p99le20ms``."""
        return self.text.replace("<=", "le").replace(".", "_")


def _log_binom_cdf(k: int, n: int, p: float, lg: np.ndarray) -> float:
    """log P(X <= k) for X ~ Binomial(n, p); ``lg[i]`` = lgamma(i + 1)."""
    if p <= 0:
        return 0.0
    if p >= 1:
        return 0.0 if k >= n else -math.inf
    j = np.arange(k + 1)
    terms = lg[n] - lg[j] - lg[n - j] + j * math.log(p) + (n - j) * math.log1p(-p)
    top = float(terms.max())
    return min(0.0, top + math.log(float(np.exp(terms - top).sum())))  # rounding may sum to just above 1


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """One-sided exact bounds on a binomial proportion from ``k`` of ``n``: (lower, upper), each holding with
    ``confidence`` (the lower end is the p where P(X >= k) = 1 - confidence, the upper where P(X <= k) = it)."""
    if n <= 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    lg = np.array([math.lgamma(i + 1) for i in range(n + 1)])
    la = math.log(alpha)

    def solve(f: Callable[[float], float]) -> float:  # f increasing in p; bisection for f(p) = log alpha
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if f(mid) < la:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    lower = 0.0 if k == 0 else solve(lambda p: _log1m_exp(_log_binom_cdf(k - 1, n, p, lg)))  # P(X >= k)
    upper = 1.0 if k == n else solve(lambda p: -_log_binom_cdf(k, n, p, lg) + 2 * la)  # P(X <= k) falls with p
    return lower, upper


def _log1m_exp(x: float) -> float:
    """log(1 - e^x) for x <= 0."""
    if x >= 0:
        return -math.inf
    return math.log(-math.expm1(x)) if x > -0.693 else math.log1p(-math.exp(x))


@dataclass
class Step:
    """One rate tried: the pooled counts and what they say about the bound."""

    rate: float
    requests: int
    within: int
    verdict: str  # holds, fails
    sure: bool  # decided by the confidence interval (else by the point estimate after every round)
    lower: float
    upper: float
    rounds: int
    point: dict[str, Any] = field(default_factory=dict)  # the last run's summary (harness.server.ServerRun)

    @property
    def share(self) -> float:
        return self.within / self.requests if self.requests else 0.0

    def describe(self, bound: LatencyBound, confidence: float = 0.95) -> str:
        ms = bound.seconds * 1e3
        at = f"at {100 * confidence:g} % confidence"
        if self.verdict == "holds":
            evidence = f">= {100 * self.lower:.2f} % {at}" if self.sure else "point estimate only"
        else:
            evidence = f"<= {100 * self.upper:.2f} % {at}" if self.sure else "point estimate only"
        return (f"{self.rate:,.1f} req/s {'keeps' if self.verdict == 'holds' else 'breaks'} {bound.text}: "
                f"{100 * self.share:.2f} % of {self.requests:,} requests within {ms:g} ms ({evidence})")

    def as_dict(self) -> dict[str, Any]:
        return {"rate": round(self.rate, 6), "requests": self.requests, "within": self.within,
                "verdict": self.verdict, "sure": self.sure, "share_within": round(self.share, 6),
                "lower": round(self.lower, 6), "upper": round(self.upper, 6), "rounds": self.rounds, **self.point}


@dataclass(frozen=True)
class SearchPolicy:
    confidence: float = 0.95
    tolerance: float = 0.05  # stop when the bracket is this close (relative to its upper end)
    floor: float = 0.05  # the light load tried first, as a share of capacity
    rounds: int = 3  # runs pooled at one rate before the point estimate decides
    tail: float = 20.0  # requests expected beyond the quantile in one run
    min_seconds: float = 0.5
    max_seconds: float = 5.0
    max_steps: int = 12
    above: float = 1.5  # when capacity itself keeps the bound, rates up to this many times it are tried


@dataclass
class SearchResult:
    bound: LatencyBound
    capacity: float
    steps: list[Step]
    best: Step | None  # the highest rate that held
    above: Step | None  # the lowest rate that failed above it
    statement: str

    def as_dict(self) -> dict[str, Any]:
        return {"bound": self.bound.text, "quantile": self.bound.quantile, "bound_ms": self.bound.seconds * 1e3,
                "capacity": round(self.capacity, 6), "best_rate": round(self.best.rate, 6) if self.best else None,
                "failed_rate": round(self.above.rate, 6) if self.above else None, "statement": self.statement,
                "steps": [s.rate for s in self.steps], "sure": all(s.sure for s in self.steps)}


def run_seconds(rate: float, bound: LatencyBound, policy: SearchPolicy) -> float:
    """How long to offer ``rate`` for: ``tail`` requests expected beyond the quantile, within the limits."""
    need = policy.tail / (1.0 - bound.quantile) / rate
    return min(policy.max_seconds, max(policy.min_seconds, need))


def judge(rate: float, bound: LatencyBound, policy: SearchPolicy, run: Callable[[float, float, int], Any]) -> Step:
    """Offer ``rate`` (``run(rate, seconds, seed)`` returns a :class:`harness.server.ServerRun`) until the
    interval decides, or ``rounds`` runs have been pooled."""
    n = k = 0
    point: dict[str, Any] = {}
    lower, upper = 0.0, 1.0
    for r in range(policy.rounds):
        result = run(rate, run_seconds(rate, bound, policy), r)
        n += result.count
        k += result.within(bound.seconds)
        point = result.summary()
        lower, upper = clopper_pearson(k, n, policy.confidence)
        if lower >= bound.quantile:
            return Step(rate, n, k, "holds", True, lower, upper, r + 1, point)
        if upper < bound.quantile:
            return Step(rate, n, k, "fails", True, lower, upper, r + 1, point)
    verdict = "holds" if n and k / n >= bound.quantile else "fails"
    return Step(rate, n, k, verdict, False, lower, upper, policy.rounds, point)


def search(capacity: float, bound: LatencyBound, run: Callable[[float, float, int], Any],
           policy: SearchPolicy = SearchPolicy()) -> SearchResult:
    """The highest Poisson rate (requests / s) whose latency keeps ``bound``, given the closed-loop ``capacity``."""
    if not capacity > 0:
        raise HarnessError(f"the capacity must be positive to search a rate, got {capacity!r}")
    steps: list[Step] = []

    def at(rate: float) -> Step:
        step = judge(rate, bound, policy, run)
        steps.append(step)
        return step

    first = at(policy.floor * capacity)
    if first.verdict == "fails":
        return SearchResult(bound, capacity, steps, None, first,
                            f"no rate keeps {bound.text}: even a light load does not. "
                            + first.describe(bound, policy.confidence))
    good, bad = first, None
    rate = capacity
    while bad is None and len(steps) < policy.max_steps:
        step = at(rate)
        if step.verdict == "holds":
            good = step
            if rate >= policy.above * capacity:
                break
            rate = min(rate * 1.25, policy.above * capacity)
        else:
            bad = step
    while bad is not None and len(steps) < policy.max_steps and (bad.rate - good.rate) > policy.tolerance * bad.rate:
        step = at((good.rate + bad.rate) / 2)
        if step.verdict == "holds":
            good = step
        else:
            bad = step
    text = good.describe(bound, policy.confidence)
    if bad is not None:
        gap = (bad.rate - good.rate) / bad.rate
        text += (f"; {bad.describe(bound, policy.confidence)}; the highest such rate lies between them "
                 f"({100 * gap:.1f} % apart")
        text += ")" if gap <= policy.tolerance else f", the search stopped after {len(steps)} steps)"
    else:
        text += f"; no rate up to {policy.above:g}x the closed-loop capacity ({capacity:,.1f} req/s) breaks it"
    unsure = [s for s in steps if not s.sure]
    if unsure:
        text += (f"; {len(unsure)} of {len(steps)} steps were decided by the point estimate after {policy.rounds} "
                 "runs (the interval still straddled the quantile)")
    return SearchResult(bound, capacity, steps, good, bad, text)
