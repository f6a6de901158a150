"""Properties of the accuracy numbers (harness arithmetic, no backend involved)."""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from harness.accuracy import (
    AccuracyAccumulator,
    Budget,
    OutputConfig,
    StreamingStat,
    evaluate,
    failure_message,
    sample_metrics,
)

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


@given(arrays(np.float64, st.integers(1, 300), elements=st.floats(0, 10)),
       st.lists(st.floats(0, 10), min_size=2, max_size=6))
def test_share_over_threshold_is_monotone(values, thresholds):
    stat = StreamingStat()
    stat.add(values)
    shares = [stat.share_over(t) for t in sorted(thresholds)]
    assert all(a >= b for a, b in zip(shares, shares[1:]))
    assert 0.0 <= shares[-1] <= shares[0] <= 1.0


@settings(max_examples=25)
@given(arrays(np.float64, st.integers(1, 200), elements=st.floats(1e-9, 1e3)))
def test_exact_statistics_match_numpy(values):
    stat = StreamingStat()
    for chunk in np.array_split(values, 3):
        stat.add(chunk)
    assert stat.count == values.size
    assert stat.mean == pytest.approx(values.mean())
    assert stat.stat("p99") == pytest.approx(np.quantile(values, 0.99))
    assert stat.stat("max") == values.max() and stat.stat("min") == values.min()


def test_memory_stays_flat_past_the_exact_cap_and_quantiles_stay_close():
    rng = np.random.default_rng(0)
    stat = StreamingStat(tracked=[0.01])
    all_values = []
    for _ in range(40):  # 40 x 10k = 400k samples, past the 65,536 exact cap
        v = rng.lognormal(-6, 1.5, 10_000)
        all_values.append(v)
        stat.add(v)
    assert not stat.exact
    assert stat.memory_values() < 5_000  # buckets, not samples
    v = np.concatenate(all_values)
    for q in (0.5, 0.9, 0.99):
        assert stat.quantile(q) == pytest.approx(np.quantile(v, q), rel=0.011)
    assert stat.share_over(0.01) == pytest.approx((v > 0.01).mean(), abs=0)  # tracked: exact


def test_budget_parsing_and_errors():
    b = Budget.parse("share_over(rel_l2[logits], 1%) <= 1%")
    assert (b.stat, b.metric, b.output, b.threshold, b.op, b.bound) == ("share_over", "rel_l2", "logits", 0.01, "<=", 0.01)
    assert Budget.parse("mean(top1) >= 0.99").holds(0.995)
    assert not Budget.parse("p99(rel_l2) <= 1e-3").holds(math.nan)
    with pytest.raises(ValueError, match="STAT is one of"):
        Budget.parse("p95(rel_l2) <= 1%")
    with pytest.raises(ValueError, match="unknown metric 'rel_l3'"):
        Budget.parse("p99(rel_l3) <= 1%")
    with pytest.raises(ValueError, match="needs a threshold"):
        Budget.parse("share_over(rel_l2) <= 1%")


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
