"""The precision doctor on the bundled classifier and segmenter, INT8 and FP16, on a fresh cache: time, memory,
what it keeps.

    python benchmarks/doctor.py [--minutes 5] [--chunk 64] [--cases classifier:int8-minmax,...] [--registry-only]

Their gates pass with the registry's budgets, so each case runs twice: with those (the doctor diagnoses and
stops: "passes") and with a budget tighter than the recipe meets (the search runs). Each run is one
``python -m harness doctor`` process on a fresh engine cache (recipes, engines and the reference built
anew); the table gives its wall time against the time budget, the node comparison's time, the tensors it
held at most (bounded by the chunk) and the process's peak RSS during the comparison, the gates the search
evaluated and the nodes it keeps.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# budgets tighter than the recipes meet on ONNX Runtime CPU (README "Bundled models"): the search has work
TIGHTER = {("classifier", "int8-minmax"): "p99(rel_l2) <= 5%", ("classifier", "fp16"): "p99(rel_l2) <= 6e-4",
           ("segmenter", "int8-minmax"): "p99(rel_l2) <= 5%", ("segmenter", "fp16"): "p99(rel_l2) <= 5e-4"}


def run(model: str, recipe: str, budget: str | None, args: argparse.Namespace, tmp: Path) -> dict:
    report = tmp / f"{model}-{recipe}-{'tight' if budget else 'registry'}"
    cmd = [sys.executable, "-m", "harness", "doctor", model, recipe, f"--report-dir={report}",
           f"--engine-cache={report / 'cache'}", f"--doctor-max-minutes={args.minutes}", f"--chunk={args.chunk}"]
    if budget:
        cmd.append(f"--budget={budget}")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rows = json.loads((report / "results.json").read_text())["rows"] if (report / "results.json").exists() else []
    doc = next((r for r in rows if r["type"] == "doctor"), None)
    if doc is None:
        sys.exit(proc.stdout[-3000:] + proc.stderr[-3000:])
    return {"wall": wall, **doc}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--cases", default=",".join(f"{m}:{r}" for m, r in TIGHTER))
    ap.add_argument("--registry-only", action="store_true", help="only the registry's budgets (no search)")
    args = ap.parse_args()
    print("| model | recipe | budget | result | gates | wall s (budget) | compare s | held MB | RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            model, recipe = case.split(":")
            for budget in (None,) if args.registry_only else (None, TIGHTER.get((model, recipe))):
                d = run(model, recipe, budget, args, Path(tmp))
                result = d["status"] if d["status"] != "fixed" else \
                    f"keeps {len(d['keep_fp32'])} of {d['candidates']}"
                c = d.get("compare", {})
                print(f"| {model} | {recipe} | {budget or 'registry'} | {result} | {len(d.get('search', []))} | "
                      f"{d['wall']:.0f} ({args.minutes * 60:.0f}) | {c.get('seconds')} | {c.get('held_peak_mb')} | "
                      f"{c.get('rss_peak_mb')} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
