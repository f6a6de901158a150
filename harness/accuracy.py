"""Accuracy numbers, defined once.

Per sample (one item along the batch axis) and per output, comparing a candidate ``y`` with the
reference ``r`` (both taken as float64):

``rel_l2``    ``‖y − r‖ / max(‖r‖, 1e-12)``: the relative error of the whole sample.
``rel_elem``  the largest elementwise relative error ``|y_i − r_i| / max(|r_i|, 1e-3·max|r|)``; the floor
              keeps near-zero reference elements from dominating.
``max_abs``   ``max |y_i − r_i|``.
``cosine``    cosine similarity of ``y`` and ``r`` (1 when both are zero).
``top1``      for outputs with a class axis: the share of positions whose argmax agrees with the
              reference's (one position for a classifier, every pixel for a segmenter).
``top5``      the share of positions whose reference argmax is among the candidate's five best.

Task metrics (mask IoU / Dice at a threshold, absolute error in output units over chosen channels, exact
sequences after greedy CTC decoding) and their label_ forms, for outputs whose registry entry asks for them,
are computed by :mod:`harness.task_metrics`; an "of fp32" budget compares a label metric with the FP32
reference's own score, accumulated beside it.

Each metric's direction and best value live in :data:`harness.budgets.METRICS`. Statistics over the
evaluation set: count, mean and the tail that matters for the metric (:func:`harness.budgets.tail_stats`:
p50, p90, p99 and max of an error; min, p1, p5, p10 and p50 of a similarity or agreement), any percentile a
budget names, and the share of samples on the bad side of a threshold. They are computed streaming, batch by
batch, in bounded memory (:class:`harness.sketch.StreamingStat`: exact up to 65,536 samples, then a sketch
whose accuracy is stated there). Samples with NaN or Inf in an output are counted, named and kept out of
the statistics; they always fail a gate.

Budgets (:class:`harness.budgets.Budget`) name a statistic and a bound, e.g. ``p99(rel_l2) <= 1%``,
``share_over(rel_l2, 1%) <= 1%`` ("at most 1 % of samples have more than 1 % relative error") or
``p1(cosine[logits]) >= 0.99`` ("99 % of samples have cosine >= 0.99 on output logits").
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .budgets import METRICS, Budget, OutputConfig, quantile_of, share_stat, tail_stats
from .sketch import StreamingStat
from .task_metrics import label_metrics, task_metrics

__all__ = ["METRICS", "AccuracyAccumulator", "Budget", "BudgetResult", "OutputConfig", "OutputSummary",
           "StreamingStat", "Verdict", "budget_value", "evaluate", "failure_message", "fmt", "sample_metrics",
           "share_key", "stat_value"]

# thresholds whose share is always reported (rel_l2 over 1 %, the users' usual question)
DEFAULT_SHARES: dict[str, tuple[float, ...]] = {"rel_l2": (0.01,), "rel_elem": (0.01,)}
WORST_K = 5
_EPS = 1e-12
_ELEM_FLOOR = 1e-3


# --------------------------------------------------------------------------------------------- metrics


def batch_first(x: np.ndarray, batch_axis: int | None, axes: tuple[int | None, ...] = ()
                ) -> tuple[np.ndarray, tuple[int | None, ...]]:
    """``x`` with its samples on axis 0 (a tensor without a batch axis is one sample), and ``axes`` (given in
    full-tensor coordinates) in the new ones."""
    x = np.asarray(x)
    if batch_axis is None:
        return x[None], tuple(None if a is None else (a % x.ndim) + 1 for a in axes)
    if batch_axis != 0:
        moved = np.moveaxis(x, batch_axis, 0)
        return moved, tuple(None if a is None else _moved_axis(a, batch_axis, x.ndim) for a in axes)
    return x, tuple(None if a is None else a % x.ndim for a in axes)


def sample_metrics(
    candidate: np.ndarray, reference: np.ndarray, *, class_axis: int | None = None, batch_axis: int | None = 0,
    config: OutputConfig | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-sample metrics of one output for one batch (``config``: the output's class axis and task metrics).

    Returns ``(metrics, finite)`` where each metric is an array of one value per sample and ``finite``
    says which samples have only finite candidate values (the others' metrics are NaN).
    """
    cfg = config if config is not None else OutputConfig(class_axis=class_axis)
    y = np.asarray(candidate)
    r = np.asarray(reference)
    if y.shape != r.shape:
        raise ValueError(f"candidate shape {y.shape} differs from reference shape {r.shape}")
    y, (class_axis, channel_axis) = batch_first(y, batch_axis, (cfg.class_axis, cfg.channel_axis))
    r, _ = batch_first(r, batch_axis)
    n = y.shape[0]
    yf = y.reshape(n, -1).astype(np.float64)
    rf = r.reshape(n, -1).astype(np.float64)
    finite = np.asarray(np.isfinite(yf).all(axis=1))
    with np.errstate(invalid="ignore", over="ignore"):
        diff = yf - rf
        rnorm = np.linalg.norm(rf, axis=1)
        ynorm = np.linalg.norm(yf, axis=1)
        out: dict[str, np.ndarray] = {}
        out["rel_l2"] = np.linalg.norm(diff, axis=1) / np.maximum(rnorm, _EPS)
        absr = np.abs(rf)
        floor = np.maximum(_ELEM_FLOOR * absr.max(axis=1, initial=0.0), _EPS)[:, None]
        out["rel_elem"] = (np.abs(diff) / np.maximum(absr, floor)).max(axis=1, initial=0.0)
        out["max_abs"] = np.abs(diff).max(axis=1, initial=0.0)
        dot = (yf * rf).sum(axis=1)
        denom = ynorm * rnorm
        both_zero = (ynorm == 0) & (rnorm == 0)
        out["cosine"] = np.where(both_zero, 1.0, dot / np.where(denom == 0, 1.0, denom))
        out["cosine"] = np.where(~both_zero & (denom == 0), 0.0, out["cosine"])
        if class_axis is not None:
            out.update(_class_agreement(y, r, class_axis))
        if cfg.metrics:
            out.update(task_metrics(y, r, cfg, class_axis=class_axis, channel_axis=channel_axis))
    for k in out:
        out[k] = np.where(finite, out[k], np.nan)
    return out, finite


def _moved_axis(axis: int, moved: int, ndim: int) -> int:
    order = list(range(ndim))
    order.insert(0, order.pop(moved))
    return order.index(axis % ndim)


def _class_agreement(y: np.ndarray, r: np.ndarray, class_axis: int) -> dict[str, np.ndarray]:
    """Top-1 / top-5 agreement per sample along ``class_axis`` (axis 0 is the batch)."""
    ca = class_axis % y.ndim
    if ca == 0:
        raise ValueError("the class axis cannot be the batch axis")
    n = y.shape[0]
    ym = np.moveaxis(y, ca, -1).reshape(n, -1, y.shape[ca])
    rm = np.moveaxis(r, ca, -1).reshape(n, -1, r.shape[ca])
    ref_top = rm.argmax(axis=-1)
    top1 = (ym.argmax(axis=-1) == ref_top).mean(axis=1)
    k = min(5, ym.shape[-1])
    ref_score = np.take_along_axis(ym, ref_top[..., None], axis=-1)
    # the reference's class is in the candidate's top k if fewer than k classes score strictly higher
    rank = (ym > ref_score).sum(axis=-1)
    top5 = (rank < k).mean(axis=1)
    return {"top1": top1.astype(np.float64), "top5": top5.astype(np.float64)}


# ------------------------------------------------------------------------------------- accumulation


@dataclass
class OutputSummary:
    """Statistics of one output over the evaluation set."""

    name: str
    stats: dict[str, StreamingStat]
    nonfinite_samples: int = 0
    nan_elements: int = 0
    inf_elements: int = 0
    nonfinite_indices: list[int] = field(default_factory=list)
    # per metric: the worst samples, as (value, sample index), worst first
    worst: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    # label metrics of the FP32 reference itself, for "of fp32" budgets
    fp32_stats: dict[str, StreamingStat] = field(default_factory=dict)


class AccuracyAccumulator:
    """Feeds batches of candidate and reference outputs; keeps only bounded summaries."""

    def __init__(
        self,
        outputs: Mapping[str, OutputConfig],
        budgets: Iterable[Budget] = (),
        *,
        batch_axes: Mapping[str, int | None] | None = None,
    ):
        self.outputs = dict(outputs)
        self.batch_axes = dict(batch_axes or {})
        tracked: dict[str, set[float]] = {m: set(DEFAULT_SHARES.get(m, ())) for m in METRICS}
        self.labelled = any(cfg.labels for cfg in self.outputs.values())
        for b in budgets:
            if b.threshold is not None:  # share_over / share_under: counted exactly
                tracked[b.metric].add(b.threshold)
        self._tracked = tracked
        self.samples = 0
        self.summaries: dict[str, OutputSummary] = {}
        self._worst_heaps: dict[tuple[str, str], list[tuple[float, int]]] = {}

    def _summary(self, name: str) -> OutputSummary:
        if name not in self.summaries:
            cfg = self.outputs.get(name, OutputConfig())
            self.summaries[name] = OutputSummary(
                name, {m: StreamingStat(self._tracked[m], best=METRICS[m].best) for m in cfg.metric_names()},
                fp32_stats={m: StreamingStat(self._tracked[m], best=METRICS[m].best)
                            for m in cfg.label_metric_names()})
        return self.summaries[name]

    def update(self, candidate: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], first_index: int,
               labels: Mapping[str, np.ndarray] | None = None) -> None:
        """Add one batch whose first sample has index ``first_index`` in the evaluation set; ``labels``: per
        output with labels, the batch's labels (samples on axis 0)."""
        n_batch = None
        for name, ref in reference.items():
            if name not in candidate:
                raise KeyError(f"output {name!r} is missing from the candidate's outputs ({sorted(candidate)})")
            cfg = self.outputs.get(name, OutputConfig())
            batch_axis = self.batch_axes.get(name, 0)
            values, finite = sample_metrics(candidate[name], ref, batch_axis=batch_axis, config=cfg)
            summ = self._summary(name)
            if cfg.labels is not None:
                if labels is None or name not in labels:
                    raise KeyError(f"output {name!r} has labels ({cfg.labels!r}) but none were given for this batch")
                values.update(self._label_values(candidate[name], labels[name], cfg, batch_axis, finite))
                for metric, v in self._label_values(ref, labels[name], cfg, batch_axis, None).items():
                    summ.fp32_stats[metric].add(v)
            n = finite.size
            n_batch = n if n_batch is None else max(n_batch, n)
            bad = np.flatnonzero(~finite)
            if bad.size:
                y = np.asarray(candidate[name])
                summ.nonfinite_samples += int(bad.size)
                summ.nan_elements += int(np.isnan(y).sum())
                summ.inf_elements += int(np.isinf(y).sum())
                room = WORST_K * 2 - len(summ.nonfinite_indices)
                summ.nonfinite_indices.extend(int(first_index + i) for i in bad[: max(room, 0)])
            for metric, stat in summ.stats.items():
                v = values[metric]
                ok = v[finite]
                stat.add(ok)
                self._track_worst(name, metric, v, finite, first_index)
        self.samples += n_batch or 0

    @staticmethod
    def _label_values(y: np.ndarray, labels: np.ndarray, cfg: OutputConfig, batch_axis: int | None,
                      finite: np.ndarray | None) -> dict[str, np.ndarray]:
        y, (class_axis, channel_axis) = batch_first(y, batch_axis, (cfg.class_axis, cfg.channel_axis))
        values = label_metrics(y, labels, cfg, class_axis=class_axis, channel_axis=channel_axis)
        if finite is not None:
            values = {k: np.where(finite, v, np.nan) for k, v in values.items()}
        return values

    def _track_worst(self, output: str, metric: str, v: np.ndarray, finite: np.ndarray, first: int) -> None:
        # a min-heap of (badness, -index) keeps the K worst; badness is the value, or -value if higher is better
        sign = 1.0 if METRICS[metric].better == "lower" else -1.0
        heap = self._worst_heaps.setdefault((output, metric), [])
        idx = np.flatnonzero(finite)
        if idx.size > WORST_K:
            part = np.argpartition(-sign * v[idx], WORST_K - 1)[:WORST_K]
            idx = idx[part]
        for i in idx.tolist():
            item = (sign * float(v[i]), -(first + i))
            if len(heap) < WORST_K:
                heapq.heappush(heap, item)
            elif item > heap[0]:
                heapq.heapreplace(heap, item)

    def summary(self) -> dict[str, OutputSummary]:
        for (output, metric), heap in self._worst_heaps.items():
            sign = 1.0 if METRICS[metric].better == "lower" else -1.0
            self.summaries[output].worst[metric] = [(sign * b, -i) for b, i in sorted(heap, reverse=True)]
        return self.summaries


# ----------------------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class BudgetResult:
    budget: Budget
    output: str
    value: float
    passed: bool
    fp32: float | None = None  # for an "of fp32" budget: the FP32 reference's own value of the statistic


@dataclass
class Verdict:
    """The outcome of checking every budget against a summary."""

    results: list[BudgetResult]
    nonfinite: dict[str, OutputSummary]
    problems: list[str]

    @property
    def passed(self) -> bool:
        return not self.problems and not self.nonfinite and all(r.passed for r in self.results)


def stat_value(st: StreamingStat, name: str) -> float:
    """One statistic by name: ``mean``, ``min``, ``max`` or a percentile ``pN``."""
    if name == "mean":
        return st.mean
    if name in ("min", "max"):
        return getattr(st, name) if st.count else math.nan
    q = quantile_of(name)
    if q is None:
        raise KeyError(name)
    return st.quantile(q)


def share_key(name: str, threshold: float) -> str:
    """How a share is named in result rows: ``share_over_0.01``."""
    return f"{name}_{threshold:g}"


def budget_value(summary: OutputSummary, budget: Budget, *, fp32: bool = False) -> float:
    """A budget's statistic over the candidate's samples (``fp32``: over the FP32 reference's, label metrics)."""
    stat = (summary.fp32_stats if fp32 else summary.stats).get(budget.metric)
    if stat is None:
        return math.nan
    if budget.threshold is not None:
        return stat.share_over(budget.threshold) if budget.stat == "share_over" else stat.share_under(budget.threshold)
    return stat_value(stat, budget.stat)


def _not_computed(metric: str, output: str) -> str:
    if metric in ("top1", "top5"):
        return f"output {output!r} has no class axis, so {metric} is not computed (set class_axis for it in the registry)"
    if metric.startswith("label_"):
        return (f"output {output!r} has no labels for {metric} (set labels, and the task metric it scores, for it in "
                "the registry)")
    return f"output {output!r} does not compute {metric} (add it to the output's metrics in the registry)"


def evaluate(summaries: Mapping[str, OutputSummary], budgets: Iterable[Budget]) -> Verdict:
    """Check budgets. A budget that names no output holds for every output that computes its metric (a class
    or task metric is computed only where the registry asks for it); one that names an output, for that one."""
    results: list[BudgetResult] = []
    problems: list[str] = []
    for b in budgets:
        if b.output:
            targets = [b.output]
        else:
            targets = [o for o, s in summaries.items() if b.metric in s.stats]
            if not targets and not b.where_computed:
                targets = list(summaries)[:1]  # reported as a problem below
        for out in targets:
            if out not in summaries:
                problems.append(f"budget {b.label!r} names output {out!r}, which the model does not have "
                                f"(outputs: {', '.join(summaries)})")
                continue
            if b.metric not in summaries[out].stats:
                problems.append(f"budget {b.label!r}: {_not_computed(b.metric, out)}")
                continue
            value = budget_value(summaries[out], b)
            fp32 = budget_value(summaries[out], b, fp32=True) if b.relative else None
            results.append(BudgetResult(b, out, value, b.holds(value, fp32), fp32))
    nonfinite = {k: s for k, s in summaries.items() if s.nonfinite_samples}
    return Verdict(results, nonfinite, problems)


def fmt(value: float | None) -> str:
    """A number as a person wants to read it in a table or a failure message."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.3e}"
    if 0.999 <= value < 1.0:
        # near 1 (cosine, agreement) the digits that matter are those of the distance to 1: three of them,
        # as decimals while that stays short, else as the distance itself
        distance = 1.0 - value
        if distance < 1e-7:
            return f"1-{distance:.2g}"
        return f"{value:.{2 - math.floor(math.log10(distance))}f}".rstrip("0")
    return f"{value:.4g}"


def failure_message(verdict: Verdict, summaries: Mapping[str, OutputSummary], *, case: str, samples: int,
                    report: str | None = None) -> str:
    """A message that shows the numbers: each failing bound, the statistics and the worst samples."""
    lines = [f"accuracy gate failed for {case} over {samples} samples"]
    for out, s in verdict.nonfinite.items():
        lines.append(
            f"  output {out!r}: {s.nonfinite_samples} samples with non-finite values "
            f"({s.nan_elements} NaN, {s.inf_elements} Inf elements); first samples: "
            f"{', '.join(f'#{i}' for i in s.nonfinite_indices[:WORST_K])}"
        )
    for p in verdict.problems:
        lines.append(f"  {p}")
    shown: set[tuple[str, str]] = set()
    for r in verdict.results:
        if r.passed:
            continue
        b, s = r.budget, summaries[r.output]
        st = s.stats[b.metric]
        bound = f"{b.op} {fmt(b.bound)}" if not b.relative else \
            f"{b.op} {fmt(b.limit(r.fp32))}: {fmt(100 * b.bound)} % of fp32's {fmt(r.fp32 if r.fp32 is not None else math.nan)}"
        lines.append(f"  output {r.output!r}: {b.label}: measured {fmt(r.value)} (bound {bound})")
        if (r.output, b.metric) in shown:
            continue
        shown.add((r.output, b.metric))
        tail = "  ".join(f"{name} {fmt(stat_value(st, name))}" for name in tail_stats(b.metric))
        shares = [f"{share_key(share_stat(b.metric), t)} {fmt(getattr(st, share_stat(b.metric))(t))}"
                  for t in st.thresholds]
        lines.append(f"    {b.metric}: " + "  ".join([tail, *shares]))
        worst = s.worst.get(b.metric, [])
        if worst:
            lines.append("    worst samples: " + ", ".join(f"#{i} ({fmt(v)})" for v, i in worst))
    if report:
        lines.append(f"  report: {report}")
    return "\n".join(lines)
