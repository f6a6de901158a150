"""The contract suite's per-version count, for the terminal summary."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from tests.contract.fakes.world import FLAVORS

FLAVOR_ID = re.compile(r"\[(?:.*-)?(" + "|".join(FLAVORS) + r")(?:-.*)?\]")
OUTCOMES = ("passed", "failed", "skipped", "error", "xfailed", "xpassed")


def per_version_summary(stats: dict[str, list[Any]]) -> str | None:
    """"contract suite per TensorRT version: TensorRT 10.13: 36 passed; ..." from pytest's terminal stats, or
    None when no contract test ran."""
    counts: dict[str, Counter[str]] = {}
    for outcome in OUTCOMES:
        for rep in stats.get(outcome, []):
            nodeid = getattr(rep, "nodeid", "")
            if "tests/contract/" not in nodeid or (outcome == "passed" and rep.when != "call"):
                continue
            m = FLAVOR_ID.search(nodeid)
            if m:
                counts.setdefault(m.group(1), Counter())[outcome] += 1
    if not counts:
        return None
    parts = [f"{FLAVORS[k].label}: " + ", ".join(f"{n} {o}" for o, n in sorted(counts[k].items()))
             for k in FLAVORS if k in counts]
    return "contract suite per TensorRT version: " + "; ".join(parts)
