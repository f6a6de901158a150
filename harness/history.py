"""The nightly history: every run's rows in one SQLite database (standard library ``sqlite3``).

History consumes result rows and nothing else. Each run is appended once — by the plugin at the end of a
session (``--history PATH`` / ini ``harness_history``) or by ``python -m harness history append`` from a
results.json — and appending again replaces, never duplicates. Tables:

``runs``     one per run: id (it starts with its start time, so ids sort in time), first row's time,
             host, *machine* (the GPU's name, else the CPU model: a series never mixes hardware), env
``results``  one per (run, type, case id): status and the row's JSON (without env, kept per run, and
             without the latency histogram, which is for comparing two runs, not for trends)
``numbers``  one per (run, type, case id, number): the row's key numbers (:meth:`harness.rows.Row.numbers`)
             and which direction is better

:mod:`harness.trends` reads series out of it and finds their change points.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .rows import AnyRow

SCHEMA = 1
_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started TEXT NOT NULL, host TEXT NOT NULL, machine TEXT NOT NULL,
    env TEXT NOT NULL, appended TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL, type TEXT NOT NULL, case_id TEXT NOT NULL, model TEXT NOT NULL, status TEXT NOT NULL,
    row TEXT NOT NULL, PRIMARY KEY (run_id, type, case_id));
CREATE TABLE IF NOT EXISTS numbers (
    run_id TEXT NOT NULL, type TEXT NOT NULL, case_id TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL,
    better TEXT, PRIMARY KEY (run_id, type, case_id, name));
CREATE INDEX IF NOT EXISTS numbers_by_case ON numbers (case_id, name);
"""


class HistoryError(ValueError):
    """A history database that cannot be used; the message names it."""


def machine_of(env: dict[str, Any]) -> str:
    """What a timing depends on: the GPU, or on a CPU-only machine the CPU model."""
    return str(env.get("gpu") or env.get("cpu") or "unknown")


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    started: str
    host: str
    machine: str
    statuses: dict[str, int]

    @property
    def rows(self) -> int:
        return sum(self.statuses.values())


@dataclass(frozen=True)
class Point:
    run_id: str
    value: float
    status: str


class History:
    """One open database. ``History(path, create=True)`` makes it if it does not exist."""

    def __init__(self, path: Path, *, create: bool = False):
        self.path = path
        self._positions: dict[str, int] | None = None
        if not create and not path.is_file():
            raise HistoryError(f"no history database at {path} (`pytest --history {path}` or "
                               f"`python -m harness history append RESULTS --db {path}` makes one)")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # a nightly writer and a reader may meet: wait for the other's lock rather than fail
            self.db = sqlite3.connect(str(path), timeout=60)
            self.db.executescript(_TABLES)
            found = self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if found is None:
                self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
                self.db.commit()
            elif int(found[0]) > SCHEMA:
                raise HistoryError(f"{path}: history schema {found[0]} is newer than this harness's {SCHEMA}")
        except sqlite3.DatabaseError as exc:
            raise HistoryError(f"{path} is not a usable history database: {exc}") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing

    def append(self, rows: Iterable[AnyRow]) -> dict[str, int]:
        """Add rows, grouped by their run; a row already there (same run, type, case) is replaced.
        Returns rows added per run. Rows without a run id cannot be placed in a series and are refused."""
        by_run: dict[str, list[AnyRow]] = {}
        for r in rows:
            if not r.run_id:
                raise HistoryError(f"row {r.label} ({r.TYPE}) has no run_id: cannot place it in the history")
            by_run.setdefault(r.run_id, []).append(r)
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._positions = None
        with self.db:  # one transaction: a run is appended whole or not at all
            for run_id, rs in by_run.items():
                first = min(rs, key=lambda r: r.time)
                self.db.execute(
                    "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET "
                    "started = min(started, excluded.started), appended = excluded.appended",
                    (run_id, first.time, str(first.env.get("host", "")), machine_of(first.env),
                     json.dumps(first.env), now))
                for r in rs:
                    data = {k: v for k, v in r.to_dict().items() if k not in ("env", "latency_hist")}
                    self.db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)",
                                    (run_id, r.TYPE, r.label, r.model, r.status, json.dumps(data)))
                    self.db.execute("DELETE FROM numbers WHERE run_id = ? AND type = ? AND case_id = ?",
                                    (run_id, r.TYPE, r.label))
                    self.db.executemany("INSERT OR REPLACE INTO numbers VALUES (?, ?, ?, ?, ?, ?)",
                                        [(run_id, r.TYPE, r.label, n.name, n.value, n.better) for n in r.numbers()
                                         if n.value == n.value])  # NaN has no place in a series
        return {run: len(rs) for run, rs in by_run.items()}

    # -- reading

    def runs(self, last: int | None = None) -> list[RunInfo]:
        """Runs, oldest first (the last ``last`` of them)."""
        found = self.db.execute("SELECT run_id, started, host, machine FROM runs ORDER BY run_id").fetchall()
        found = found[-last:] if last else found
        statuses: dict[str, Counter[str]] = {r[0]: Counter() for r in found}
        for run_id, status, n in self.db.execute("SELECT run_id, status, count(*) FROM results GROUP BY 1, 2"):
            if run_id in statuses:
                statuses[run_id][status] = n
        return [RunInfo(r[0], r[1], r[2], r[3], dict(statuses[r[0]])) for r in found]

    def run_positions(self) -> dict[str, int]:
        """Each run's place in time among all runs (0 for the oldest)."""
        if self._positions is None:
            ids = self.db.execute("SELECT run_id FROM runs ORDER BY run_id").fetchall()
            self._positions = {r: i for i, (r,) in enumerate(ids)}
        return self._positions

    def cases(self, contains: str = "") -> list[tuple[str, str, str]]:
        """(type, case id, model) of every case whose id contains ``contains``."""
        return self.db.execute("SELECT DISTINCT type, case_id, model FROM results WHERE instr(case_id, ?) > 0 "
                               "ORDER BY model, case_id, type", (contains,)).fetchall()

    def numbers(self, type_: str, case_id: str) -> list[tuple[str, str | None]]:
        """(name, better) of the numbers a case has had."""
        return self.db.execute("SELECT DISTINCT name, better FROM numbers WHERE type = ? AND case_id = ? "
                               "ORDER BY name", (type_, case_id)).fetchall()

    def machines(self, type_: str, case_id: str) -> list[str]:
        return [m for (m,) in self.db.execute(
            "SELECT DISTINCT machine FROM results JOIN runs USING (run_id) WHERE type = ? AND case_id = ? "
            "ORDER BY machine", (type_, case_id))]

    def series(self, type_: str, case_id: str, name: str, machine: str, last: int | None = None) -> list[Point]:
        """A number of a case over the runs on one machine, oldest first (the last ``last`` runs)."""
        found = self.db.execute(
            "SELECT numbers.run_id, value, status FROM numbers JOIN runs USING (run_id) JOIN results "
            "USING (run_id, type, case_id) WHERE type = ? AND case_id = ? AND name = ? AND machine = ? "
            "ORDER BY numbers.run_id", (type_, case_id, name, machine)).fetchall()
        return [Point(*p) for p in (found[-last:] if last else found)]

    def statuses(self, type_: str, case_id: str, machine: str) -> list[tuple[str, str]]:
        """(run id, status) of a case over the runs on one machine, oldest first."""
        return self.db.execute(
            "SELECT run_id, status FROM results JOIN runs USING (run_id) WHERE type = ? AND case_id = ? AND "
            "machine = ? ORDER BY run_id", (type_, case_id, machine)).fetchall()
