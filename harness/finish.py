"""End of a run (on the controller): merge the workers' rows (and any a crashed run left) into results.json,
append this run to the history database, write REPORT.md, and summarize on the terminal."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from .environment import environment
from .report import write_report
from .results import merge_pending, row_files, run_cache_events, run_rows
from .rows import AccuracyRow, Row
from .session import HarnessSession


def cache_summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    counts = {"built": 0, "hit": 0, "rebuilt": 0}
    sizes: dict[str, int] = {}
    seconds = 0.0
    for e in events:
        counts[e["outcome"]] = counts.get(e["outcome"], 0) + 1
        sizes[e["key"]] = int(e.get("size", 0))
        if e["outcome"] != "hit":
            seconds += float(e.get("build_seconds", 0.0))
    return {**counts, "entries": len(sizes), "bytes": sum(sizes.values()), "build_seconds": round(seconds, 2)}


def format_cache_summary(s: dict[str, Any]) -> str:
    mb = s["bytes"] / 2**20
    return (f"engine cache: {s['built']} built, {s['hit']} hit, {s['rebuilt']} rebuilt; "
            f"{s['entries']} entries used, {mb:.1f} MB; {s['build_seconds']:.1f} s building")


def status_lines(rows: Sequence[Row], *, strict: bool = False) -> list[str]:
    """What passed without saying anything about its precision: recipes that changed nothing, and cases that no
    budget applies to (named, so that neither hides among the passes)."""
    acc = [r for r in rows if isinstance(r, AccuracyRow)]
    lines = []
    noop = [r for r in acc if r.status == "no-op"]
    if noop:
        lines.append(f"no-op: {len(noop)} case(s) whose recipe converted or quantized nothing (no pass of that "
                     "precision; skipped):")
        reasons: dict[str, list[str]] = {}
        for r in noop:
            reasons.setdefault(f"{r.model}/{r.recipe}: {r.no_op or ''}", []).append(r.profile)
        lines += [f"  {what} [{', '.join(profiles)}]" for what, profiles in reasons.items()]
    unbudgeted = [r for r in acc if r.unbudgeted]
    if unbudgeted:
        cases = sorted({f"{r.model}/{r.recipe}" for r in unbudgeted})
        verdict = "failed (--strict-budgets)" if strict else "passed with no budget; --strict-budgets fails them"
        lines.append(f"unbudgeted: {len(unbudgeted)} case(s) {verdict}: {', '.join(cases[:8])}"
                     + (", ..." if len(cases) > 8 else ""))
    return lines


def finish_run(hs: HarnessSession) -> list[str]:
    report_dir = hs.settings.report_dir
    lines: list[str] = []
    events = run_cache_events(report_dir, hs.run_id)
    if events:
        lines.append(format_cache_summary(cache_summary(events)))
    if not row_files(report_dir, hs.run_id):
        return lines
    lines += status_lines(run_rows(report_dir, hs.run_id, problems=[]), strict=hs.settings.strict_budgets)
    outcome = merge_pending(report_dir, environment=environment())
    lines += [f"WARNING: {w}" for w in outcome.warnings]
    earlier = [r for r in outcome.merged_runs if r != hs.run_id]
    if earlier:
        lines.append(f"merged rows of {len(earlier)} earlier run(s) that results.json did not hold: "
                     f"{', '.join(earlier)}")
    results = outcome.results
    assert results is not None  # this run wrote rows
    if hs.settings.history is not None:
        lines.append(append_history(hs))
    extra = []
    if hs.settings.baseline is not None:
        from .compare import compare_section

        extra.append(compare_section(results.rows, hs.settings.baseline))
    path = write_report(report_dir, results, extra_sections=extra, history=hs.settings.history)
    lines.append(f"report: {path}  (results: {path.parent / 'results.json'})")
    return lines


def append_history(hs: HarnessSession) -> str:
    """This run's rows into the history database; a database that cannot take them costs a warning, never
    the report."""
    from .history import History, HistoryError

    db = hs.settings.history
    assert db is not None
    try:
        with History(db, create=True) as h:
            added = h.append(run_rows(hs.settings.report_dir, hs.run_id, problems=[]))
    except (HistoryError, OSError, sqlite3.Error) as exc:
        return f"WARNING: history not updated: {exc}"
    return f"history: {sum(added.values())} row(s) of run {hs.run_id} appended to {db}"
