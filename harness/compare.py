"""Compare a candidate run with a baseline: what changed, what is a regression, what is missing.

Rows are matched by their case (type, model, backend, recipe, profile; for perf also mode, batch, N,
resident inputs, CUDA graphs) and compared **like with like**: a candidate row with a baseline row of the
same case on the same device class (the GPU's name, or the CPU's model: :func:`harness.device_id.device_class`),
the same device (host and GPU UUID) where the baseline has it, else the same host and GPU index, else the
first of that class. Rows of one class never stand for another's: an H100 run compared with an H200 baseline
finds every case missing and says why, unless ``across_devices`` (``--across-devices``) pairs each case
whatever it ran on. The comparison fails (``python -m harness compare A B`` exits 1) on:

* a **regression**:
  - a gate that passed and now fails or errors;
  - an accuracy statistic that a case's budgets use (matched by statistic and output, e.g. ``p99(rel_l2)``
    on ``logits``) whose error grew by more than ``error_rise`` times and by more than 1e-6: for a
    statistic bounded above (``<=``) the error is its value, for one bounded below (``>=``: cosine,
    top-1 agreement, shares) it is ``1 - value``; cases without budgets compare ``rel_l2.p99``;
  - a perf case (or a station's cycle time, per frame) whose median latency rose by more than ``perf`` (5 %) with 95 % confidence: the whole
    bootstrap interval of the ratio of medians, from both rows' latency histograms, lies above 1.05; or
    whose p99 latency did so beyond ``tail`` (10 %). A significant change short of that (the interval
    excludes 1 and the estimate passes half the threshold) is shown and fails nothing. Rows written before
    histograms existed are judged on their point values, and say so;
* a **missing case**: in the baseline but absent from the candidate, or skipped there (``allow_missing``
  accepts them).

A perf row measured unstable, or on a throttled GPU or an overloaded host (``state_flags``), on either
side is **inconclusive**: listed, never a regression nor an improvement. The bootstrap treats a run's
iterations as independent, which they are not quite (a slow phase lasts), so its interval is narrower than
the run-to-run noise: asking the whole interval to clear the threshold is what keeps a busy machine's wobble
(a p99 "33 % slower, CI +0.4 % to +320 %" between two runs of the same build) from failing a build.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from .accuracy import fmt
from .device_id import device_class, device_key, device_label
from .histogram import LogHistogram, Ratio, bootstrap_ratio
from .results import load_results
from .rows import AccuracyRow, AnyRow, DoctorRow, PerfRow, StationRow

PASSING = ("pass", "unbudgeted", "known failure", "unstable")
ERROR_FLOOR = 1e-6


@dataclass(frozen=True)
class Thresholds:
    perf: float = 0.05  # median latency: relative rise that counts
    tail: float = 0.10  # p99 latency
    error_rise: float = 1.5  # accuracy: factor by which an error must grow
    confidence: float = 0.95


@dataclass
class Change:
    label: str
    what: str
    before: object
    after: object
    verdict: str  # regression, improvement, change, inconclusive
    detail: str = ""

    @property
    def regression(self) -> bool:
        return self.verdict == "regression"


@dataclass
class Comparison:
    changes: list[Change] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (case, why)
    new: list[str] = field(default_factory=list)
    pairings: list[str] = field(default_factory=list)  # "node2 gpu0 (NVIDIA H200) against node1 gpu0 (...)"

    def count(self, verdict: str) -> int:
        return sum(c.verdict == verdict for c in self.changes)

    @property
    def regressions(self) -> int:
        return self.count("regression")

    def failed(self, allow_missing: bool = False) -> bool:
        return bool(self.regressions or (self.missing and not allow_missing))

    def summary(self) -> str:
        return (f"{self.regressions} regression(s), {len(self.missing)} missing case(s), "
                f"{self.count('inconclusive')} inconclusive, {self.count('improvement')} improvement(s), "
                f"{len(self.new)} new case(s)")


def _device_text(r: AnyRow) -> str:
    return f"{device_label(r.device)} ({r.device.get('name') or '?'})"


def _preference(r: AnyRow, b: AnyRow) -> tuple[int, str]:
    """How well a baseline row ``b`` stands for the candidate ``r``'s device: lower is better."""
    d, e = r.device, b.device
    if device_key(d) == device_key(e):
        return 0, ""
    if d.get("host") == e.get("host") and d.get("index") == e.get("index"):
        return 1, device_key(e)
    if device_class(d) == device_class(e):
        return 2 if d.get("index") == e.get("index") else 3, device_key(e)
    return 4, device_key(e)


def match_rows(base: list[AnyRow], new: list[AnyRow], *, across_devices: bool = False
               ) -> tuple[list[tuple[AnyRow, AnyRow]], list[AnyRow], list[AnyRow]]:
    """(baseline, candidate) pairs, unmatched baseline rows, unmatched candidate rows: each candidate row takes
    the baseline row of its case that best stands for its device (same class only, unless across devices)."""
    by_case: dict[tuple[str, ...], list[AnyRow]] = {}
    for b in base:
        by_case.setdefault(b.case_key(), []).append(b)
    pairs: list[tuple[AnyRow, AnyRow]] = []
    extra: list[AnyRow] = []
    used: set[int] = set()
    for r in sorted(new, key=lambda x: x.key()):
        options = [b for b in by_case.get(r.case_key(), []) if id(b) not in used and
                   (across_devices or device_class(b.device) == device_class(r.device))]
        if not options:
            extra.append(r)
            continue
        b = min(options, key=lambda x: _preference(r, x))
        used.add(id(b))
        pairs.append((b, r))
    return pairs, [b for b in base if id(b) not in used], extra


def compare_rows(base: list[AnyRow], new: list[AnyRow], th: Thresholds = Thresholds(), *,
                 across_devices: bool = False) -> Comparison:
    pairs, gone, added = match_rows(base, new, across_devices=across_devices)
    out = Comparison()
    several = len({device_key(r.device) for r in [*base, *new]}) > 1

    def label(r: AnyRow) -> str:
        return f"{r.label} @ {device_label(r.device)}" if several else r.label

    ran_on: dict[tuple[str, ...], set[str]] = {}
    for r in new:
        ran_on.setdefault(r.case_key(), set()).add(_device_text(r))
    for b in gone:
        if isinstance(b, DoctorRow):
            continue  # the doctor runs where a gate failed: its absence is a gate that no longer fails
        elsewhere = sorted(ran_on.get(b.case_key(), set()))
        why = "absent from the candidate"
        if elsewhere:
            why = (f"the candidate ran it only on another kind of device ({', '.join(elsewhere)}); compare across "
                   "devices with --across-devices")
        out.missing.append((label(b), why))
    out.new = [label(r) for r in added]
    seen_pairings: set[str] = set()
    for b, r in pairs:
        if device_key(b.device) != device_key(r.device):
            text = f"{_device_text(r)} against {_device_text(b)}"
            if text not in seen_pairings:
                seen_pairings.add(text)
                out.pairings.append(text)
        if r.status == "skipped" and b.status != "skipped":
            out.missing.append((label(r), f"skipped in the candidate: {r.message or ''}".strip()))
            continue
        changes = status_change(b, r)
        if isinstance(b, AccuracyRow) and isinstance(r, AccuracyRow) and "no-op" not in (b.status, r.status):
            # a no-op's numbers are FP32's: nothing to compare the other side's precision with
            changes += accuracy_changes(b, r, th)
        elif isinstance(b, PerfRow) and isinstance(r, PerfRow) and b.measured and r.measured:
            changes += perf_changes(b, r, th)
        elif isinstance(b, StationRow) and isinstance(r, StationRow) and b.measured and r.measured:
            changes += perf_changes(b, r, th)  # a frame is the request: the cycle time is the latency
        for c in changes:
            c.label = label(r)
        out.changes += changes
    return out


def status_change(b: AnyRow, r: AnyRow) -> list[Change]:
    if b.status == r.status or {b.status, r.status} == {"pass", "unstable"}:
        return []  # pass <-> unstable is the perf comparison's business (inconclusive)
    if b.status in PASSING and r.status in ("fail", "error", "no-op"):
        # a recipe that now converts or quantizes nothing no longer gates its precision: that is lost coverage
        verdict = "regression"
    elif b.status in ("fail", "error") and r.status in PASSING:
        verdict = "improvement"
    else:
        verdict = "change"
    return [Change(r.label, "status", b.status, r.status, verdict, (r.message or "").splitlines()[0][:100]
                   if verdict == "regression" and r.message else "")]


def _error(value: float, better: str | None) -> float:
    return 1.0 - value if better == "higher" else value


def _error_verdict(e0: float, e1: float, th: Thresholds) -> str | None:
    if e1 > e0 * th.error_rise and e1 - e0 > ERROR_FLOOR:
        return "regression"
    if e0 > e1 * th.error_rise and e0 - e1 > ERROR_FLOOR:
        return "improvement"
    if abs(e1 - e0) > 0.25 * max(e0, 1e-12) and abs(e1 - e0) > ERROR_FLOOR:
        return "change"
    return None


def accuracy_changes(b: AccuracyRow, r: AccuracyRow, th: Thresholds) -> list[Change]:
    """The statistics the case's budgets use, matched by statistic and output (the bound may differ)."""
    old = {(x.statistic, x.output): x for x in b.budgets if x.value is not None}
    pairs = [(old[(y.statistic, y.output)], y) for y in r.budgets
             if y.value is not None and (y.statistic, y.output) in old]
    many = len({y.output for _, y in pairs}) > 1
    out = []
    for x, y in pairs:
        assert x.value is not None and y.value is not None
        better = y.better or x.better
        verdict = _error_verdict(_error(x.value, better), _error(y.value, better), th)
        if verdict:
            what = y.statistic + (f"[{y.output}]" if many else "")
            out.append(Change(r.label, what, x.value, y.value, verdict, f"budget {y.budget}"))
    if not pairs:  # no budget in common: the usual question
        e0, e1 = b.metrics.get("rel_l2.p99"), r.metrics.get("rel_l2.p99")
        if e0 is not None and e1 is not None:
            verdict = _error_verdict(e0, e1, th)
            if verdict:
                out.append(Change(r.label, "rel_l2.p99", e0, e1, verdict, "no budget in common"))
    return out


def _hist(r: PerfRow | StationRow) -> LogHistogram | None:
    try:
        return LogHistogram.from_dict(r.latency_hist) if r.latency_hist else None
    except ValueError:
        return None


def _verdict(ratio: Ratio, threshold: float) -> str | None:
    """The whole interval beyond the threshold: regression / improvement; significant with the estimate
    beyond half the threshold: a change worth showing, that fails nothing; otherwise nothing."""
    side = ratio.beyond(threshold)
    if side:
        return "regression" if side > 0 else "improvement"
    if ratio.significant and abs(ratio.estimate - 1.0) > threshold / 2:
        return "change"
    return None


def perf_changes(b: PerfRow | StationRow, r: PerfRow | StationRow, th: Thresholds) -> list[Change]:
    p50 = (b.latency_ms.get("p50"), r.latency_ms.get("p50"))
    def flags(row: PerfRow | StationRow) -> list[str]:  # station rows record no machine state (yet)
        return getattr(row, "state_flags", None) or []

    unstable = [(side, row) for side, row in (("baseline", b), ("candidate", r))
                if row.status == "unstable" or row.stable is False or flags(row)]
    if unstable:
        # the first reason of each side says enough; the rows hold them all
        why = "; ".join(f"{side} unstable: {(row.unstable_reasons or ['marked so'])[0]}"
                        if row.status == "unstable" or row.stable is False else f"{side} {flags(row)[0]}"
                        for side, row in unstable)
        return [Change(r.label, "p50 ms", p50[0], p50[1], "inconclusive", why)]
    hb, hr = _hist(b), _hist(r)
    rate = ""
    if b.throughput and r.throughput:
        rate = f"; samples/s {100 * (r.throughput / b.throughput - 1):+.1f} %"
    out = []
    if hb and hr and hb.total and hr.total:
        for what, q, threshold in (("p50 ms", 0.5, th.perf), ("p99 ms", 0.99, th.tail)):
            if abs(hr.quantile(q) / hb.quantile(q) - 1.0) <= threshold / 2:
                continue  # nothing to show whatever the interval: spare the bootstrap (most rows, most nights)
            ratio = bootstrap_ratio(hb, hr, q, confidence=th.confidence)
            verdict = _verdict(ratio, threshold)
            if verdict:
                key = what.split()[0]
                out.append(Change(r.label, what, b.latency_ms.get(key), r.latency_ms.get(key), verdict,
                                  ratio.describe() + (rate if q == 0.5 else "")))
        return out
    # a row without a latency histogram (schema 1): point values against the thresholds, no test
    side = "baseline" if not hb else "candidate"
    note = f"{side} row has no latency histogram: point values, no confidence interval"
    if b.throughput and r.throughput:
        rel = r.throughput / b.throughput - 1.0
        if abs(rel) > th.perf / 2:
            verdict = "regression" if rel < -th.perf else "improvement" if rel > th.perf else "change"
            out.append(Change(r.label, "samples/s", b.throughput, r.throughput, verdict, f"{100 * rel:+.1f} %; {note}"))
    l0, l1 = b.latency_ms.get("p99"), r.latency_ms.get("p99")
    if l0 and l1 and abs(l1 / l0 - 1.0) > th.tail / 2:
        rel = l1 / l0 - 1.0
        verdict = "regression" if rel > th.tail else "improvement" if rel < -th.tail else "change"
        out.append(Change(r.label, "p99 ms", l0, l1, verdict, f"{100 * rel:+.1f} %; {note}"))
    return out


MARK = {"regression": "**REGRESSION**", "inconclusive": "inconclusive", "improvement": "improvement", "change": ""}


def _value(v: object) -> str:
    return fmt(v) if isinstance(v, float) else str(v)


def render(cmp: Comparison) -> str:
    out: list[str] = []
    if cmp.pairings:
        out += ["Devices compared: " + "; ".join(cmp.pairings), ""]
    if cmp.changes:
        table = [[c.label, c.what, _value(c.before), _value(c.after), c.detail, MARK[c.verdict]] for c in
                 sorted(cmp.changes, key=lambda c: (list(MARK).index(c.verdict), c.label))]
        out.append(tabulate(table, headers=["case", "what", "before", "after", "change", ""], tablefmt="github",
                            disable_numparse=True))
    else:
        out.append("No differences beyond the thresholds.")
    if cmp.missing:
        out += ["", f"Missing from the candidate ({len(cmp.missing)}):", ""]
        out += [f"- {case}: {why}" for case, why in sorted(cmp.missing)]
    if cmp.new:
        out += ["", f"New in the candidate ({len(cmp.new)}): {', '.join(sorted(cmp.new)[:10])}"
                + (", ..." if len(cmp.new) > 10 else "")]
    return "\n".join(out)


def compare_files(a: Path, b: Path, th: Thresholds = Thresholds(), *, across_devices: bool = False) -> Comparison:
    """The comparison from A (baseline) to B (candidate); raises ValueError naming a file that cannot be used."""
    return compare_rows(load_results(a).rows, load_results(b).rows, th, across_devices=across_devices)


def compare_section(rows: list[AnyRow], baseline: Path) -> list[str]:
    """The REPORT.md section comparing this run with a baseline results.json."""
    head = ["## Comparison with the baseline", ""]
    try:
        base = load_results(baseline)
    except (OSError, ValueError) as exc:
        return [*head, f"Baseline {baseline} could not be read: {exc}", ""]
    cmp = compare_rows(base.rows, rows)
    return [*head, f"Baseline: `{baseline}`. {cmp.summary()}.", "", render(cmp), ""]
