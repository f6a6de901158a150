"""Task metrics against independent computations, streamed in batches, and the MLPerf form "of fp32"."""

from __future__ import annotations

import numpy as np
import pytest

from harness.accuracy import AccuracyAccumulator, evaluate, failure_message, sample_metrics
from harness.budgets import Budget, OutputConfig, default_budgets


def _iou_dice(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a, b = a.ravel().astype(bool), b.ravel().astype(bool)
    inter, union = np.logical_and(a, b).sum(), np.logical_or(a, b).sum()
    iou = 1.0 if union == 0 else inter / union
    dice = 1.0 if a.sum() + b.sum() == 0 else 2 * inter / (a.sum() + b.sum())
    return float(iou), float(dice)


def _greedy(steps: np.ndarray, blank: int) -> list[int]:
    out, prev = [], None
    for k in steps.argmax(axis=-1):
        if k != prev and k != blank:
            out.append(int(k))
        prev = k
    return out


def test_iou_and_dice_at_a_threshold_per_sample():
    rng = np.random.default_rng(0)
    r = rng.random((6, 1, 8, 8))
    y = r + rng.normal(0, 0.1, r.shape)
    y[4] = 0.0  # a dead map: empty mask
    r[5] = y[5] = 0.1  # both empty: a perfect sample
    m, _ = sample_metrics(y, r, config=OutputConfig(metrics=("iou", "dice"), threshold=0.3))
    for i in range(6):
        iou, dice = _iou_dice(y[i] > 0.3, r[i] > 0.3)
        assert m["iou"][i] == pytest.approx(iou) and m["dice"][i] == pytest.approx(dice)
    assert m["iou"][4] == 0.0 and m["iou"][5] == 1.0


def test_absolute_error_over_chosen_channels_in_output_units():
    rng = np.random.default_rng(1)
    r = rng.uniform(0, 640, (3, 5, 6))  # [batch, anchors, (x, y, w, h, score, class)]
    y = r.copy()
    y[:, :, 2] += 40.0  # every width off by 40 px
    y[:, :, 4] += 0.5  # scores off too, but not chosen
    cfg = OutputConfig(metrics=("abs_err", "abs_err_max"), channel_axis=2, channels=(0, 1, 2, 3))
    m, _ = sample_metrics(y, r, config=cfg)
    np.testing.assert_allclose(m["abs_err"], np.abs(y - r)[:, :, :4].mean(axis=(1, 2)))
    np.testing.assert_allclose(m["abs_err_max"], 40.0)
    # with the batch elsewhere: [anchors, batch, 6], channel_axis still in full-tensor coordinates
    cfg_t = OutputConfig(metrics=("abs_err",), channel_axis=2, channels=(0, 1, 2, 3))
    mt, _ = sample_metrics(y.transpose(1, 0, 2), r.transpose(1, 0, 2), batch_axis=1, config=cfg_t)
    np.testing.assert_allclose(mt["abs_err"], m["abs_err"])


def test_exact_sequences_after_greedy_ctc_decoding_with_a_configurable_blank():
    rng = np.random.default_rng(2)
    r = rng.random((40, 12, 5))
    y = r + rng.normal(0, 0.02, r.shape)
    for blank in (0, 4):
        m, _ = sample_metrics(y, r, config=OutputConfig(class_axis=2, metrics=("ctc_exact",), ctc_blank=blank))
        expect = [float(_greedy(y[i], blank) == _greedy(r[i], blank)) for i in range(40)]
        np.testing.assert_array_equal(m["ctc_exact"], expect)
        assert 0 < m["ctc_exact"].mean() < m["top1"].mean() <= 1  # a sequence is wrong if any step is
    # time-major [steps, batch, classes] with the batch on axis 1 decodes the same
    mt, _ = sample_metrics(y.transpose(1, 0, 2), r.transpose(1, 0, 2), batch_axis=1,
                           config=OutputConfig(class_axis=2, metrics=("ctc_exact",)))
    m0, _ = sample_metrics(y, r, config=OutputConfig(class_axis=2, metrics=("ctc_exact",)))
    np.testing.assert_array_equal(mt["ctc_exact"], m0["ctc_exact"])


def test_streamed_batches_give_the_one_shot_statistics():
    rng = np.random.default_rng(3)
    r = rng.random((64, 1, 6, 6))
    y = np.clip(r + rng.normal(0, 0.2, r.shape), 0, 1)
    cfg = {"mask": OutputConfig(metrics=("iou", "dice"), threshold=0.5)}
    acc = AccuracyAccumulator(cfg)
    for start in range(0, 64, 7):
        acc.update({"mask": y[start:start + 7]}, {"mask": r[start:start + 7]}, start)
    whole, _ = sample_metrics(y, r, config=cfg["mask"])
    stats = acc.summary()["mask"].stats
    assert stats["iou"].count == 64
    assert stats["iou"].quantile(0.01) == pytest.approx(np.quantile(whole["iou"], 0.01))
    assert stats["dice"].mean == pytest.approx(whole["dice"].mean())


def test_label_metrics_and_the_mlperf_form_of_fp32():
    rng = np.random.default_rng(4)
    n, classes = 200, 10
    labels = rng.integers(0, classes, n)
    ref = rng.normal(0, 1, (n, classes))
    ref[np.arange(n), labels] += 2.5  # FP32 gets most right
    cand = ref.copy()
    wrong = rng.random(n) < 0.2
    cand[wrong] = rng.normal(0, 1, (int(wrong.sum()), classes)) * 5  # the candidate loses some
    cfg = {"logits": OutputConfig(class_axis=1, labels="labels")}
    acc = AccuracyAccumulator(cfg)
    for s in range(0, n, 32):
        acc.update({"logits": cand[s:s + 32]}, {"logits": ref[s:s + 32]}, s, {"logits": labels[s:s + 32]})
    summ = acc.summary()
    fp32_acc = float((ref.argmax(1) == labels).mean())
    cand_acc = float((cand.argmax(1) == labels).mean())
    assert summ["logits"].fp32_stats["label_top1"].mean == pytest.approx(fp32_acc)
    assert summ["logits"].stats["label_top1"].mean == pytest.approx(cand_acc)
    assert cand_acc < 0.99 * fp32_acc
    verdict = evaluate(summ, [Budget.parse("mean(label_top1) >= 99% of fp32")])
    assert not verdict.passed
    result = verdict.results[0]
    assert result.fp32 == pytest.approx(fp32_acc) and result.value == pytest.approx(cand_acc)
    message = failure_message(verdict, summ, case="c", samples=n)
    assert f"% of fp32's {fp32_acc:.4g}"[2:] in message
    assert evaluate(summ, [Budget.parse(f"mean(label_top1) >= {cand_acc / fp32_acc - 0.01:.4f} of fp32")]).passed


def test_of_fp32_takes_label_metrics_only():
    with pytest.raises(ValueError, match="'of fp32' compares with the FP32 model's own score"):
        Budget.parse("mean(top1) >= 99% of fp32")
    assert Budget.parse("mean(label_ctc_exact[seq]) >= 0.99 of fp32").relative


def test_default_budgets_hold_where_their_metric_is_computed():
    # the built-in int8 defaults name top1; an output without a class axis is judged by the others only
    rng = np.random.default_rng(5)
    r = rng.normal(0, 1, (16, 4))
    acc = AccuracyAccumulator({"y": OutputConfig()})
    acc.update({"y": r}, {"y": r}, 0)
    verdict = evaluate(acc.summary(), default_budgets()["int8"])
    assert verdict.passed and {x.budget.metric for x in verdict.results} == {"rel_l2", "cosine"}
    # a budget a user wrote for top1 on the same output is a problem, as before
    assert not evaluate(acc.summary(), [Budget.parse("mean(top1) >= 0.9")]).passed
