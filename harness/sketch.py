"""Streaming statistics of one metric in bounded memory: count, mean, min, max, quantiles and shares.

Values are kept exactly up to :attr:`StreamingStat.EXACT_CAP` samples (quantiles then equal numpy's
``np.quantile``, linear interpolation). Past the cap they fold into a sketch of each value's signed distance
``d = v − best`` to the metric's best value (0 for an error, 1 for cosine or an agreement), in buckets
whose bounds grow by ``γ = (1 + α) / (1 − α)``, ``α = 0.5 %``; distances under ``TINY = 1e-12`` share one
bucket. Centring on the best value makes the buckets finest where a metric's values crowd: a cosine of
0.9998 sits at distance 2e-4 and is resolved to 1e-6, where buckets on the value itself would be 0.01 wide.

The guarantee past the cap, for ``n`` values ``x_(0) <= ... <= x_(n−1)`` and ``h = q·(n − 1)``:

* ``quantile(q)`` is within ``max(α·|x − best|, TINY)`` of ``x = x_(⌊h⌋)``, the order statistic numpy's
  interpolation starts from (numpy's answer lies between ``x_(⌊h⌋)`` and ``x_(⌈h⌉)``), clamped to
  ``[min, max]``.
* ``share_over(t)`` of an untracked threshold lies between the exact shares over ``t + δ`` and ``t − δ``,
  ``δ = (γ − 1)·|t − best| + TINY``: the threshold is honoured to 1.005 % of its distance from the best
  value (``share_under`` alike). Tracked thresholds (those budgets name) are counted exactly.
* Memory is one counter per occupied bucket, whatever the number of samples: about ``ln(10)/ln(γ) ≈ 230``
  per decade of ``|d|`` spanned on each side of ``best``, plus the zero bucket; for a metric on [0, 1]
  (``TINY < |d| <= 1``, one side) at most 2,765 counters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


class StreamingStat:
    """Count, mean, min, max, quantiles and shares of one metric (see the module docstring for accuracy)."""

    EXACT_CAP = 65536
    ALPHA = 0.005

    def __init__(self, tracked: Iterable[float] = (), *, best: float = 0.0):
        self.best = float(best)
        self.count = 0
        self._sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self._exact: list[np.ndarray] | None = []
        self._exact_n = 0
        self._sketch: DistanceSketch | None = None
        # per tracked threshold: how many values were strictly over it and strictly under it
        self._tracked = {float(t): [0, 0] for t in tracked}

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size == 0:
            return
        self.count += v.size
        self._sum += float(v.sum())
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))
        for t, counts in self._tracked.items():
            counts[0] += int((v > t).sum())
            counts[1] += int((v < t).sum())
        if self._exact is not None:
            self._exact.append(v.copy())
            self._exact_n += v.size
            if self._exact_n > self.EXACT_CAP:
                self._sketch = DistanceSketch(self.ALPHA)
                for chunk in self._exact:
                    self._sketch.add(chunk - self.best)
                self._exact = None
        else:
            assert self._sketch is not None
            self._sketch.add(v - self.best)

    @property
    def thresholds(self) -> list[float]:
        """The thresholds whose shares are counted exactly."""
        return sorted(self._tracked)

    @property
    def exact(self) -> bool:
        return self._exact is not None

    @property
    def mean(self) -> float:
        return self._sum / self.count if self.count else math.nan

    def _values(self) -> np.ndarray:
        assert self._exact is not None
        if len(self._exact) > 1:
            self._exact = [np.concatenate(self._exact)]
        return self._exact[0] if self._exact else np.empty(0)

    def quantile(self, q: float) -> float:
        if not self.count:
            return math.nan
        if self._exact is not None:
            return float(np.quantile(self._values(), q))
        assert self._sketch is not None
        return min(max(self.best + self._sketch.quantile(q), self.min), self.max)

    def share_over(self, threshold: float) -> float:
        """Share of values strictly greater than ``threshold``."""
        return self._share(float(threshold), over=True)

    def share_under(self, threshold: float) -> float:
        """Share of values strictly less than ``threshold``."""
        return self._share(float(threshold), over=False)

    def _share(self, t: float, *, over: bool) -> float:
        if not self.count:
            return math.nan
        if t in self._tracked:
            return self._tracked[t][0 if over else 1] / self.count
        if self._exact is not None:
            v = self._values()
            return float(((v > t) if over else (v < t)).sum() / self.count)
        assert self._sketch is not None
        d = t - self.best
        return (self._sketch.count_over(d) if over else self._sketch.count_under(d)) / self.count

    def memory_values(self) -> int:
        """How many numbers this statistic holds (for tests that memory stays flat)."""
        if self._exact is not None:
            return self._exact_n
        assert self._sketch is not None
        return self._sketch.size()


class DistanceSketch:
    """A DDSketch-style sketch of signed values: ``|d|`` falls in bucket ``i`` when
    ``γ^(i−1) < |d| <= γ^i`` (one store per sign); ``|d| <= TINY`` counts as zero. Each bucket answers
    with ``±2γ^i / (γ + 1)``, within ``α`` of every value in it."""

    TINY = 1e-12

    def __init__(self, alpha: float):
        self.alpha = alpha
        self.gamma = (1 + alpha) / (1 - alpha)
        self._lg = math.log(self.gamma)
        self.pos: dict[int, int] = {}
        self.neg: dict[int, int] = {}
        self.zero = 0
        self.count = 0

    def add(self, d: np.ndarray) -> None:
        self.count += d.size
        tiny = np.abs(d) <= self.TINY
        self.zero += int(tiny.sum())
        for store, sel in ((self.pos, d > 0), (self.neg, d < 0)):
            sel = sel & ~tiny
            if sel.any():
                idx = np.ceil(np.log(np.abs(d[sel])) / self._lg).astype(np.int64)
                for i, c in zip(*(a.tolist() for a in np.unique(idx, return_counts=True))):
                    store[i] = store.get(i, 0) + c

    def _buckets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every bucket in ascending order of value: (low bound, high bound, answer, count)."""
        ni = np.array(sorted(self.neg, reverse=True), dtype=np.float64)
        pi = np.array(sorted(self.pos), dtype=np.float64)
        g = self.gamma
        lo = np.concatenate([-(g**ni), [0.0], g ** (pi - 1)])
        hi = np.concatenate([-(g ** (ni - 1)), [0.0], g**pi])
        answer = np.concatenate([-2 * g**ni / (g + 1), [0.0], 2 * g**pi / (g + 1)])
        counts = np.array([self.neg[int(i)] for i in ni] + [self.zero] + [self.pos[int(i)] for i in pi],
                          dtype=np.float64)
        return lo, hi, answer, counts

    def quantile(self, q: float) -> float:
        """The answer of the bucket holding the value of rank ``⌊q·(count − 1)⌋`` (0-based, ascending)."""
        _, _, answer, counts = self._buckets()
        cum = np.cumsum(counts)
        k = int(np.searchsorted(cum, q * (self.count - 1), side="right"))
        return float(answer[min(k, answer.size - 1)])

    def count_over(self, t: float) -> float:
        """How many values exceed ``t``: whole buckets above it, and of the bucket it falls in the part
        above it (values taken as spread evenly), so the answer lies between the counts over the bucket's
        bounds."""
        lo, hi, _, counts = self._buckets()
        frac = np.clip((hi - t) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0)
        frac = np.where(hi > lo, frac, (lo > t).astype(np.float64))  # the zero bucket is one point
        return float((frac * counts).sum())

    def count_under(self, t: float) -> float:
        lo, hi, _, counts = self._buckets()
        frac = np.clip((t - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0)
        frac = np.where(hi > lo, frac, (hi < t).astype(np.float64))
        return float((frac * counts).sum())

    def size(self) -> int:
        return len(self.pos) + len(self.neg) + 1
