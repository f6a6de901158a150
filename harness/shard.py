"""``--shard i/N``: this host runs the i-th of N deterministic parts of the collected tests.

Whatever launches the hosts (a CI matrix, a Slurm array, a Kubernetes indexed job) runs the same command with
``--shard 1/N`` ... ``--shard N/N``; every case runs on exactly one host, and ``python -m harness report
DIR...`` merges their rows into one report (:mod:`harness.gather`).

Where a case goes depends only on its own id and on the durations file, never on what else a host collected,
so hosts that collect different cases (``--backends auto`` on unlike machines) still run each case once:

* without ``--shard-durations``: by a hash of the case's id (SHA-256: the same on every host and Python);
* with ``--shard-durations results.json`` (an earlier run's): the cases that file holds are spread over the
  shards longest first, each to the shard with the least time so far (LPT scheduling: within 4/3 of the best
  possible makespan), using each row's own seconds; cases the file does not know are hashed, as above.

A harness case's id is its kind and case id (``accuracy:classifier-ort_cpu-fp16-dynamic``), the same whether
the registry file or a suite of one's own generated it; any other test's is its node id.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import HarnessError


class ShardError(HarnessError):
    """``--shard`` or ``--shard-durations`` cannot be used; the message names the option and the value."""


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based, as written
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str, source: str = "--shard") -> Shard:
    a, sep, b = str(text).strip().partition("/")
    if sep and a.strip().isdigit() and b.strip().isdigit():
        i, n = int(a), int(b)
        if 1 <= i <= n:
            return Shard(i, n)
    raise ShardError(f"{source}: cannot use {text!r}: give I/N with 1 <= I <= N, e.g. 2/4 (the second of four parts)")


def hashed(case: str, count: int) -> int:
    """0-based shard of a case by the hash of its id."""
    return int.from_bytes(hashlib.sha256(case.encode()).digest()[:8], "big") % count


@dataclass
class Assignment:
    """Where each case of the durations file goes; the rest are hashed."""

    count: int
    planned: dict[str, int] = field(default_factory=dict)  # case -> 0-based shard
    load: list[float] = field(default_factory=list)  # seconds planned per shard

    def shard_of(self, case: str) -> int:
        found = self.planned.get(case)
        return found if found is not None else hashed(case, self.count)


def assign(count: int, durations: Mapping[str, float] | None = None) -> Assignment:
    """LPT over the cases with known durations: longest first, each to the least loaded shard (ties: the lowest
    index; equal durations: by case id), so every host computes the same plan from the same file."""
    out = Assignment(count, load=[0.0] * count)
    heap = [(0.0, k) for k in range(count)]
    for case, seconds in sorted((durations or {}).items(), key=lambda kv: (-kv[1], kv[0])):
        load, k = heapq.heappop(heap)
        out.planned[case] = k
        out.load[k] = load + seconds
        heapq.heappush(heap, (load + seconds, k))
    return out


def durations_from(path: Path, source: str = "--shard-durations") -> dict[str, float]:
    """Seconds per case from an earlier results.json (or the report folder holding one): accuracy and build rows
    their ``seconds`` (else setup and build seconds), perf rows their warm-up and measurement. The same case on
    several devices counts its longest run."""
    from .results import load_results
    from .rows import AccuracyRow, BuildRow, PerfRow, SelfCheckRow, ServerRow

    try:
        rows = load_results(path).rows
    except (OSError, ValueError) as exc:
        raise ShardError(f"{source} {path}: {exc}") from None
    out: dict[str, float] = {}
    for r in rows:
        if isinstance(r, AccuracyRow):
            seconds = r.seconds if r.seconds is not None else (r.setup_seconds or 0.0)
        elif isinstance(r, PerfRow):
            seconds = (r.warmup_s or 0.0) + (r.wall_s or 0.0)
        elif isinstance(r, BuildRow):
            seconds = r.build_seconds or 0.0
        elif isinstance(r, SelfCheckRow):  # its test kind is the check (consistency, determinism)
            out[f"{r.check}:{r.label}"] = max(out.get(f"{r.check}:{r.label}", 0.0), float(r.seconds or 0.0))
            continue
        elif isinstance(r, ServerRow):
            seconds = sum(float(p.get("duration_s", 0.0)) for p in r.points)
        else:  # stations, doctor rows: not sharded by duration
            continue
        case = f"{r.TYPE}:{r.label}"
        out[case] = max(out.get(case, 0.0), float(seconds))
    return out


def select(cases: Iterable[str], shard: Shard, durations: Mapping[str, float] | None = None) -> list[bool]:
    """For each case id, whether it belongs to ``shard``."""
    plan = assign(shard.count, durations)
    return [plan.shard_of(c) == shard.index - 1 for c in cases]


def describe(shard: Shard, kept: int, total: int, durations: Mapping[str, float] | None, source: Path | None) -> str:
    """The terminal line: what this shard runs, and how it was balanced."""
    how = "by case id (hash)"
    if durations and source is not None:
        plan = assign(shard.count, durations)
        mine = plan.load[shard.index - 1]
        how = (f"balanced by {len(durations)} durations from {source}: {mine:.0f} s planned here of "
               f"{sum(plan.load):.0f} s, the rest hashed")
    return f"shard {shard}: {kept} of {total} collected tests, {how}"
