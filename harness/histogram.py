"""Per-iteration latencies kept compactly: a log-bucket histogram, and a bootstrap test on two of them.

A perf row cannot hold a million latencies, but ``compare`` needs more than two percentiles to say whether a
change is real. :class:`LogHistogram` keeps counts in buckets ``[g^k, g^(k+1))`` with ``g = 1.01`` (a
quantile read from it is within 0.5 % of the exact one), only the occupied buckets, at most
``MAX_BINS`` of them: when a run spreads wider, neighbouring buckets merge (``g`` squared) until it fits,
so a row's histogram is bounded (a few KB of JSON) whatever the run's length.

:func:`bootstrap_ratio` compares a quantile (the median by default) of two runs: it resamples each
histogram's counts (multinomial, as resampling the iterations would) and returns the ratio of the
candidate's quantile to the baseline's with a percentile confidence interval. The iterations of one run are
not independent (a slow phase lasts), so the interval is optimistic about run-to-run noise: ``compare``
also asks for a minimum size of change before it calls one a regression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

GAMMA = 1.01
MAX_BINS = 512


@dataclass(frozen=True)
class LogHistogram:
    gamma: float
    index: np.ndarray  # bucket k: values in [gamma^k, gamma^(k+1)), ascending
    counts: np.ndarray

    @classmethod
    def from_values(cls, values: Any, gamma: float = GAMMA, max_bins: int = MAX_BINS) -> LogHistogram:
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v) & (v > 0)]
        k = np.floor(np.log(v) / math.log(gamma)).astype(np.int64) if v.size else np.zeros(0, np.int64)
        index, counts = np.unique(k, return_counts=True)
        h = cls(gamma, index, counts.astype(np.int64))
        while h.index.size > max_bins:
            h = h.coarsen()
        return h

    def coarsen(self) -> LogHistogram:
        """Merge bucket pairs: gamma -> gamma^2 (bucket k -> floor(k / 2))."""
        index, inverse = np.unique(np.floor_divide(self.index, 2), return_inverse=True)
        counts = np.zeros(index.size, np.int64)
        np.add.at(counts, inverse, self.counts)
        return LogHistogram(self.gamma ** 2, index, counts)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def quantile(self, q: float) -> float:
        if not self.total:
            return math.nan
        return float(_quantiles(self, self.counts[None, :], q)[0])

    def to_dict(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "bins": [[int(k), int(n)] for k, n in zip(self.index, self.counts)]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogHistogram:
        try:
            gamma = float(data["gamma"])
            bins = np.asarray(data["bins"], dtype=np.int64).reshape(-1, 2)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a latency histogram ({exc}): {str(data)[:80]}") from None
        if gamma <= 1.0 or (bins[:, 1] < 0).any():
            raise ValueError(f"not a latency histogram: gamma {gamma}, negative counts")
        return cls(gamma, bins[:, 0], bins[:, 1])


@dataclass(frozen=True)
class Ratio:
    """candidate / baseline of one statistic, with a confidence interval."""

    estimate: float
    low: float
    high: float
    confidence: float

    def beyond(self, threshold: float) -> int:
        """+1: the whole interval lies above ``1 + threshold`` (higher by more than the threshold, with the
        interval's confidence), -1: below ``1 / (1 + threshold)``, 0: neither."""
        if self.low > 1.0 + threshold:
            return 1
        if self.high < 1.0 / (1.0 + threshold):
            return -1
        return 0

    @property
    def significant(self) -> bool:
        """The interval excludes "no change"."""
        return self.low > 1.0 or self.high < 1.0

    def describe(self, word_up: str = "slower", word_down: str = "faster") -> str:
        pct = 100.0 * (self.estimate - 1.0)
        word = word_up if pct >= 0 else word_down
        return (f"{word} by {abs(pct):.1f} % ({100 * self.confidence:.0f} % CI {100 * (self.low - 1):+.1f} % to "
                f"{100 * (self.high - 1):+.1f} %)")


def _quantiles(h: LogHistogram, counts: np.ndarray, q: float) -> np.ndarray:
    """The q-quantile of each row of ``counts`` (over ``h``'s buckets), interpolated within its bucket as if
    values were spread evenly in log space: without it every estimate would sit on a 1 % grid."""
    n = counts.sum(axis=1)
    cum = np.cumsum(counts, axis=1)
    target = q * n
    pos = np.argmax(cum >= np.maximum(target, 1e-9)[:, None], axis=1)  # first bucket reaching the quantile
    rows = np.arange(counts.shape[0])
    inside = counts[rows, pos]
    frac = np.clip((target - (cum[rows, pos] - inside)) / np.maximum(inside, 1), 0.0, 1.0)
    return np.power(h.gamma, h.index[pos].astype(np.float64) + frac)


def _resampled_quantiles(h: LogHistogram, q: float, draws: int, rng: np.random.Generator) -> np.ndarray:
    counts = rng.multinomial(h.total, h.counts / h.total, size=draws)
    return _quantiles(h, counts, q)


def bootstrap_ratio(base: LogHistogram, new: LogHistogram, q: float = 0.5, *, confidence: float = 0.95,
                    draws: int = 2000, seed: int = 0) -> Ratio:
    """Ratio of ``new``'s q-quantile to ``base``'s, with a percentile bootstrap interval. Seeded: the same
    inputs give the same interval."""
    if not base.total or not new.total:
        raise ValueError("a histogram is empty")
    rng = np.random.default_rng(seed)
    ratios = _resampled_quantiles(new, q, draws, rng) / _resampled_quantiles(base, q, draws, rng)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [alpha, 1.0 - alpha])
    return Ratio(new.quantile(q) / base.quantile(q), float(low), float(high), confidence)
