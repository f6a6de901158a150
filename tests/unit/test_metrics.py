"""Properties of the accuracy numbers (harness arithmetic, no backend involved)."""

import re

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from harness.accuracy import AccuracyAccumulator, evaluate, failure_message, fmt, sample_metrics
from harness.budgets import Budget, OutputConfig
from harness.checks import summary_fields

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)
batches = arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 12)), elements=finite)


@given(batches)
def test_identical_outputs_have_zero_error(y):
    m, ok = sample_metrics(y, y.copy(), class_axis=1)
    assert ok.all()
    assert (m["rel_l2"] == 0).all() and (m["rel_elem"] == 0).all() and (m["max_abs"] == 0).all()
    assert (m["top1"] == 1).all() and (m["top5"] == 1).all()
    np.testing.assert_allclose(m["cosine"], 1.0, rtol=1e-12)


@given(batches, batches, st.floats(1e-3, 1e3))
def test_relative_errors_are_invariant_to_common_scaling(y, r, scale):
    if y.shape != r.shape:
        r = np.resize(r, y.shape)
    y64, r64 = y.astype(np.float64), r.astype(np.float64)
    # the property holds wherever the reference is not (near) zero; there the 1e-12 floor takes over
    assume(np.abs(r64).max(axis=1).min() * min(scale, 1.0) > 1e-6)
    a, _ = sample_metrics(y64, r64)
    b, _ = sample_metrics(y64 * scale, r64 * scale)
    for metric in ("rel_l2", "rel_elem", "cosine"):
        np.testing.assert_allclose(b[metric], a[metric], rtol=1e-9, atol=1e-12)


def test_nan_in_an_output_fails_with_counts_and_sample_indices():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((16, 10)).astype(np.float32)
    cand = ref.copy()
    cand[3, 2] = np.nan
    cand[11, :2] = np.inf
    acc = AccuracyAccumulator({"y": OutputConfig()}, [Budget.parse("p99(rel_l2) <= 1%")])
    acc.update({"y": cand[:8]}, {"y": ref[:8]}, 0)
    acc.update({"y": cand[8:]}, {"y": ref[8:]}, 8)
    summ = acc.summary()
    verdict = evaluate(summ, [Budget.parse("p99(rel_l2) <= 1%")])
    assert not verdict.passed
    assert all(r.passed for r in verdict.results)  # the finite samples are fine: NaN alone fails the gate
    s = summ["y"]
    assert (s.nonfinite_samples, s.nan_elements, s.inf_elements) == (2, 1, 2)
    assert s.stats["rel_l2"].count == 14
    msg = failure_message(verdict, summ, case="m-b-r-p", samples=16)
    assert "2 samples with non-finite values (1 NaN, 2 Inf elements)" in msg and "#3, #11" in msg


def test_worst_samples_are_named_in_order():
    ref = np.ones((20, 4))
    cand = ref.copy()
    cand[7] *= 1.5
    cand[13] *= 1.2
    cand[2] *= 1.05
    acc = AccuracyAccumulator({"y": OutputConfig()}, [])
    for start in range(0, 20, 6):
        acc.update({"y": cand[start:start + 6]}, {"y": ref[start:start + 6]}, start)
    worst = acc.summary()["y"].worst["rel_l2"]
    assert [i for _, i in worst[:3]] == [7, 13, 2]
    assert worst[0][0] == pytest.approx(0.5)


def test_class_agreement_on_a_segmentation_layout():
    ref = np.zeros((2, 3, 4, 4))
    ref[:, 1] = 1.0  # class 1 wins everywhere
    cand = ref.copy()
    cand[0, 2, 0, :] = 2.0  # sample 0: 4 of 16 pixels flip to class 2
    m, _ = sample_metrics(cand, ref, class_axis=1)
    assert m["top1"].tolist() == [0.75, 1.0]
    assert m["top5"].tolist() == [1.0, 1.0]


def cosine_case(n: int = 200):
    """``n`` samples whose cosine similarity falls from 1 towards 0.9 for a few of them."""
    rng = np.random.default_rng(5)
    ref = rng.standard_normal((n, 16))
    cand = ref + rng.standard_normal((n, 16)) * np.linspace(0.0, 0.05, n)[:, None]
    cand[[17, 101]] = ref[[17, 101]] + rng.standard_normal((2, 16)) * 0.5  # two bad samples
    return cand, ref


def test_rows_show_the_tail_that_matters_for_each_metric_and_any_percentile_a_budget_names():
    cand, ref = cosine_case()
    budgets = [Budget.parse("p1(cosine) >= 0.999"), Budget.parse("share_under(cosine, 0.999) <= 5%"),
               Budget.parse("p99.9(rel_l2) <= 1")]
    acc = AccuracyAccumulator({"y": OutputConfig(class_axis=1)}, budgets)
    for start in range(0, 200, 64):
        acc.update({"y": cand[start:start + 64]}, {"y": ref[start:start + 64]}, start)
    summ = acc.summary()
    fields = summary_fields(summ, budgets)
    m, cos = fields["metrics"], sample_metrics(cand, ref)[0]["cosine"]
    assert {k for k in m if k.startswith("cosine.")} == {
        "cosine.mean", "cosine.min", "cosine.p1", "cosine.p5", "cosine.p10", "cosine.p50", "cosine.share_under_0.999"}
    assert {k for k in m if k.startswith("rel_l2.")} == {
        "rel_l2.mean", "rel_l2.p50", "rel_l2.p90", "rel_l2.p99", "rel_l2.max", "rel_l2.p99.9", "rel_l2.share_over_0.01"}
    assert {k for k in m if k.startswith("top1.")} == {"top1.mean", "top1.min", "top1.p1", "top1.p5", "top1.p10",
                                                     "top1.p50"}
    assert m["cosine.p1"] == pytest.approx(np.quantile(cos, 0.01)) and m["cosine.min"] == pytest.approx(cos.min())
    assert m["cosine.share_under_0.999"] == pytest.approx((cos < 0.999).mean())
    verdict = evaluate(summ, budgets)
    assert [r.passed for r in verdict.results] == [False, False, True]
    msg = failure_message(verdict, summ, case="m-b-r-p", samples=200)
    # the low tail of cosine, and its worst samples lowest first
    assert re.search(r"cosine: mean \S+  min \S+  p1 \S+  p5 \S+  p10 \S+  p50 \S+  share_under_0.999 \S+\n", msg), msg
    assert "worst samples: #17" in msg or "worst samples: #101" in msg


def test_numbers_near_one_keep_the_digits_of_their_distance_to_one():
    # a cosine p1 of 0.99998 against a bound of 0.99999 must not read "1"
    assert [fmt(v) for v in (0.99998, 0.9997, 0.99979644, 0.999999086, 0.999999999999731, 0.9951, 1.0, 0.5)] == [
        "0.99998", "0.9997", "0.999796", "0.999999086", "1-2.7e-13", "0.9951", "1", "0.5"]
