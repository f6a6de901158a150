"""End of a run (on the controller): merge the workers' rows, write results.json and REPORT.md, summarize."""

from __future__ import annotations

from typing import Any

from .environment import environment
from .report import write_report
from .results import merge_run, run_cache_events, run_rows
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


def status_lines(rows: list[dict[str, Any]], *, strict: bool = False) -> list[str]:
    """What passed without saying anything about its precision: recipes that changed nothing, and cases that no
    budget applies to (named, so that neither hides among the passes)."""
    lines = []
    noop = [r for r in rows if r.get("status") == "no-op"]
    if noop:
        lines.append(f"no-op: {len(noop)} case(s) whose recipe converted or quantized nothing (no pass of that "
                     "precision; skipped):")
        reasons: dict[str, list[str]] = {}
        for r in noop:
            reasons.setdefault(f"{r['model']}/{r['recipe']}: {r.get('no_op', '')}", []).append(str(r.get("profile")))
        lines += [f"  {what} [{', '.join(profiles)}]" for what, profiles in reasons.items()]
    unbudgeted = [r for r in rows if r.get("unbudgeted")]
    if unbudgeted:
        cases = sorted({f"{r['model']}/{r['recipe']}" for r in unbudgeted})
        verdict = "failed (--strict-budgets)" if strict else "passed with no budget; --strict-budgets fails them"
        lines.append(f"unbudgeted: {len(unbudgeted)} case(s) {verdict}: {', '.join(cases[:8])}"
                     + (", ..." if len(cases) > 8 else ""))
    return lines


def finish_run(hs: HarnessSession) -> list[str]:
    lines: list[str] = []
    events = run_cache_events(hs.settings.report_dir, hs.run_id)
    if events:
        lines.append(format_cache_summary(cache_summary(events)))
    rows = run_rows(hs.settings.report_dir, hs.run_id)
    if not rows:
        return lines
    lines += status_lines(rows, strict=hs.settings.strict_budgets)
    data = merge_run(hs.settings.report_dir, hs.run_id, environment=environment())
    extra = []
    if hs.settings.baseline is not None:
        from .compare import compare_section

        extra.append(compare_section(data, hs.settings.baseline))
    path = write_report(hs.settings.report_dir, data, extra_sections=extra)
    lines.append(f"report: {path}  (results: {path.parent / 'results.json'})")
    return lines
