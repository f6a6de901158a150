"""Result rows on disk: one JSON line per test in its worker's file, merged into ``results.json``.

Layout under the report folder::

    rows/<run_id>/<worker>.jsonl        rows as tests finish (gw0.jsonl, gw1.jsonl... or main.jsonl), flushed
                                        and synced per row
    rows/<run_id>/<worker>.cache.jsonl  cache events (built / hit / rebuilt), for the terminal summary
    results.json                        every row, merged: a newer row replaces an older one with the same key,
                                        so `pytest -m accuracy` then `pytest -m perf` give one report

Nothing written is lost:

* a crash loses at most the line being written (a cut-short last line is skipped with a note);
* ``results.json`` records which runs it holds and how many bytes of their row files it read
  (``runs``): :func:`merge_pending` folds in every run whose row files are new or grew since — the rows of a
  killed run, or of a run still going — whether called at the end of a session or by ``harness report``;
* a ``results.json`` that cannot be read (not JSON, not a results file, a row that fails validation) is
  never overwritten: it is renamed aside with a warning naming both paths, and rebuilt from the row files.

Of two rows with the same key (the case and the device it ran on: :meth:`harness.rows.Row.key`) the one from
the later run (``run_id`` starts with its start time) wins, so merging is idempotent and the order runs are
folded in does not matter; the same case on two devices is two rows. A GPU row written before rows had a
device (schema < 3: no UUID) gives way to a newer row of the same case on the same host and GPU index. Rows are typed
(:mod:`harness.rows`) and validated when read; errors name the file and line.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock

from .rows import AnyRow, Row, RowError, parse_row

RESULTS = "results.json"
ROWS = "rows"
FORMAT_VERSION = 2  # 2: typed rows (schema 2) and the "runs" already merged
# fields that legitimately differ between two runs of the same case (for comparing runs)
VOLATILE_FIELDS = ("time", "run_id", "worker", "cache_hit", "build_seconds", "setup_seconds", "seconds", "env",
                   "recipe_seconds", "recipe_hit")


class ResultsError(ValueError):
    """A results file that cannot be used; the message names it."""


R = TypeVar("R", bound=Row)


def by_model(rows: Iterable[R]) -> dict[str, list[R]]:
    """Rows grouped by model, models in first-seen order."""
    groups: dict[str, list[R]] = {}
    for row in rows:
        groups.setdefault(row.model, []).append(row)
    return groups


class RowWriter:
    """Appends JSON objects to one JSONL file, flushing and syncing each so that a crash loses none."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self._f.write(json.dumps(row, default=_jsonable, allow_nan=True) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


def _jsonable(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set):
        return sorted(value)
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")


def read_objects(path: Path, problems: list[str] | None = None) -> list[tuple[int, Any]]:
    """(line number, JSON value) of each line. A last line cut short by a crash is skipped with a note in
    ``problems``; any other line that is not JSON is a problem too (or an error, without ``problems``)."""
    out: list[tuple[int, Any]] = []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append((i + 1, json.loads(line)))
        except json.JSONDecodeError as exc:
            what = "cut short (a crash while writing it)" if i == last else f"not JSON ({exc.msg})"
            if problems is None and i != last:
                raise RowError(f"{path}:{i + 1}: {what}") from None
            if problems is not None:
                problems.append(f"{path}:{i + 1}: skipped a line {what}")
    return out


def read_rows(path: Path, problems: list[str] | None = None) -> list[AnyRow]:
    """The typed rows of one JSONL file. An invalid row raises :class:`RowError` naming file and line, or,
    with ``problems``, is noted there and skipped (it stays in the file)."""
    rows: list[AnyRow] = []
    for line, data in read_objects(path, problems):
        try:
            rows.append(parse_row(data, f"{path}:{line}"))
        except RowError as exc:
            if problems is None:
                raise
            problems.append(f"{exc} (row skipped; it stays in the file)")
    return rows


def row_files(report_dir: Path, run_id: str) -> list[Path]:
    folder = report_dir / ROWS / run_id
    return sorted(f for f in folder.glob("*.jsonl") if not f.name.endswith(".cache.jsonl"))


def run_rows(report_dir: Path, run_id: str, problems: list[str] | None = None) -> list[AnyRow]:
    return [r for f in row_files(report_dir, run_id) for r in read_rows(f, problems)]


def run_ids(report_dir: Path) -> list[str]:
    """The runs that have row folders, oldest first (run ids start with their start time)."""
    folder = report_dir / ROWS
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def run_cache_events(report_dir: Path, run_id: str) -> list[dict[str, Any]]:
    folder = report_dir / ROWS / run_id
    events: list[dict[str, Any]] = []
    for f in sorted(folder.glob("*.cache.jsonl")) if folder.is_dir() else []:
        events.extend(d for _, d in read_objects(f, problems=[]) if isinstance(d, dict))
    return events


def sort_rows(rows: Iterable[AnyRow]) -> list[AnyRow]:
    return sorted(rows, key=lambda r: r.key())


def newer(a: AnyRow, b: AnyRow) -> bool:
    """Whether ``a`` comes from a later run than ``b`` (or is its later row)."""
    return (a.run_id, a.time) >= (b.run_id, b.time)


@dataclass
class Results:
    """The contents of a results.json."""

    rows: list[AnyRow]
    environment: dict[str, Any] = field(default_factory=dict)
    updated: str = ""
    last_run: str = ""
    runs: dict[str, int] = field(default_factory=dict)  # run id -> bytes of its row files merged

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, "updated": self.updated, "last_run": self.last_run, "runs": self.runs,
                "environment": self.environment, "rows": [r.to_dict() for r in sort_rows(self.rows)]}


def load_results(path: Path) -> Results:
    """Read and validate a results.json (or the folder that holds one)."""
    if path.is_dir():
        path = path / RESULTS
    if not path.is_file():
        raise FileNotFoundError(f"no results at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path} cannot be read: {exc}") from None
    if not isinstance(data, dict) or "rows" not in data:
        raise ResultsError(f"{path} is not a harness results file (no 'rows')")
    if not isinstance(data["rows"], list):
        raise ResultsError(f"{path}: 'rows' is not a list (it is {type(data['rows']).__name__})")
    fmt = data.get("format", 1)
    if isinstance(fmt, int) and fmt > FORMAT_VERSION:
        raise ResultsError(f"{path}: results format {fmt} is newer than this harness's {FORMAT_VERSION}")
    rows = [parse_row(r, f"{path} rows[{i}]") for i, r in enumerate(data["rows"])]
    runs = data.get("runs")
    env = data.get("environment")
    return Results(rows, env if isinstance(env, dict) else {}, str(data.get("updated", "")),
                   str(data.get("last_run", "")), dict(runs) if isinstance(runs, dict) else {})


@dataclass
class MergeOutcome:
    results: Results | None  # None: neither a results.json nor any rows
    merged_runs: list[str] = field(default_factory=list)  # runs whose rows were (re)read this time
    new_rows: int = 0
    warnings: list[str] = field(default_factory=list)


def merge_pending(report_dir: Path, *, environment: dict[str, Any] | None = None) -> MergeOutcome:
    """Fold every run whose row files are not (fully) in results.json into it, and write it if anything
    changed. A results.json that cannot be read is kept aside and rebuilt from all the row files."""
    report_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(report_dir / f".{RESULTS}.lock"), timeout=120):
        return _merge_locked(report_dir, environment)


def _merge_locked(report_dir: Path, environment: dict[str, Any] | None) -> MergeOutcome:
    path = report_dir / RESULTS
    out = MergeOutcome(None)
    existing: Results | None = None
    if path.exists():
        try:
            existing = load_results(path)
        except (ValueError, OSError) as exc:
            aside = keep_aside(path)
            out.warnings.append(f"{path} could not be read ({exc}); kept it as {aside} and rebuilt {RESULTS} from "
                                f"the row files under {report_dir / ROWS}")
    merged = {r.key(): r for r in existing.rows} if existing else {}
    runs = dict(existing.runs) if existing else {}
    changed: set[tuple[str, ...]] = set()
    latest: AnyRow | None = None
    for run in run_ids(report_dir):
        size = sum(f.stat().st_size for f in row_files(report_dir, run))
        if runs.get(run) == size:
            continue
        for r in run_rows(report_dir, run, out.warnings):
            old = merged.get(r.key())
            if old is None or (newer(r, old) and r != old):
                merged[r.key()] = r
                changed.add(r.key())
            if latest is None or newer(r, latest):
                latest = r
        runs[run] = size
        out.merged_runs.append(run)
    out.new_rows = len(changed)
    drop_superseded_legacy(merged)
    if existing is not None and not out.merged_runs:
        out.results = existing
        return out
    if not merged and existing is None:
        return out
    # the machine of the newest row merged; the caller's, for a results.json rebuilt without rows
    env = (latest.env if latest is not None else None) or (existing.environment if existing else None) \
        or environment or {}
    last = max(([existing.last_run] if existing else []) + out.merged_runs, default="")
    out.results = Results(sort_rows(merged.values()), env, time.strftime("%Y-%m-%dT%H:%M:%S%z"), last, runs)
    write_json_atomic(path, out.results.to_dict())
    return out


def drop_superseded_legacy(merged: dict[tuple[str, ...], AnyRow]) -> None:
    """Remove GPU rows migrated from before devices had UUIDs where a newer row of the same case ran on the
    same host and GPU index: the same GPU, as far as such a row can tell, so the newer row replaces it."""
    def slot(r: AnyRow) -> tuple[Any, ...] | None:
        d = r.device
        return (r.case_key(), d.get("host"), d.get("index")) if d.get("kind") == "gpu" else None

    current: dict[tuple[Any, ...], AnyRow] = {}
    for r in merged.values():
        s = slot(r)
        if s is not None and r.device.get("uuid") and (s not in current or newer(r, current[s])):
            current[s] = r
    for k, r in list(merged.items()):
        s = slot(r)
        if s is not None and not r.device.get("uuid") and s in current and newer(current[s], r):
            del merged[k]


def keep_aside(path: Path) -> Path:
    """Rename a file that cannot be read, so that nothing overwrites it; return its new path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 2
    while aside.exists():
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        os.replace(path, aside)
    except OSError as exc:
        raise ResultsError(f"{path} cannot be read and cannot be moved aside ({exc}); it was left as it is and "
                           "nothing was written") from None
    return aside


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.part")
    tmp.write_text(json.dumps(data, indent=1, default=_jsonable, allow_nan=True), encoding="utf-8")
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    """A row's JSON without the fields that differ between two runs of the same case."""
    return {k: v for k, v in row.items() if k not in VOLATILE_FIELDS}
