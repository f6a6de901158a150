"""The report folders of several hosts (shards, GPUs, machines) gathered into one: ``python -m harness report
DIR... --out OUT``.

Each host writes its own report folder: ``rows/<run>/<worker>.jsonl`` and ``results.json``. Gathering copies
every source's row files into ``OUT/rows/<run>/`` (a run id names one session on one host, so runs from
different hosts never collide; a row file only grows, so the longer copy is the newer), and the rows of runs a
source keeps only in its ``results.json`` (its row folders pruned) into ``OUT/rows/<run>/<source>.jsonl``.
Then the ordinary merge (:func:`harness.results.merge_pending`) folds them into ``OUT/results.json``: rows of
the same case on different devices are different rows (their key holds the device), and a newer row of the
same case on the same device replaces an older one. Gathering again is idempotent; sources are only read.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .results import RESULTS, ROWS, load_results


@dataclass
class Gathered:
    copied: int = 0  # row files copied or brought up to date
    from_results: int = 0  # rows taken from a source's results.json
    warnings: list[str] = field(default_factory=list)


def _copy(src: Path, dst: Path) -> bool:
    """Copy a row file unless the destination already holds as much of it; through a temporary name."""
    if dst.exists() and dst.stat().st_size >= src.stat().st_size:
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + f".{os.getpid()}.part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return True


def gather(sources: list[Path], out: Path) -> Gathered:
    """Bring every source folder's rows into ``out``'s rows folder (merge with :func:`merge_pending` after)."""
    done = Gathered()
    target = out.resolve()
    for src in sources:
        if not src.is_dir():
            raise FileNotFoundError(f"no report folder at {src}")
        if src.resolve() == target:
            continue
        runs_with_files = set()
        for run in sorted(p for p in (src / ROWS).glob("*") if p.is_dir()):
            files = sorted(run.glob("*.jsonl"))
            if files:
                runs_with_files.add(run.name)
            for f in files:
                done.copied += _copy(f, out / ROWS / run.name / f.name)
        results = src / RESULTS
        if not results.is_file():
            continue
        try:
            rows = load_results(results).rows
        except (OSError, ValueError) as exc:
            done.warnings.append(f"{results} could not be read ({exc}); its row files were gathered, if any")
            continue
        by_run: dict[str, list[str]] = {}
        for r in rows:
            if r.run_id and r.run_id not in runs_with_files:
                by_run.setdefault(r.run_id, []).append(json.dumps(r.to_dict()))
        for run_id, lines in by_run.items():
            folder = out / ROWS / run_id
            if any(folder.glob("*.jsonl")):  # gathered before, from this source or from another copy of that run
                continue
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{src.resolve().name or 'source'}.jsonl"
            part = folder / f".{name}.part"
            part.write_text("\n".join(lines) + "\n", encoding="utf-8")
            os.replace(part, folder / name)
            done.from_results += len(lines)
    return done
