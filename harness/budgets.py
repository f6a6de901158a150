"""What the registry says about judging accuracy: metric names and directions, output settings, budgets.

This module knows names, not arithmetic (that is :mod:`harness.accuracy`), so the registry can parse and
check budgets without the metric code.

Every metric has a direction and a best value in :data:`METRICS`, the one table to extend when a metric is
added (a task metric such as IoU is ``Metric("higher", 1.0)``). The direction decides which tail of a
metric matters: the high tail of an error, the low tail of a similarity or an agreement. Result rows and
failure messages show that tail (:func:`tail_stats`), and a budget must bound it:

``STAT(METRIC[OUTPUT]) OP BOUND``   STAT is ``mean``, ``min``, ``max`` or any percentile ``pN`` (``p1``,
                                    ``p50``, ``p99.9``); ``[OUTPUT]`` is optional (default: every output).
``share_over(METRIC[OUTPUT], T) <= S``   at most S of the samples have METRIC above T (lower-is-better).
``share_under(METRIC[OUTPUT], T) <= S``  at most S of the samples have METRIC below T (higher-is-better).

Numbers may be written as percentages (``1%``). A budget that points the wrong way (a lower bound on an
error), bounds the harmless tail (``p99(cosine) >= 0.99``: only the best 1 % of samples are constrained)
or counts the good side (``share_over(cosine, 0.99) >= 99%``) is refused with the form that says it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """A per-sample metric's direction and its value for a perfect sample (what the sketch centres on)."""

    better: str  # "lower" (errors) or "higher" (similarities, agreements, task metrics)
    best: float


METRICS: dict[str, Metric] = {
    "rel_l2": Metric("lower", 0.0),
    "rel_elem": Metric("lower", 0.0),
    "max_abs": Metric("lower", 0.0),
    "cosine": Metric("higher", 1.0),
    "top1": Metric("higher", 1.0),
    "top5": Metric("higher", 1.0),
}
CLASS_METRICS = ("top1", "top5")
# the statistics a row and a failure message show: the tail where samples go wrong, and the median
TAIL_STATS = {"lower": ("mean", "p50", "p90", "p99", "max"), "higher": ("mean", "min", "p1", "p5", "p10", "p50")}
# a share counts the bad side of a threshold
SHARE_STATS = {"lower": "share_over", "higher": "share_under"}
STATS = ("mean", "min", "max", "pN", "share_over", "share_under")


def tail_stats(metric: str) -> tuple[str, ...]:
    return TAIL_STATS[METRICS[metric].better]


def share_stat(metric: str) -> str:
    return SHARE_STATS[METRICS[metric].better]


def quantile_of(stat: str) -> float | None:
    """``p99`` -> 0.99, ``p99.9`` -> 0.999; None for a name that is not a percentile."""
    m = re.fullmatch(r"p(\d+(?:\.\d+)?)", stat)
    return float(m.group(1)) / 100.0 if m else None


@dataclass(frozen=True)
class OutputConfig:
    """How to judge one output: its class axis (in full-tensor coordinates, batch included), if any."""

    class_axis: int | None = None


_BUDGET = re.compile(
    r"""^\s*(?P<stat>[a-z_]+|p[0-9.]+)\s*\(\s*
        (?P<metric>[a-z0-9_]+)\s*(?:\[\s*(?P<output>[^\]]+?)\s*\])?\s*
        (?:,\s*(?P<thr>[-+0-9.eE]+%?)\s*)?\)\s*
        (?P<op><=|>=|<|>)\s*(?P<bound>[-+0-9.eE]+%?)\s*$""",
    re.VERBOSE,
)
_UPPER = ("<=", "<")
_FLIP = {"<=": ">=", "<": ">", ">=": "<=", ">": "<"}


def _number(text: str) -> float:
    text = text.strip()
    if text.endswith("%"):
        return float(text[:-1]) / 100.0
    return float(text)


def _pct(x: float) -> str:
    return f"{round(x, 6):g}"


@dataclass(frozen=True)
class Budget:
    """One accuracy bound: ``STAT(METRIC[OUTPUT]) OP BOUND`` or ``share_over|share_under(METRIC, T) OP S``."""

    stat: str
    metric: str
    op: str
    bound: float
    output: str | None = None
    threshold: float | None = None
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> Budget:
        """Parse a budget; raises ValueError with the problem (the registry adds model and field)."""
        m = _BUDGET.match(text) if isinstance(text, str) else None
        q = quantile_of(m.group("stat")) if m else None
        if not m or (m.group("stat") not in STATS and q is None):
            raise ValueError(
                f"cannot read budget {text!r}: expected 'STAT(METRIC) OP BOUND' such as 'p99(rel_l2) <= 1%' "
                f"or 'share_over(rel_l2, 1%) <= 1%'; STAT is one of mean, min, max, pN (any percentile: p1, "
                f"p50, p99.9), share_over, share_under"
            )
        stat, metric, op = m.group("stat"), m.group("metric"), m.group("op")
        if metric not in METRICS:
            raise ValueError(f"budget {text!r}: unknown metric {metric!r}; known: {', '.join(METRICS)}")
        if q is not None and not 0.0 < q < 1.0:
            raise ValueError(f"budget {text!r}: a percentile lies strictly between p0 and p100; write min or max")
        thr = m.group("thr")
        share = stat.startswith("share_")
        if share and thr is None:
            raise ValueError(f"budget {text!r}: {stat} needs a threshold: {stat}({metric}, 1%)")
        if not share and thr is not None:
            raise ValueError(f"budget {text!r}: only share_over and share_under take a threshold")
        try:
            bound = _number(m.group("bound"))
            threshold = _number(thr) if thr is not None else None
        except ValueError:
            raise ValueError(f"budget {text!r}: bound or threshold is not a number") from None
        out = m.group("output")
        problem = _direction_problem(stat, metric, op, m.group("bound"), bound, out, thr)
        if problem:
            raise ValueError(f"budget {text!r}: {problem}")
        return cls(stat, metric, op, bound, out, threshold, text.strip())

    @property
    def label(self) -> str:
        return self.text or self.render()

    def render(self) -> str:
        return _render(self.stat, self.metric, self.output, f"{self.threshold:g}" if self.threshold is not None
                       else None, self.op, f"{self.bound:g}")

    def holds(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return {
            "<=": value <= self.bound,
            ">=": value >= self.bound,
            "<": value < self.bound,
            ">": value > self.bound,
        }[self.op]


def _render(stat: str, metric: str, output: str | None, thr: str | None, op: str, bound: str) -> str:
    tgt = metric + (f"[{output}]" if output else "")
    return f"{stat}({tgt}{f', {thr}' if thr is not None else ''}) {op} {bound}"


def _direction_problem(stat: str, metric: str, op: str, bound_text: str, bound: float, output: str | None,
                       thr: str | None) -> str | None:
    """Why a budget does not bound the tail that matters for its metric (None when it does), with the
    budget that does."""
    better = METRICS[metric].better
    bad_side, harmless = ("above", "low") if better == "lower" else ("below", "high")
    upper = op in _UPPER
    if stat.startswith("share_"):
        want = SHARE_STATS[better]
        if stat != want:
            # a lower bound on the good side's share is an upper bound on the bad side's: 1 - S
            bad = bound_text if upper else f"{_pct(100 * (1 - bound))}%"
            fixed = _render(want, metric, output, thr, "<=", bad)
            return (f"{stat} counts the samples on {metric}'s good side of {thr}; 'at most {bad} of samples have "
                    f"{metric} {bad_side} {thr}' is {fixed}")
        if not upper:
            return (f"{stat} is the share of samples with {metric} {bad_side} {thr}, which a budget bounds from "
                    f"above: {_render(stat, metric, output, thr, _FLIP[op], bound_text)}")
        return None
    q = quantile_of(stat)
    if better == "lower":
        wrong_tail = stat == "min" or (q is not None and q < 0.5)
    else:
        wrong_tail = stat == "max" or (q is not None and q > 0.5)
    mirror = {"min": "max", "max": "min"}.get(stat) or f"p{_pct(100 - 100 * (q or 0.5))}"
    fixed_stat = mirror if wrong_tail else stat
    good_op = op if upper == (better == "lower") else _FLIP[op]
    fixed = _render(fixed_stat, metric, output, None, good_op, bound_text)
    if good_op != op:
        direction = "above (<=, <)" if better == "lower" else "below (>=, >)"
        return f"{metric} is better when {better}, so a budget bounds it from {direction}: {fixed}"
    if wrong_tail:
        fq = quantile_of(fixed_stat)
        who = "every sample has" if fq is None else \
            f"{_pct(100 * fq if better == 'lower' else 100 - 100 * fq)} % of samples have"
        return f"{stat} bounds {metric}'s harmless ({harmless}) tail; '{who} {metric} {good_op} {bound_text}' is {fixed}"
    return None
