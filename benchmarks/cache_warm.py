"""Cold versus warm engine cache: run the accuracy suite twice on a fresh cache, print setup time of each.

    python benchmarks/cache_warm.py [--models classifier,ranker] [--workers 2] [-- extra pytest args]

Setup is everything a case does before its first inference (recipe, engine, reference), summed over the
cases from the rows' ``setup_seconds``. The first run builds every entry; the second must build nothing.
Prints the counts from the terminal summary and the ratio warm / cold.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(cache: Path, report: Path, args: argparse.Namespace, extra: list[str]) -> tuple[float, float, str]:
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "gates"), "-q", "-m", "accuracy", "-p", "no:randomly",
           f"--engine-cache={cache}", f"--report-dir={report}", "-n", str(args.workers), *extra]
    if args.models:
        cmd.append(f"--models={args.models}")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        sys.exit(proc.stdout[-3000:] + proc.stderr[-3000:])
    rows = json.loads((report / "results.json").read_text())["rows"]
    setup = sum(r.get("setup_seconds") or 0.0 for r in rows)
    counts = re.search(r"engine cache: .*", proc.stdout)
    return setup, wall, counts.group(0) if counts else "(no cache summary)"


def main() -> int:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help="comma-separated models (default: all)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        cold = run(cache, Path(tmp) / "cold", args, extra)
        warm = run(cache, Path(tmp) / "warm", args, extra)
    print(f"cold run: setup {cold[0]:7.1f} s summed over cases, wall {cold[1]:6.1f} s   {cold[2]}")
    print(f"warm run: setup {warm[0]:7.1f} s summed over cases, wall {warm[1]:6.1f} s   {warm[2]}")
    print(f"warm / cold setup ratio: {warm[0] / cold[0]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
