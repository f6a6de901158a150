"""The perf sections of REPORT.md: throughput tables per model and the best configuration found."""

from __future__ import annotations

from typing import Any


def perf_sections(rows: list[dict[str, Any]]) -> list[list[str]]:
    perf = [r for r in rows if r.get("type") == "perf"]
    if not perf:
        return []
    return []
