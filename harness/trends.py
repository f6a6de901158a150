"""Trends over the nightly history: each case's numbers run after run, and where they changed.

For every case, number with a good direction (throughput, latency percentiles, the statistics its budgets
use) and machine, the series of the last ``last`` runs goes through :func:`harness.steps.detect_changes`;
a change names the first run at the new level and reads as a regression or an improvement. Perf points
measured unstable are left out of a series (their numbers are not a level). The same analysis feeds
``python -m harness history show`` / ``changes`` and the "Trends" section of REPORT.md with its plots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from .history import History, HistoryError, machine_of
from .rows import AccuracyRow, AnyRow, PerfRow, SelfCheckRow, ServerRow, StationRow
from .steps import Change, Segment, detect_changes


@dataclass(frozen=True)
class Options:
    min_step: float = 0.05  # a change smaller than this (relative to the level before) is noise
    min_size: int = 2  # runs a new level must hold to be a confirmed change
    last: int = 60  # runs a series looks back
    abs_floor: float = 1e-6  # and smaller than this absolutely (tiny errors must not flap)


@dataclass
class Trend:
    type: str
    case: str
    number: str
    better: str | None
    machine: str
    runs: list[str] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # each run's place among all runs of the database
    values: list[float] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)

    def first_run(self, change: Change) -> str:
        return self.runs[change.index]

    @property
    def open_regression(self) -> bool:
        """The series' last change is a confirmed regression: it is still at the worse level."""
        return bool(self.changes) and self.changes[-1].confirmed and \
            self.changes[-1].direction(self.better) == "regression"


def trend(h: History, type_: str, case: str, number: str, better: str | None, machine: str,
          opts: Options = Options()) -> Trend:
    t = Trend(type_, case, number, better, machine)
    place = h.run_positions()
    for p in h.series(type_, case, number, machine, last=opts.last):
        if p.status != "unstable":
            t.runs.append(p.run_id)
            t.positions.append(place[p.run_id])
            t.values.append(p.value)
    if t.values:
        t.segments, t.changes = detect_changes(t.values, min_step=opts.min_step, min_size=opts.min_size,
                                               abs_floor=opts.abs_floor)
    return t


def case_trends(h: History, type_: str, case: str, opts: Options = Options(), *, machine: str | None = None,
                only: str | None = None, directed: bool = True) -> list[Trend]:
    """Every number of one case (or only the one named), on every machine (or one)."""
    out = []
    for m in ([machine] if machine else h.machines(type_, case)):
        for name, better in h.numbers(type_, case):
            if (only is None or name == only) and (better or not directed or only):
                out.append(trend(h, type_, case, name, better, m, opts))
    return out


def all_trends(h: History, opts: Options = Options(), contains: str = "") -> list[Trend]:
    return [t for type_, case, _ in h.cases(contains) for t in case_trends(h, type_, case, opts)]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def change_rows(trends: list[Trend]) -> list[list[str]]:
    rows = []
    for t in trends:
        for c in t.changes:
            kind = c.direction(t.better) + ("" if c.confirmed else " (pending: one run so far)")
            rows.append([t.case, t.number, t.machine, t.first_run(c), _fmt(c.before), _fmt(c.after),
                         f"{100 * c.relative:+.1f} %", kind])
    return rows


CHANGE_HEADERS = ["case", "number", "machine", "first run of the change", "before", "after", "change", "verdict"]


def changes_text(trends: list[Trend]) -> str:
    rows = change_rows(trends)
    if not rows:
        return f"No change points in {len(trends)} series."
    return tabulate(rows, headers=CHANGE_HEADERS, tablefmt="github", disable_numparse=True)


def show_text(h: History, case: str, opts: Options = Options(), only: str | None = None) -> str:
    """A case's series, run by run, with the fitted level and the changes marked."""
    found = [(ty, c) for ty, c, _ in h.cases(case) if c == case] or [(ty, c) for ty, c, _ in h.cases(case)]
    if not found:
        raise HistoryError(f"no case {case!r} in {h.path}")
    if len({c for _, c in found}) > 1:
        names = sorted({c for _, c in found})
        raise HistoryError(f"{case!r} matches {len(names)} cases: {', '.join(names[:8])}"
                           f"{', ...' if len(names) > 8 else ''}; give the whole id")
    out = []
    for type_, cid in found:
        for t in case_trends(h, type_, cid, opts, only=only, directed=False):
            out.append(f"{type_} {cid} · {t.number} ({t.better or 'no direction'} is better) on {t.machine}")
            marks = {c.index: c for c in t.changes}
            level = {i: s.level for s in t.segments for i in range(s.start, s.end)}
            table = [[run, _fmt(v), _fmt(level[i]) if i in level else "",
                      f"<- {marks[i].direction(t.better)} {100 * marks[i].relative:+.1f} %" if i in marks else ""]
                     for i, (run, v) in enumerate(zip(t.runs, t.values))]
            out += [tabulate(table, headers=["run", "value", "level", ""], tablefmt="github", disable_numparse=True),
                    ""]
        statuses = [f"{run}: {st}" for m in h.machines(type_, cid) for run, st in h.statuses(type_, cid, m)
                    if st not in ("pass", "unbudgeted", "fixed", "passes")]  # the last two: a doctor row's good ends
        if statuses:
            out.append("runs not passing: " + "; ".join(statuses[-10:]))
    return "\n".join(out).rstrip()


def primary(row: AnyRow) -> str | None:
    """The number a case's trend plot shows: throughput (a station's frames per second), or the first statistic
    its budgets use."""
    if isinstance(row, PerfRow):
        return "throughput"
    if isinstance(row, StationRow):
        return "fps"
    if isinstance(row, (AccuracyRow, SelfCheckRow, ServerRow)):
        names = [n.name for n in row.numbers()]
        return names[0] if names else None
    return None


def trend_section(db: Path, rows: list[AnyRow], report_dir: Path, opts: Options = Options(),
                  max_panels: int = 12) -> list[str]:
    """REPORT.md's "Trends": the change points of this report's cases over the history, and per model a
    plot of each case's primary number (cases with a change first)."""
    from .plots import MISSING, available, write_trend_plots

    head = ["## Trends", ""]
    try:
        h = History(db)
    except HistoryError as exc:
        return [*head, f"History not shown: {exc}", ""]
    with h:
        found: list[Trend] = []
        panels: dict[str, list[Trend]] = {}
        for r in rows:
            machine = machine_of(r.env)
            ts = case_trends(h, r.TYPE, r.label, opts, machine=machine)
            found += ts
            show = primary(r)
            for t in ts:
                if t.number == show and len(t.values) > 1:
                    panels.setdefault(r.model, []).append(t)
        runs = len(h.runs())
    span = f"the last {opts.last} of {runs} runs" if runs > opts.last else f"{runs} run(s)"
    out = [*head, f"Over {span} in `{db}`: a change is a step of at least "
           f"{100 * opts.min_step:g} % beyond the noise, found by step detection over each series; *first run* is "
           f"where the new level began; *pending* changes have held for fewer than {opts.min_size} runs.", ""]
    rows_ = change_rows(found)
    out += [tabulate(rows_, headers=CHANGE_HEADERS, tablefmt="github", disable_numparse=True) if rows_ else
            f"No change points in {len(found)} series.", ""]
    if panels and not available():
        out += MISSING
    for model, ts in sorted(panels.items()):
        ts = sorted(ts, key=lambda t: (not t.changes, t.case))[:max_panels]
        name = write_trend_plots(report_dir, model, ts)
        if name:
            out += [f"![{model} trends](plots/{name})", ""]
    return out
