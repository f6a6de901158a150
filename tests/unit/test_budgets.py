"""The budget grammar: every form it reads, and the budgets it refuses with the form that says what was meant."""

import math
import re

import pytest

from harness.budgets import METRICS, Budget, quantile_of, share_stat, tail_stats


@pytest.mark.parametrize("text, parsed", [
    ("share_over(rel_l2[logits], 1%) <= 1%", ("share_over", "rel_l2", "logits", 0.01, "<=", 0.01)),
    ("share_under(cosine, 0.99) <= 1%", ("share_under", "cosine", None, 0.99, "<=", 0.01)),
    ("p1(cosine[logits]) >= 0.99", ("p1", "cosine", "logits", None, ">=", 0.99)),
    ("p0.1( top1 ) > 90%", ("p0.1", "top1", None, None, ">", 0.9)),
    ("p99.9(rel_l2) < 2e-2", ("p99.9", "rel_l2", None, None, "<", 0.02)),
    ("p95(max_abs[out 1]) <= 0.5", ("p95", "max_abs", "out 1", None, "<=", 0.5)),
    ("mean(top1) >= 0.99", ("mean", "top1", None, None, ">=", 0.99)),
    ("min(cosine) >= 0.99", ("min", "cosine", None, None, ">=", 0.99)),
    ("max(rel_elem) <= 1e-3", ("max", "rel_elem", None, None, "<=", 1e-3)),
    ("p50(cosine) >= 0.999", ("p50", "cosine", None, None, ">=", 0.999)),  # the median: either metric
    ("p50(rel_l2) <= 1%", ("p50", "rel_l2", None, None, "<=", 0.01)),
])
def test_every_form_reads(text, parsed):
    b = Budget.parse(text)
    assert (b.stat, b.metric, b.output, b.threshold, b.op, b.bound) == pytest.approx(parsed)
    assert b.label == text and Budget.parse(b.render()) == Budget.parse(b.render())


@pytest.mark.parametrize("text, says", [
    # the harmless tail
    ("p99(cosine) >= 0.99", "p99 bounds cosine's harmless (high) tail; '99 % of samples have cosine >= 0.99' is "
                            "p1(cosine) >= 0.99"),
    ("p99.9(cosine[logits]) > 0.9", "'99.9 % of samples have cosine > 0.9' is p0.1(cosine[logits]) > 0.9"),
    ("max(top1) >= 0.9", "max bounds top1's harmless (high) tail; 'every sample has top1 >= 0.9' is "
                         "min(top1) >= 0.9"),
    ("p1(rel_l2) <= 1%", "p1 bounds rel_l2's harmless (low) tail; '99 % of samples have rel_l2 <= 1%' is "
                         "p99(rel_l2) <= 1%"),
    ("min(max_abs) <= 0.1", "'every sample has max_abs <= 0.1' is max(max_abs) <= 0.1"),
    # the wrong way
    ("p99(rel_l2) >= 1%", "rel_l2 is better when lower, so a budget bounds it from above (<=, <): "
                          "p99(rel_l2) <= 1%"),
    ("mean(top1) < 0.99", "top1 is better when higher, so a budget bounds it from below (>=, >): mean(top1) > 0.99"),
    ("p99(cosine) <= 0.99", "from below (>=, >): p1(cosine) >= 0.99"),
    # shares count the bad side, bounded from above
    ("share_over(cosine, 0.99) >= 99%", "share_over counts the samples on cosine's good side of 0.99; 'at most 1% "
                                        "of samples have cosine below 0.99' is share_under(cosine, 0.99) <= 1%"),
    ("share_under(rel_l2, 1%) >= 99.5%", "'at most 0.5% of samples have rel_l2 above 1%' is "
                                         "share_over(rel_l2, 1%) <= 0.5%"),
    ("share_over(rel_l2, 1%) > 1%", "share_over is the share of samples with rel_l2 above 1%, which a budget "
                                    "bounds from above: share_over(rel_l2, 1%) < 1%"),
    # the grammar itself
    ("p0(rel_l2) <= 1", "strictly between p0 and p100; write min or max"),
    ("p100(cosine) >= 0", "strictly between p0 and p100"),
    ("median(rel_l2) <= 1%", "STAT is one of mean, min, max, pN (any percentile: p1, p50, p99.9), share_over, "
                             "share_under"),
    ("p99(rel_l3) <= 1%", "unknown metric 'rel_l3'"),
    ("share_over(rel_l2) <= 1%", "share_over needs a threshold: share_over(rel_l2, 1%)"),
    ("p99(rel_l2, 1%) <= 1%", "only share_over and share_under take a threshold"),
    ("p99(rel_l2) <= 1.2.3", "bound or threshold is not a number"),
    ("p99 rel_l2 <= 1%", "cannot read budget"),
])
def test_budgets_that_do_not_say_what_is_meant_are_refused_with_the_form_that_does(text, says):
    with pytest.raises(ValueError, match=re.escape(says)) as err:
        Budget.parse(text)
    assert repr(text) in str(err.value)


def test_every_suggested_form_is_itself_accepted():
    for text in ("p99(cosine) >= 0.99", "max(top1) >= 0.9", "p1(rel_l2) <= 1%", "p99(cosine) <= 0.99",
                 "share_over(cosine, 0.99) >= 99%", "share_under(rel_l2, 1%) >= 99.5%", "mean(top5) <= 0.9"):
        with pytest.raises(ValueError) as err:
            Budget.parse(text)
        suggested = re.search(r"(?:: | is )((?:mean|min|max|p[0-9.]+|share_\w+)\([^']*)$", str(err.value))
        assert suggested, err.value
        Budget.parse(suggested.group(1))


def test_each_metric_shows_the_tail_where_samples_go_wrong():
    for metric, m in METRICS.items():
        tail = tail_stats(metric)
        assert tail[0] == "mean" and "p50" in tail
        qs = [quantile_of(s) for s in tail if quantile_of(s) is not None]
        if m.better == "lower":
            assert m.best == 0.0 and "max" in tail and min(qs) == 0.5 and share_stat(metric) == "share_over"
        else:
            assert "min" in tail and max(qs) == 0.5 and share_stat(metric) == "share_under"
    assert tail_stats("cosine") == ("mean", "min", "p1", "p5", "p10", "p50")
    assert tail_stats("rel_l2") == ("mean", "p50", "p90", "p99", "max")


def test_bounds_hold_as_written():
    assert Budget.parse("p1(cosine) >= 0.99").holds(0.99)
    assert not Budget.parse("p1(cosine) > 0.99").holds(0.99)
    assert not Budget.parse("p99(rel_l2) <= 1e-3").holds(math.nan)
    assert quantile_of("p99.9") == pytest.approx(0.999) and quantile_of("mean") is None


def test_the_default_budgets_pass_what_was_measured_healthy_and_fail_what_was_broken():
    from harness.budgets import default_budgets

    defaults = default_budgets()

    def holds(kind: str, **measured: float) -> bool:
        checked = [b for b in defaults[kind] if f"{b.metric}.{b.stat}" in measured]
        assert checked, measured
        return all(b.holds(measured[f"{b.metric}.{b.stat}"]) for b in checked)

    # fp32 across a trained recurrent speech model (ORT's reordering), and one perturbed weight
    assert holds("fp32", **{"rel_l2.p99": 1.2e-4, "rel_l2.max": 1.5e-4})
    assert not holds("fp32", **{"rel_l2.p99": 0.18})
    # fp16 on the trained OCR recognizer: a tail of low-confidence lines, 99.9 % of steps agreeing
    assert holds("fp16", **{"rel_l2.p90": 0.015, "rel_l2.p99": 0.158, "cosine.p1": 0.9867, "top1.mean": 0.9988})
    # int8: the OCR models per-channel pass; the recognizer per tensor and a classifier at 0.8 % top-1 fail
    assert holds("int8", **{"rel_l2.p50": 0.28, "cosine.p1": 0.8428, "top1.mean": 0.9344})
    assert holds("int8", **{"rel_l2.p50": 0.05, "cosine.p1": 0.9646, "top1.mean": 1.0})
    assert not holds("int8", **{"top1.mean": 0.7746})
    assert not holds("int8", **{"rel_l2.p50": 0.98, "cosine.p1": 0.2, "top1.mean": 0.008})
