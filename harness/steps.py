"""Change points in a nightly series: where a number stepped to a new level, and where it only wobbled.

The method is airspeed velocity's (asv, ``asv/step_detect.py``): the series is taken to be piecewise
constant plus noise, and fitted by the piecewise-constant function ``x`` that minimises the Potts
functional

    gamma * (number of jumps in x) + sum_i |y_i - x_i|

(L1, so each level is its segment's median and one wild night moves nothing), solved exactly by dynamic
programming over all segmentations. The penalty ``gamma`` is chosen, as asv does, by minimising an
information criterion ``beta * k + log(sigma0 + s)`` over ``gamma`` from ``0.1 / n`` to 1 times the
whole series' L1 cost: ``k`` segments, ``beta = 4 ln(n) / n``, ``s`` the residuals' L1 norm, ``sigma0``
a noise floor. Two departures from asv, both for series of independent nightly runs: asv also fits a
lag-1 correlation of the noise, which lets one segment with correlation near 1 explain a clean step as
correlated noise (a 15 % step in 3 % noise was missed that way); and it searches ``gamma`` by golden
section, which a criterion with plateaus can mislead, where a grid of 25 values costs little at this size.

Then the fit is regularised for nightly use (asv's ``detect_regressions`` does the same job):

* a step counts only if it exceeds ``min_step`` relative to the level before it (and ``abs_floor``
  absolutely), and the larger of the two segments' mean absolute deviations: smaller ones are merged away,
  the least significant first;
* a segment shorter than ``min_size`` runs between two at the same level is an outlier, merged away; one
  where the level moved on (a transition night) joins its nearer neighbour; at the end of the series it is
  kept as a change that is not yet confirmed (the next runs will tell).

Each change names the index of the first run at the new level: where the change began.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Segment:
    start: int  # first index, inclusive
    end: int  # last index, exclusive
    level: float  # the median of its values
    spread: float  # mean absolute deviation from the level

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Change:
    index: int  # first run at the new level
    before: float
    after: float
    confirmed: bool  # the new level held for at least min_size runs

    @property
    def relative(self) -> float:
        return self.after / self.before - 1.0 if self.before else math.inf

    def direction(self, better: str | None) -> str:
        """"regression", "improvement" or "change" (for a number with no good direction)."""
        if better not in ("lower", "higher"):
            return "change"
        up = self.after > self.before
        return "regression" if up == (better == "lower") else "improvement"


# ------------------------------------------------------------------------------------ Potts fit


def _rolling_median_dev(items: Sequence[float]) -> Iterator[tuple[float, float]]:
    """(median(items[:j]), sum |x - median| over items[:j]) for j = 1..n, in O(n log n) (asv's)."""
    low: list[float] = []  # max-heap (negated) of the lower half
    high: list[float] = []  # min-heap of the upper half
    low_sum = high_sum = 0.0
    for j, v in enumerate(items):
        if j % 2 == 0:
            low_sum += v
            v = -heapq.heappushpop(low, -v)
            low_sum -= v
            heapq.heappush(high, v)
            high_sum += v
            yield high[0], max(0.0, high_sum - low_sum - high[0])
        else:
            high_sum += v
            v = heapq.heappushpop(high, v)
            high_sum -= v
            heapq.heappush(low, -v)
            low_sum += v
            yield (high[0] - low[0]) / 2.0, max(0.0, high_sum - low_sum)


class _Intervals:
    """Median and L1 cost of every interval [l, r] of a series, precomputed: O(n^2) memory, fine for the
    few hundred runs a nightly series holds."""

    def __init__(self, y: Sequence[float]):
        n = len(y)
        self.mu = np.full((n, n), np.nan)
        self.dist = np.full((n, n), np.inf)
        for left in range(n):
            for k, (m, d) in enumerate(_rolling_median_dev(y[left:])):
                self.mu[left, left + k] = m
                self.dist[left, left + k] = d


def solve_potts(iv: _Intervals, gammas: np.ndarray) -> list[list[int]]:
    """For each penalty, the exact minimiser's segment ends (exclusive), by the Bellman recursion over the
    last segment; all penalties in one pass (the recursion is sequential in r, not in gamma)."""
    n = iv.dist.shape[0]
    g = np.asarray(gammas, dtype=np.float64)[:, None]
    best = np.empty((g.shape[0], n + 1))
    best[:, :1] = -g
    start = np.zeros((g.shape[0], n), dtype=np.int64)
    for r in range(n):
        cost = best[:, : r + 1] + g + iv.dist[: r + 1, r][None, :]
        left = r - np.argmin(cost[:, ::-1], axis=1)  # ties: the longest last segment
        start[:, r] = left
        best[:, r + 1] = cost[np.arange(g.shape[0]), left]
    out = []
    for k in range(g.shape[0]):
        ends, r = [], n
        while r > 0:
            ends.append(r)
            r = int(start[k, r - 1])
        out.append(ends[::-1])
    return out


def fit_steps(y: Sequence[float]) -> list[Segment]:
    """The Potts fit with the penalty chosen by the information criterion (asv's ``solve_potts_autogamma``)."""
    v = np.asarray(y, dtype=np.float64)
    n = v.size
    if n == 0:
        return []
    iv = _Intervals(list(v))
    if n < 3:
        return [_segment(iv, v, 0, n)]
    beta = 4 * math.log(n) / n
    gamma0 = float(iv.dist[0, n - 1]) or 1.0
    best_obj, ends = math.inf, [n]
    for cand in solve_potts(iv, gamma0 * np.exp(np.linspace(math.log(0.1 / n), 0.0, 25))):
        levels = [float(iv.mu[s, e - 1]) for s, e in zip([0, *cand[:-1]], cand)]
        resid = float(np.abs(v - np.repeat(levels, np.diff([0, *cand]))).sum())
        if len(levels) > 2:
            sigma0 = 0.1 * min(abs(b - a) for a, b in zip(levels, levels[1:]))
        else:
            sigma0 = 0.001 * min(abs(x) for x in levels)
        obj = beta * len(cand) + math.log(max(sigma0, 1e-300) + resid)
        if obj < best_obj:
            best_obj, ends = obj, cand
    return [_segment(iv, v, s, e) for s, e in zip([0, *ends[:-1]], ends)]


def _segment(iv: _Intervals, v: np.ndarray, start: int, end: int) -> Segment:
    level = float(iv.mu[start, end - 1])
    return Segment(start, end, level, float(np.abs(v[start:end] - level).mean()))


# -------------------------------------------------------------------------------- regularisation


def _merge(v: np.ndarray, a: Segment, b: Segment) -> Segment:
    level = float(np.median(v[a.start:b.end]))
    return Segment(a.start, b.end, level, float(np.abs(v[a.start:b.end] - level).mean()))


def _step_needed(a: Segment, b: Segment, min_step: float, abs_floor: float) -> float:
    return max(min_step * abs(a.level), abs_floor, a.spread, b.spread)


def regularise(y: Sequence[float], segments: list[Segment], *, min_step: float = 0.05, min_size: int = 2,
               abs_floor: float = 1e-9) -> list[Segment]:
    v = np.asarray(y, dtype=np.float64)
    segs = list(segments)
    while len(segs) > 1:
        # the least significant step, measured against what a step must exceed
        ratios = [abs(b.level - a.level) / _step_needed(a, b, min_step, abs_floor) for a, b in zip(segs, segs[1:])]
        i = int(np.argmin(ratios))
        if ratios[i] > 1.0:
            break
        segs[i:i + 2] = [_merge(v, segs[i], segs[i + 1])]
    changed = True
    while changed and len(segs) > 1:
        changed = False
        for i, s in enumerate(segs):
            if s.size >= min_size or i == len(segs) - 1:
                continue  # a short last segment stays: a change not yet confirmed
            if i == 0:
                segs[0:2] = [_merge(v, segs[0], segs[1])]
            else:
                prev = segs[i - 1]
                nxt = segs[i + 1] if i + 1 < len(segs) else None
                if nxt is not None and abs(nxt.level - prev.level) <= _step_needed(prev, nxt, min_step, abs_floor):
                    segs[i - 1:i + 2] = [_merge(v, _merge(v, prev, s), nxt)]  # an outlier between equal levels
                elif nxt is not None and abs(s.level - nxt.level) <= abs(s.level - prev.level):
                    segs[i:i + 2] = [_merge(v, s, nxt)]  # a transition: it belongs to the new level
                else:
                    segs[i - 1:i + 1] = [_merge(v, prev, s)]
            changed = True
            break
    return segs


def detect_changes(y: Sequence[float], *, min_step: float = 0.05, min_size: int = 2,
                   abs_floor: float = 1e-9) -> tuple[list[Segment], list[Change]]:
    """Segments of the series and the changes between them. NaN values are not allowed: drop missing runs
    first (the caller maps indices back to its runs)."""
    segs = regularise(y, fit_steps(y), min_step=min_step, min_size=min_size, abs_floor=abs_floor)
    changes = [Change(b.start, a.level, b.level, b.size >= min_size) for a, b in zip(segs, segs[1:])]
    return segs, changes
