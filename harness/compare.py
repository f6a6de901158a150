"""Compare two runs' results: what changed, and which changes are regressions.

Rows are matched by their key (type, model, backend, recipe, profile, mode, batch, concurrency...). A
regression is: an accuracy gate that passed and now fails; a p99 relative error that grew by more than
``error_rise`` times (and by more than 1e-6); a throughput that fell by more than ``throughput_drop``; a
p99 latency that rose by more than ``latency_rise``. ``python -m harness compare A B`` exits 1 when there
is any.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from .accuracy import fmt
from .results import load_results, row_key


@dataclass(frozen=True)
class Thresholds:
    throughput_drop: float = 0.05
    latency_rise: float = 0.10
    error_rise: float = 1.5


@dataclass
class Change:
    key: tuple[str, ...]
    label: str
    what: str
    before: Any
    after: Any
    regression: bool


def _label(row: dict[str, Any]) -> str:
    parts = [row.get("model"), row.get("backend"), row.get("recipe"), row.get("profile")]
    if row.get("type") == "perf":
        parts += [row.get("mode"), f"b{row.get('batch')}", f"n{row.get('concurrency')}"]
    return "-".join(str(p) for p in parts if p is not None)


def compare_rows(base: list[dict[str, Any]], new: list[dict[str, Any]], th: Thresholds = Thresholds()) -> list[Change]:
    before = {row_key(r): r for r in base}
    changes: list[Change] = []
    for r in new:
        k = row_key(r)
        b = before.get(k)
        if b is None:
            continue
        label = _label(r)
        if r.get("type") == "accuracy":
            if b.get("status") != r.get("status"):
                changes.append(Change(k, label, "status", b.get("status"), r.get("status"),
                                      b.get("status") == "pass" and r.get("status") in ("fail", "error")))
            e0 = (b.get("metrics") or {}).get("rel_l2.p99")
            e1 = (r.get("metrics") or {}).get("rel_l2.p99")
            if e0 is not None and e1 is not None and e1 != e0:
                worse = e1 > e0 * th.error_rise and e1 - e0 > 1e-6
                if worse or abs(e1 - e0) > 0.25 * max(e0, 1e-12):
                    changes.append(Change(k, label, "rel_l2 p99", e0, e1, worse))
        elif r.get("type") == "perf":
            t0, t1 = b.get("throughput"), r.get("throughput")
            if t0 and t1:
                rel = t1 / t0 - 1.0
                if abs(rel) > th.throughput_drop / 2:
                    changes.append(Change(k, label, "samples/s", t0, t1, rel < -th.throughput_drop))
            l0, l1 = (b.get("latency_ms") or {}).get("p99"), (r.get("latency_ms") or {}).get("p99")
            if l0 and l1:
                rel = l1 / l0 - 1.0
                if abs(rel) > th.latency_rise / 2:
                    changes.append(Change(k, label, "p99 ms", l0, l1, rel > th.latency_rise))
    return changes


def render_changes(changes: list[Change]) -> str:
    if not changes:
        return "No differences beyond the thresholds."
    table = [[c.label, c.what, fmt(c.before) if isinstance(c.before, float) else c.before,
              fmt(c.after) if isinstance(c.after, float) else c.after,
              _delta(c.before, c.after), "**REGRESSION**" if c.regression else ""] for c in changes]
    return tabulate(table, headers=["case", "what", "before", "after", "change", ""], tablefmt="github",
                    disable_numparse=True)


def _delta(a: Any, b: Any) -> str:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a:
        return f"{100.0 * (b / a - 1.0):+.1f} %"
    return ""


def compare_files(a: Path, b: Path, th: Thresholds = Thresholds()) -> tuple[str, int]:
    """Markdown of the changes from A (baseline) to B, and how many of them are regressions."""
    base, new = load_results(a), load_results(b)
    changes = compare_rows(base["rows"], new["rows"], th)
    return render_changes(changes), sum(c.regression for c in changes)


def compare_section(data: dict[str, Any], baseline: Path) -> list[str]:
    """The REPORT.md section comparing this run with a baseline results.json."""
    try:
        base = load_results(baseline)
    except (OSError, ValueError) as exc:
        return ["## Comparison with the baseline", "", f"Baseline {baseline} could not be read: {exc}", ""]
    changes = compare_rows(base["rows"], data["rows"])
    n = sum(c.regression for c in changes)
    return ["## Comparison with the baseline", "", f"Baseline: `{baseline}`. {n} regression(s).", "",
            render_changes(changes), ""]
