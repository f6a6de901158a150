"""The smallest fix: a small set of nodes kept in higher precision such that the gate passes.

Candidates are the nodes the recipe converted (fp16, bf16) or quantized (int8), ranked by sensitivity (the
error each adds alone, from the node-by-node comparison). The search evaluates the full gate
(:class:`harness.doctor.gate.Gate`) on recipe variants whose ``keep_fp32`` lists them:

1. **grow**: keep the 1, 2, 4, 8... most sensitive nodes (doubling, so that a fix of k nodes costs about
   log2(k) gates) until the gate passes; if keeping every candidate fails, no keep list can fix the recipe;
2. **narrow**: bisect between the last failing and the first passing size for the smallest passing prefix;
3. **prune**: drop nodes whose removal keeps the gate green, least sensitive first, in halving groups (delta
   debugging's complement step), ending with single nodes: no node of the result can be dropped alone.

Every step is a gate whose artifact, engine and verdict are cached, so a search run again costs nothing. The
search stops when its deadline passes and offers the smallest passing set found by then (or none).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .gate import GateResult


@dataclass
class Step:
    phase: str  # grow | narrow | prune | start
    keep: int  # nodes kept in FP32
    passed: bool
    summary: str
    seconds: float
    cached: bool

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "keep": self.keep, "passed": self.passed, "summary": self.summary,
                "seconds": self.seconds, "cached": self.cached}


@dataclass
class SearchResult:
    keep: list[str] | None  # the smallest passing set found (None: none passed)
    result: GateResult | None  # its gate
    steps: list[Step] = field(default_factory=list)
    out_of_time: bool = False
    reason: str = ""  # why there is no fix, or why it may not be minimal


class Search:
    """``gate(keep)`` evaluates the recipe with ``keep`` (node names) in FP32; ``ranked`` lists the candidates,
    most sensitive first."""

    def __init__(self, ranked: Sequence[str], gate: Callable[[list[str]], GateResult], *, deadline: float,
                 progress: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.ranked = list(ranked)
        self.gate = gate
        self.deadline = deadline
        self.progress = progress or (lambda _: None)
        self.clock = clock
        self.steps: list[Step] = []
        self._seen: dict[tuple[str, ...], GateResult] = {}

    def _out_of_time(self) -> bool:
        return self.clock() > self.deadline

    def _try(self, phase: str, keep: list[str]) -> GateResult:
        key = tuple(sorted(keep))
        if key in self._seen:
            return self._seen[key]
        r = self.gate(list(keep))
        self._seen[key] = r
        self.steps.append(Step(phase, len(keep), r.passed, r.describe(), r.seconds, r.cached))
        left = max(0.0, self.deadline - self.clock())
        self.progress(f"{phase}: keep {len(keep)} node(s) in FP32: {'PASS' if r.passed else 'fail'} "
                      f"({r.describe()}) [{r.seconds:.1f} s{', cached' if r.cached else ''}; {left:.0f} s left]")
        return r

    def run(self) -> SearchResult:
        n = len(self.ranked)
        if n == 0:
            return SearchResult(None, None, self.steps, reason="the recipe converted or quantized no node that "
                                "keep_fp32 can name")
        # 1. grow: 1, 2, 4, ... most sensitive nodes, then all of them
        lo, hi, best = 0, None, None
        size = 1
        while True:
            if self._out_of_time():
                return self._timeout(None, None)
            r = self._try("grow", self.ranked[:size])
            if r.passed:
                hi, best = size, r
                break
            lo = size
            if size == n:
                return SearchResult(None, None, self.steps, reason=f"even with all {n} candidate nodes kept in FP32 "
                                    f"the gate fails ({r.describe()}): the error is not this recipe's precision")
            size = min(2 * size, n)
        # 2. narrow: the smallest passing prefix, by bisection (sensitivity is close to monotone in the prefix)
        while hi - lo > 1:
            if self._out_of_time():
                return self._timeout(self.ranked[:hi], best)
            mid = (lo + hi) // 2
            r = self._try("narrow", self.ranked[:mid])
            if r.passed:
                hi, best = mid, r
            else:
                lo = mid
        keep = self.ranked[:hi]
        # 3. prune: least sensitive first, in groups halving down to single nodes
        groups = 2
        while len(keep) > 1:
            order = keep[::-1]  # least sensitive first
            k = min(groups, len(order))
            parts = [order[i * len(order) // k:(i + 1) * len(order) // k] for i in range(k)]
            dropped = False
            for part in parts:
                if self._out_of_time():
                    return self._timeout(keep, best)
                trial = [x for x in keep if x not in part]
                if not trial:
                    continue
                r = self._try("prune", trial)
                if r.passed:
                    keep, best, dropped = trial, r, True
                    groups = max(groups - 1, 2)
                    break
            if not dropped:
                if k >= len(keep):
                    break  # no single node can be dropped
                groups = min(2 * groups, len(keep))
        return SearchResult(keep, best, self.steps)

    def _timeout(self, keep: list[str] | None, best: GateResult | None) -> SearchResult:
        why = ("the time budget ran out before any keep list passed" if keep is None else
               "the time budget ran out while narrowing or pruning: the set passes but may not be the smallest")
        return SearchResult(keep, best, self.steps, out_of_time=True, reason=why)
