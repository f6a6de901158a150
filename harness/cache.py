"""The content-addressed artifact cache: recipe ONNX files, reference outputs and engines.

An entry's key is the SHA-256 of every part that can change the artifact (model bytes, recipe and its
parameters, calibration data, backend and version, device, profile, builder options) plus
``SCHEMA_VERSION``. Entries live in a readable layout::

    <root>/<kind>/<label>/<key[:16]>/<artifact>     e.g. engines/classifier/ort_cpu/fp16-dynamic/3fa9c1.../model.onnx
    <root>/<kind>/<label>/<key[:16]>/entry.json     the sidecar: key parts, checksum, size, build seconds

Builds happen under a file lock into a temporary folder that is renamed into place, so that concurrent
pytest-xdist workers build each entry once and a crash never leaves a half-written entry. On load the
sidecar and the artifact's size and checksum are verified; a truncated or corrupt entry is reported as a
warning and rebuilt. Every build is appended to ``<root>/builds.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from .errors import CacheError
from .hostlock import building

SCHEMA_VERSION = 1
SIDECAR = "entry.json"
ENV_VAR = "HARNESS_CACHE_DIR"


class CacheWarning(UserWarning):
    """A cache entry was found corrupt or truncated and is rebuilt."""


def canonical(parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)


def cache_key(parts: dict[str, Any]) -> str:
    """SHA-256 of the key parts (canonical JSON) and the cache schema version."""
    return hashlib.sha256(canonical({"schema": SCHEMA_VERSION, "parts": parts}).encode()).hexdigest()


def digest(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of an artifact: a file, or a folder of files (names and contents)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    size = 0
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        size += f.stat().st_size
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return size, h.hexdigest()


@dataclass
class Entry:
    """A usable cache entry."""

    kind: str
    label: str
    key: str
    path: Path  # the artifact
    meta: dict[str, Any]
    outcome: str  # "hit", "built" or "rebuilt"

    @property
    def build_seconds(self) -> float:
        return float(self.meta.get("build_seconds", 0.0))

    @property
    def size(self) -> int:
        return int(self.meta.get("size", 0))

    @property
    def info(self) -> dict[str, Any]:
        """What the builder recorded about the artifact (e.g. a recipe's node counts)."""
        return dict(self.meta.get("info", {}))

    @property
    def hit(self) -> bool:
        return self.outcome == "hit"


@dataclass
class CacheStats:
    built: int = 0
    hit: int = 0
    rebuilt: int = 0
    bytes: int = 0
    build_seconds: float = 0.0
    keys: set[str] = field(default_factory=set)

    def add(self, outcome: str, size: int, seconds: float, key: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)
        if key not in self.keys:
            self.keys.add(key)
            self.bytes += size
        if outcome != "hit":
            self.build_seconds += seconds


class Cache:
    """Get-or-build of content-addressed entries, safe across processes."""

    def __init__(self, root: str | Path, *, rebuild: bool = False, run_id: str = "",
                 on_event: Callable[[dict[str, Any]], None] | None = None):
        self.root = Path(root)
        self.rebuild = rebuild
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.on_event = on_event
        self.stats = CacheStats()
        self._discarded: set[str] = set()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"engine cache folder {self.root} cannot be created: {exc}") from None

    def entry_dir(self, kind: str, label: str, key: str) -> Path:
        return self.root / kind / label / key[:16]

    def get_or_build(self, kind: str, label: str, parts: dict[str, Any], filename: str,
                     build: Callable[[Path], dict[str, Any] | None]) -> Entry:
        """Return the entry for ``parts``, building it with ``build(path)`` if it is missing or corrupt.

        ``build`` writes the artifact at the path it is given (inside a temporary folder) and may return a
        JSON-able dict of facts about it, kept in the sidecar as ``info``. The artifact may be a file or a
        folder of files.
        """
        key = cache_key(parts)
        folder = self.entry_dir(kind, label, key)
        entry, problem = self._load(kind, label, key, folder, filename)
        if entry is not None:
            return self._event(entry)
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(folder) + ".lock")
            lock.acquire()
        except OSError as exc:
            raise self._unwritable(folder, problem, exc) from None
        try:
            # another process may have built it while we waited for the lock
            entry, problem = self._load(kind, label, key, folder, filename)
            if entry is not None:
                return self._event(entry)
            outcome = "rebuilt" if key in self._discarded else "built"
            self._discarded.discard(key)
            if problem and problem != "missing":
                outcome = "rebuilt"
                if problem != "rebuild requested":
                    warnings.warn(CacheWarning(f"cache entry {folder} is unusable ({problem}); rebuilding it"),
                                  stacklevel=2)
            entry = self._build(kind, label, key, parts, folder, filename, build, outcome, problem)
        finally:
            lock.release()
        return self._event(entry)

    def discard(self, entry: Entry, problem: str) -> None:
        """Remove an entry found unusable only once used (a plan the library will not deserialize), with a
        warning; the next ``get_or_build`` of its key rebuilds it. An entry another process has already
        replaced (its checksum differs) is left alone."""
        folder = entry.path.parent
        with FileLock(str(folder) + ".lock"):
            try:
                current = json.loads((folder / SIDECAR).read_text()).get("sha256")
            except (OSError, ValueError):
                current = None
            if current == entry.meta.get("sha256"):
                trash = folder.parent / f".trash-{folder.name}-{uuid.uuid4().hex[:6]}"
                os.replace(folder, trash)
                shutil.rmtree(trash, ignore_errors=True)
        self._discarded.add(entry.key)
        warnings.warn(CacheWarning(f"cache entry {folder} is unusable ({problem}); rebuilding it"), stacklevel=2)

    def _unwritable(self, folder: Path, problem: str, exc: OSError) -> CacheError:
        """A read-only cache serves the entries it holds; one it must (re)build is an error naming it."""
        why = "is missing" if problem == "missing" else f"must be rebuilt ({problem})"
        return CacheError(f"engine cache {self.root}: entry {folder.relative_to(self.root)} {why}, but the cache "
                          f"cannot be written ({exc.strerror or exc}: {exc.filename or folder}); make it writable, "
                          "or point --engine-cache (or $HARNESS_CACHE_DIR) at a writable folder")

    def _load(self, kind: str, label: str, key: str, folder: Path, filename: str) -> tuple[Entry | None, str]:
        side = folder / SIDECAR
        art = folder / filename
        if not folder.exists():
            return None, "missing"
        if not side.is_file():
            return None, "sidecar missing"
        try:
            meta = json.loads(side.read_text())
            if not isinstance(meta, dict):
                raise ValueError("not an object")
        except (ValueError, OSError) as exc:
            return None, f"sidecar unreadable: {exc}"
        if meta.get("schema") != SCHEMA_VERSION or meta.get("key") != key:
            return None, "sidecar does not match the key"
        if not art.exists():
            return None, f"artifact {filename} missing"
        size, sha = digest(art)
        if size != meta.get("size"):
            return None, f"artifact is {size} bytes, the sidecar says {meta.get('size')} (truncated?)"
        if sha != meta.get("sha256"):
            return None, "artifact checksum does not match the sidecar"
        if self.rebuild and meta.get("run_id") != self.run_id:
            return None, "rebuild requested"
        return Entry(kind, label, key, art, meta, "hit"), ""

    def _build(self, kind: str, label: str, key: str, parts: dict[str, Any], folder: Path, filename: str,
               build: Callable[[Path], dict[str, Any] | None], outcome: str, problem: str) -> Entry:
        tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        try:
            tmp.mkdir(parents=True)
        except OSError as exc:
            raise self._unwritable(folder, problem, exc) from None
        try:
            # never while another worker on this host times its GPU (harness.hostlock; a no-op otherwise)
            with building():
                t0 = time.perf_counter()
                info = build(tmp / filename) or {}
                seconds = time.perf_counter() - t0
            art = tmp / filename
            if not art.exists():
                raise CacheError(f"the build of {kind}/{label} did not write {filename}")
            size, sha = digest(art)
            meta = {
                "schema": SCHEMA_VERSION,
                "key": key,
                "kind": kind,
                "label": label,
                "parts": json.loads(canonical(parts)),
                "artifact": filename,
                "size": size,
                "sha256": sha,
                "build_seconds": round(seconds, 4),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "run_id": self.run_id,
                "pid": os.getpid(),
                "info": info,
            }
            try:
                side_tmp = tmp / (SIDECAR + ".part")
                side_tmp.write_text(json.dumps(meta, indent=1, default=str))
                os.replace(side_tmp, tmp / SIDECAR)  # the sidecar is complete or absent
                if folder.exists():
                    trash = folder.parent / f".trash-{folder.name}-{uuid.uuid4().hex[:6]}"
                    os.replace(folder, trash)
                    shutil.rmtree(trash, ignore_errors=True)
                os.replace(tmp, folder)
            except OSError as exc:
                raise self._unwritable(folder, problem, exc) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._log_build(meta)
        return Entry(kind, label, key, folder / filename, meta, outcome)

    def _log_build(self, meta: dict[str, Any]) -> None:
        line = json.dumps({k: meta[k] for k in ("kind", "label", "key", "build_seconds", "built_at", "run_id", "pid")})
        with FileLock(str(self.root / "builds.jsonl.lock")):
            with open(self.root / "builds.jsonl", "a") as f:
                f.write(line + "\n")

    def _event(self, entry: Entry) -> Entry:
        self.stats.add(entry.outcome, entry.size, entry.build_seconds, entry.key)
        if self.on_event:
            self.on_event({"kind": entry.kind, "label": entry.label, "key": entry.key, "outcome": entry.outcome,
                           "size": entry.size, "build_seconds": entry.build_seconds})
        return entry

    def builds(self) -> list[dict[str, Any]]:
        """Every build ever logged in this cache (for tests and ``harness cache``)."""
        log = self.root / "builds.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def default_root(project_root: Path) -> Path:
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else project_root / ".cache" / "harness"
