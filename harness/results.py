"""Result rows: one flat JSON object per test, appended to its worker's JSONL file and flushed per row.

Layout under the report folder::

    rows/<run_id>/<worker>.jsonl      rows as tests finish (gw0.jsonl, gw1.jsonl... or main.jsonl)
    rows/<run_id>/<worker>.cache.jsonl  cache events (built / hit / rebuilt), for the terminal summary
    results.json                      every row, merged: a new run's row replaces an older one with the
                                      same key, so `pytest -m accuracy` then `pytest -m perf` give one report

A crash loses nothing already written: rows are on disk as soon as a test ends, and
``python -m harness report DIR`` re-renders from them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

RESULTS = "results.json"
ROWS = "rows"
FORMAT_VERSION = 1
# the fields that identify a row: a newer row with the same key replaces an older one
KEY_FIELDS = ("type", "model", "backend", "recipe", "profile", "mode", "batch", "concurrency", "resident",
              "cuda_graph", "variant")
# fields that legitimately differ between two runs of the same case (for comparing runs)
VOLATILE_FIELDS = ("time", "run_id", "worker", "cache_hit", "build_seconds", "setup_seconds", "seconds", "env",
                   "recipe_seconds", "recipe_hit")


def by_model(rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows grouped by model, models in first-seen order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["model"], []).append(row)
    return groups


def row_key(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(row.get(k, "")) for k in KEY_FIELDS)


class RowWriter:
    """Appends rows to one JSONL file, flushing each so that nothing written is lost on a crash."""

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


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                # a line cut short by a crash: the rows before it are still good
                continue
    return rows


def run_rows(report_dir: Path, run_id: str) -> list[dict[str, Any]]:
    folder = report_dir / ROWS / run_id
    rows: list[dict[str, Any]] = []
    if folder.is_dir():
        for f in sorted(folder.glob("*.jsonl")):
            if not f.name.endswith(".cache.jsonl"):
                rows.extend(read_jsonl(f))
    return rows


def run_cache_events(report_dir: Path, run_id: str) -> list[dict[str, Any]]:
    folder = report_dir / ROWS / run_id
    events: list[dict[str, Any]] = []
    if folder.is_dir():
        for f in sorted(folder.glob("*.cache.jsonl")):
            events.extend(read_jsonl(f))
    return events


def sort_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: tuple(_sortable(r.get(k)) for k in KEY_FIELDS))


def _sortable(v: Any) -> tuple[int, Any]:
    if v is None:
        return (0, "")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (1, v)
    return (2, str(v))


def load_results(path: Path) -> dict[str, Any]:
    """Read a results.json (or the folder that holds one)."""
    if path.is_dir():
        path = path / RESULTS
    if not path.is_file():
        raise FileNotFoundError(f"no results at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not a harness results file: not JSON ({exc})") from None
    if not isinstance(data, dict) or "rows" not in data:
        raise ValueError(f"{path} is not a harness results file (no 'rows')")
    rows = data["rows"]
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        what = type(rows).__name__ if not isinstance(rows, list) else "a list with non-object items"
        raise ValueError(f"{path} is not a harness results file: 'rows' is {what}, expected a list of row objects")
    return data


def merge_run(report_dir: Path, run_id: str, *, environment: dict[str, Any]) -> dict[str, Any]:
    """Merge a run's rows into ``results.json`` (replacing rows with the same key) and return it."""
    path = report_dir / RESULTS
    existing: list[dict[str, Any]] = []
    if path.is_file():
        try:
            existing = load_results(path)["rows"]
        except (ValueError, OSError):
            existing = []
    new = run_rows(report_dir, run_id)
    merged = {row_key(r): r for r in existing}
    merged.update({row_key(r): r for r in new})
    data = {
        "format": FORMAT_VERSION,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "last_run": run_id,
        "environment": environment,
        "rows": sort_rows(merged.values()),
    }
    write_json_atomic(path, data)
    return data


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.part")
    tmp.write_text(json.dumps(data, indent=1, default=_jsonable, allow_nan=True), encoding="utf-8")
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    """A row without the fields that differ between two runs of the same case."""
    return {k: v for k, v in row.items() if k not in VOLATILE_FIELDS}
