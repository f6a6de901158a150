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

``STAT(label_METRIC[OUTPUT]) OP B of fp32``   the MLPerf form: a task metric scored against the samples'
                                    labels, bounded relative to the FP32 model's own score on the same samples
                                    (``mean(label_top1) >= 99% of fp32``).

Task metrics are chosen per output in the registry (:class:`OutputConfig`); :data:`DEFAULT_BUDGETS` holds
the budgets every registry inherits for each precision kind.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace


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
    # task metrics, enabled per output (OutputConfig.metrics): the candidate against the reference
    "iou": Metric("higher", 1.0),  # masks (value > threshold): |A and B| / |A or B|, 1 when both are empty
    "dice": Metric("higher", 1.0),  # 2 |A and B| / (|A| + |B|)
    "abs_err": Metric("lower", 0.0),  # mean |y - r| over the chosen channels, in the output's own units
    "abs_err_max": Metric("lower", 0.0),  # the largest |y - r| over the chosen channels
    "ctc_exact": Metric("higher", 1.0),  # 1 when greedy CTC decoding gives the reference's sequence, else 0
    # the same scored against the samples' labels (and, for "of fp32" budgets, the reference's score too)
    "label_top1": Metric("higher", 1.0),
    "label_iou": Metric("higher", 1.0),
    "label_dice": Metric("higher", 1.0),
    "label_abs_err": Metric("lower", 0.0),
    "label_ctc_exact": Metric("higher", 1.0),
}
GENERIC_METRICS = ("rel_l2", "rel_elem", "max_abs", "cosine")
CLASS_METRICS = ("top1", "top5")
TASK_METRICS = ("iou", "dice", "abs_err", "abs_err_max", "ctc_exact")
LABEL = "label_"
# a label metric and the task metric it scores against labels (abs_err_max has no label form)
LABEL_METRICS = {"label_top1": "top1", "label_iou": "iou", "label_dice": "dice", "label_abs_err": "abs_err",
                 "label_ctc_exact": "ctc_exact"}
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
    """How to judge one output. Axes are in full-tensor coordinates, batch included.

    ``class_axis`` enables top-1 / top-5 agreement (and is the axis greedy CTC decoding takes its argmax
    along); ``metrics`` names the task metrics to compute (:data:`TASK_METRICS`); ``threshold`` makes masks
    for iou / dice; ``channel_axis`` and ``channels`` choose what abs_err covers (every element when unset);
    ``ctc_blank`` is the CTC blank's class index; ``labels`` names the samples file's array of labels for
    this output, which enables the label_ forms of its metrics."""

    class_axis: int | None = None
    metrics: tuple[str, ...] = ()
    threshold: float = 0.5
    channel_axis: int | None = None
    channels: tuple[int, ...] = ()
    ctc_blank: int = 0
    labels: str | None = None

    def metric_names(self) -> tuple[str, ...]:
        """Every per-sample metric this output gets, in :data:`METRICS` order."""
        names = set(GENERIC_METRICS) | set(self.metrics)
        if self.class_axis is not None:
            names |= set(CLASS_METRICS)
        names |= set(self.label_metric_names())
        return tuple(m for m in METRICS if m in names)

    def label_metric_names(self) -> tuple[str, ...]:
        """The label_ metrics this output gets: those whose task metric it computes, when it has labels."""
        if self.labels is None:
            return ()
        scored = set(self.metrics) | ({"top1"} if self.class_axis is not None else set())
        return tuple(m for m, task in LABEL_METRICS.items() if task in scored)


_BUDGET = re.compile(
    r"""^\s*(?P<stat>[a-z_]+|p[0-9.]+)\s*\(\s*
        (?P<metric>[a-z0-9_]+)\s*(?:\[\s*(?P<output>[^\]]+?)\s*\])?\s*
        (?:,\s*(?P<thr>[-+0-9.eE]+%?)\s*)?\)\s*
        (?P<op><=|>=|<|>)\s*(?P<bound>[-+0-9.eE]+%?)\s*(?P<rel>of\s+fp32)?\s*$""",
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
    # "of fp32": the bound is a fraction of the FP32 reference's own value of the statistic (label metrics)
    relative: bool = False
    # a built-in default: it holds where its metric is computed and is skipped elsewhere (top-1 agreement
    # only where an output has a class axis)
    where_computed: bool = False

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
        relative = m.group("rel") is not None
        if relative and not metric.startswith(LABEL):
            raise ValueError(f"budget {text!r}: 'of fp32' compares with the FP32 model's own score against the "
                             f"samples' labels, so it takes a label metric ({', '.join(LABEL_METRICS)}); "
                             f"{metric} already compares with FP32")
        if relative and share:
            raise ValueError(f"budget {text!r}: 'of fp32' bounds a statistic, not a share")
        return cls(stat, metric, op, bound, out, threshold, text.strip(), relative)

    @property
    def label(self) -> str:
        return self.text or self.render()

    def render(self) -> str:
        return _render(self.stat, self.metric, self.output, f"{self.threshold:g}" if self.threshold is not None
                       else None, self.op, f"{self.bound:g}") + (" of fp32" if self.relative else "")

    def limit(self, fp32: float | None = None) -> float:
        """The bound in the metric's units: for an "of fp32" budget, that fraction of FP32's own value."""
        if not self.relative:
            return self.bound
        return math.nan if fp32 is None else self.bound * fp32

    def holds(self, value: float, fp32: float | None = None) -> bool:
        limit = self.limit(fp32)
        if math.isnan(value) or math.isnan(limit):
            return False
        return {
            "<=": value <= limit,
            ">=": value >= limit,
            "<": value < limit,
            ">": value > limit,
        }[self.op]


# Budgets every registry inherits, per precision kind; a registry's [defaults.budgets], a model's budgets and
# its [[where]] blocks replace them recipe by recipe. They are meant to pass a healthy artifact of a trained
# model and fail a broken one; a model's own budgets say more. Set from measurements on ONNX Runtime CPU (AMD
# EPYC, AVX-512 VNNI) and CUDA (H200) over the bundled models (the encoder is the attention graph), the two
# trained OCR models and a constructed recurrence; README ("Default budgets") has the table.
DEFAULT_BUDGETS: dict[str, tuple[str, ...]] = {
    # graph optimizations reorder sums: p99 0 to 7.6e-7 on the bundled models, 4.3e-5 on the OCR recognizer,
    # 1.2e-4 on a trained recurrent speech model; one perturbed weight of the bundled classifier gives 0.18
    "fp32": ("p99(rel_l2) <= 1e-3", "max(rel_l2) <= 1e-2"),
    # p99 2.6e-4 to 2.1e-3 on the bundled models; the OCR recognizer's softmax has a tail of low-confidence
    # lines (p99 0.16, cosine p1 0.987) with 99.9 % of its steps agreeing
    "fp16": ("p90(rel_l2) <= 3%", "p99(rel_l2) <= 30%", "p1(cosine) >= 0.98", "mean(top1) >= 0.99"),
    # 8 mantissa bits against FP16's 11: FP16's bounds, looser (CUDA: encoder p99 4.6e-3, ranker 2.6e-2)
    "bf16": ("p90(rel_l2) <= 10%", "p1(cosine) >= 0.95", "mean(top1) >= 0.97"),
    # healthy trained models: OCR direction classifier per-channel p99 0.24, cosine p1 0.965, every decision kept;
    # OCR recognizer per-channel median 0.28, cosine p1 0.84, 93.4 % of steps; broken ones fail on agreement (the
    # recognizer per tensor: 77.5 % of steps) or on everything (0.8 % top-1)
    "int8": ("p50(rel_l2) <= 40%", "p1(cosine) >= 0.8", "mean(top1) >= 0.9"),
}


def default_budgets() -> dict[str, list[Budget]]:
    return {kind: [replace(Budget.parse(t), where_computed=True) for t in texts]
            for kind, texts in DEFAULT_BUDGETS.items()}


# How far a sample's outputs may move when nothing about the computation should change, per precision kind:
# between batch positions and batch sizes (``consistency``), and between two builds of one recipe or two runs of
# one engine (``determinism``). The registry's [defaults.consistency] / [defaults.determinism] and a model's
# [models.NAME.consistency] / [models.NAME.determinism] replace them recipe by recipe, as budgets do.
CHECKS = ("consistency", "determinism")
DEFAULT_CHECK_BOUNDS: dict[str, dict[str, tuple[str, ...]]] = {
    check: {
        # FP32: an order of magnitude under the tightest FP32 accuracy budget the bundled registry sets (1e-5
        # p99): what kernels that accumulate in another order may move, nothing a wrong result hides in
        "fp32": ("max(rel_l2) <= 1e-6",),
        # reduced precisions: a kernel chosen per batch size (or per build, where the builder times tactics) may
        # round differently; a tenth of the FP16 and BF16 accuracy budgets' p90
        "fp16": ("max(rel_l2) <= 3e-3",),
        "bf16": ("max(rel_l2) <= 1e-2",),
        # INT8: a rounding difference moves an activation by one quantization step
        "int8": ("max(rel_l2) <= 1e-2",),
    }
    for check in CHECKS
}


def default_check_bounds() -> dict[str, dict[str, list[Budget]]]:
    return {check: {kind: [replace(Budget.parse(t), where_computed=True) for t in texts]
                    for kind, texts in table.items()} for check, table in DEFAULT_CHECK_BOUNDS.items()}


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
