"""Task metrics: per-sample numbers in the task's own terms, for outputs whose registry entry asks for them.

Generic errors can miss what matters to a task: a text detector whose probability map is scaled down below
its threshold keeps a cosine of 1 and finds nothing; boxes off by 50 pixels hide inside a 10 % relative
error dominated by large coordinates. These compare what the task reads from an output:

``iou`` / ``dice``   the masks ``value > threshold`` of candidate and reference: ``|A∩B| / |A∪B|`` and
                     ``2|A∩B| / (|A| + |B|)``; 1 when both masks are empty.
``abs_err``          mean ``|y − r|`` over the chosen channels (every element when none are chosen), in the
                     output's own units (pixels for boxes); ``abs_err_max`` the largest.
``ctc_exact``        greedy CTC decoding (argmax along the class axis, repeats collapsed, blanks dropped) of
                     candidate and reference: 1 when the sequences are equal, else 0.

With labels (``labels`` in the registry: an array of the samples file) each has a ``label_`` form scoring an
output against the label instead of the reference: ``label_top1`` (the share of positions whose argmax is
the label's class), ``label_iou`` / ``label_dice`` (against a 0/1 mask), ``label_abs_err`` (against values),
``label_ctc_exact`` (against a class-index sequence, padded with negative numbers).

Every function takes arrays with the samples on axis 0 and axes given in those coordinates; it returns one
float64 value per sample. The caller (:mod:`harness.accuracy`) moves the batch axis first.
"""

from __future__ import annotations

import numpy as np

from .budgets import OutputConfig


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1)


def masks(x: np.ndarray, threshold: float) -> np.ndarray:
    return _flat(np.asarray(x)) > threshold


def overlap(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and Dice per sample of two boolean masks ``[n, elements]``; both are 1 when both masks are empty."""
    inter = (a & b).sum(axis=1).astype(np.float64)
    union = (a | b).sum(axis=1).astype(np.float64)
    total = a.sum(axis=1).astype(np.float64) + b.sum(axis=1)
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    dice = np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)
    return iou, dice


def select_channels(x: np.ndarray, channel_axis: int | None, channels: tuple[int, ...]) -> np.ndarray:
    if channel_axis is None or not channels:
        return np.asarray(x)
    return np.take(np.asarray(x), list(channels), axis=channel_axis)


def abs_errors(y: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and largest ``|y − r|`` per sample."""
    d = np.abs(_flat(y).astype(np.float64) - _flat(r).astype(np.float64))
    if d.shape[1] == 0:
        zero = np.zeros(d.shape[0])
        return zero, zero
    return d.mean(axis=1), d.max(axis=1)


def ctc_decode(x: np.ndarray, class_axis: int, blank: int) -> list[tuple[int, ...]]:
    """Greedy CTC decoding of ``[n, T, C]`` (class axis anywhere but 0): per sample, the argmax at each step,
    repeats collapsed, blanks dropped."""
    steps = np.moveaxis(np.asarray(x), class_axis, -1)
    best = steps.reshape(steps.shape[0], -1, steps.shape[-1]).argmax(axis=-1)
    return [_collapse(row, blank) for row in best]


def _collapse(row: np.ndarray, blank: int) -> tuple[int, ...]:
    if row.size == 0:
        return ()
    keep = np.ones(row.size, dtype=bool)
    keep[1:] = row[1:] != row[:-1]
    keep &= row != blank
    return tuple(int(v) for v in row[keep])


def label_sequences(labels: np.ndarray) -> list[tuple[int, ...]]:
    """Label sequences stored padded: per sample, its class indices up to the padding (negative numbers)."""
    flat = _flat(np.asarray(labels))
    return [tuple(int(v) for v in row[row >= 0]) for row in flat]


def exact(a: list[tuple[int, ...]], b: list[tuple[int, ...]]) -> np.ndarray:
    return np.array([float(x == y) for x, y in zip(a, b)], dtype=np.float64)


def task_metrics(y: np.ndarray, r: np.ndarray, cfg: OutputConfig, *, class_axis: int | None,
                 channel_axis: int | None) -> dict[str, np.ndarray]:
    """The task metrics ``cfg.metrics`` asks for, per sample, of candidate ``y`` against reference ``r``
    (samples on axis 0; ``class_axis`` and ``channel_axis`` in those coordinates)."""
    out: dict[str, np.ndarray] = {}
    wanted = set(cfg.metrics)
    if wanted & {"iou", "dice"}:
        out["iou"], out["dice"] = overlap(masks(y, cfg.threshold), masks(r, cfg.threshold))
    if wanted & {"abs_err", "abs_err_max"}:
        out["abs_err"], out["abs_err_max"] = abs_errors(select_channels(y, channel_axis, cfg.channels),
                                                        select_channels(r, channel_axis, cfg.channels))
    if "ctc_exact" in wanted:
        assert class_axis is not None  # the registry and the output layout require it
        out["ctc_exact"] = exact(ctc_decode(y, class_axis, cfg.ctc_blank), ctc_decode(r, class_axis, cfg.ctc_blank))
    return {k: v for k, v in out.items() if k in wanted}


def label_metrics(y: np.ndarray, labels: np.ndarray, cfg: OutputConfig, *, class_axis: int | None,
                  channel_axis: int | None) -> dict[str, np.ndarray]:
    """The label_ metrics of one output ``y`` (the candidate's or the reference's) against its labels."""
    out: dict[str, np.ndarray] = {}
    wanted = set(cfg.label_metric_names())
    lab = np.asarray(labels)
    if "label_top1" in wanted:
        assert class_axis is not None
        pred = np.moveaxis(np.asarray(y), class_axis, -1).argmax(axis=-1)
        out["label_top1"] = (_flat(pred) == _flat(lab.astype(np.int64))).mean(axis=1).astype(np.float64)
    if wanted & {"label_iou", "label_dice"}:
        out["label_iou"], out["label_dice"] = overlap(masks(y, cfg.threshold), _flat(lab) > 0.5)
    if "label_abs_err" in wanted:
        out["label_abs_err"] = abs_errors(select_channels(y, channel_axis, cfg.channels),
                                          select_channels(lab, channel_axis, cfg.channels))[0]
    if "label_ctc_exact" in wanted:
        assert class_axis is not None
        out["label_ctc_exact"] = exact(ctc_decode(y, class_axis, cfg.ctc_blank), label_sequences(lab))
    return {k: v for k, v in out.items() if k in wanted}
