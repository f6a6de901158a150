"""The summary benchmarks/multi_gpu.sh prints last: all GPUs against one, from the steps' report folders.

    python benchmarks/multi_gpu_summary.py REPORT_DIR

Reads ``REPORT_DIR/steps.tsv`` (step, wall seconds, exit status, pytest's last line) and each step's report
folder, and prints: the steps; wall time of the accuracy gates and of the perf sweep on all GPUs against GPU 0
alone; whether every accuracy case got the same verdict on one GPU and on all; per GPU of the spread perf run,
its cases, its own NVML utilisation while timed and the other GPUs' utilisation over the same windows (both
busy at once shows there); each case's throughput on all GPUs against GPU 0 alone; and, for the run where
every GPU ran every case at once, the GPUs side by side.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from pathlib import Path

from harness.results import load_results
from harness.rows import AccuracyRow, AnyRow, PerfRow


def rows_of(folder: Path) -> list[AnyRow]:
    try:
        return load_results(folder).rows
    except (OSError, ValueError):
        return []


def steps(report: Path) -> dict[str, tuple[float | None, str, str]]:
    out: dict[str, tuple[float | None, str, str]] = {}
    path = report / "steps.tsv"
    for line in path.read_text().splitlines() if path.is_file() else []:
        step, seconds, rc, note = (line.split("\t") + ["", "", "", ""])[:4]
        out[step] = (float(seconds) if seconds else None, rc, note)
    return out


def gpu_of(r: AnyRow) -> str:
    d = r.device
    return f"gpu{d.get('index')}" if d.get("kind") == "gpu" else "cpu"


def ratio_text(values: list[float]) -> str:
    if not values:
        return "–"
    return f"median {statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f}) over {len(values)}"


def wall(times: dict, one: str, many: str, what: str) -> str | None:
    a, b = times.get(one, (None,))[0], times.get(many, (None,))[0]
    if not a or not b:
        return None
    return f"{what}: GPU 0 alone {a:.0f} s, all GPUs {b:.0f} s: {a / b:.2f}x"


def summary(report: Path) -> list[str]:
    times = steps(report)
    out = ["", "== summary: one pytest-xdist worker per GPU against GPU 0 alone =="]
    for step, (seconds, rc, note) in times.items():
        out.append(f"{step:10} {'' if seconds is None else f'{seconds:7.1f} s'}  "
                   f"{'' if not rc else 'exit ' + rc + ': '}{note}")
    env = next((r.env for r in rows_of(report / "perf-all") + rows_of(report / "acc-cold")), {})
    if env:
        out.append(f"host {env.get('host')}: {env.get('gpu_count', '?')} x {env.get('gpu', '?')}, {env.get('cpu')}")
    for line in (wall(times, "acc-one", "acc-all", "accuracy gates (warm cache)"),
                 wall(times, "perf-one", "perf-all", "perf sweep")):
        if line:
            out.append(line)
    acc = {name: {r.case_key(): r.status for r in rows_of(report / name) if isinstance(r, AccuracyRow)}
           for name in ("acc-one", "acc-all", "acc-cold")}
    many = acc["acc-all"] or acc["acc-cold"]
    if acc["acc-one"] and many:
        both = set(acc["acc-one"]) & set(many)
        differ = sorted("-".join(k[1:]) for k in both if acc["acc-one"][k] != many[k])
        out.append(f"accuracy verdicts, GPU 0 alone against all GPUs: {len(both) - len(differ)} of {len(both)} cases "
                   f"the same" + (f"; differ: {', '.join(differ[:6])}" if differ else ""))
    spread = [r for r in rows_of(report / "perf-all") if isinstance(r, PerfRow) and r.throughput]
    by_gpu: dict[str, list[PerfRow]] = defaultdict(list)
    for r in spread:
        by_gpu[gpu_of(r)].append(r)
    for gpu, rs in sorted(by_gpu.items()):
        own = [float(r.resources["gpu_util"]) for r in rs if r.resources.get("gpu_util") is not None]
        others: dict[str, list[float]] = defaultdict(list)
        for r in rs:
            for index, util in (r.resources.get("gpu_util_by_index") or {}).items():
                if f"gpu{index}" != gpu:
                    others[f"gpu{index}"].append(float(util))
        meanwhile = ", ".join(f"{g} {statistics.mean(u):.0f} %" for g, u in sorted(others.items()))
        out.append(f"perf-all {gpu}: {len(rs)} cases, its NVML utilisation while timed "
                   f"{statistics.mean(own):.0f} %" if own else f"perf-all {gpu}: {len(rs)} cases")
        if meanwhile:
            out[-1] += f"; meanwhile {meanwhile}"
    alone = {r.case_key(): r for r in rows_of(report / "perf-one") if isinstance(r, PerfRow) and r.throughput}
    ratios = [r.throughput / alone[r.case_key()].throughput for r in spread  # type: ignore[operator]
              if r.case_key() in alone and alone[r.case_key()].throughput]
    if ratios:
        out.append(f"throughput of each case in perf-all against GPU 0 alone: {ratio_text(ratios)}")
    each = [r for r in rows_of(report / "perf-each") if isinstance(r, PerfRow) and r.throughput]
    if each:
        cases: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
        for r in each:
            cases[r.case_key()][gpu_of(r)] = float(r.throughput or 0.0)
        gpus = sorted({g for c in cases.values() for g in c})
        if len(gpus) > 1:
            first = gpus[0]
            for g in gpus[1:]:
                vs = [c[g] / c[first] for c in cases.values() if g in c and c.get(first)]
                out.append(f"perf-each, every case on every GPU at once: {g} against {first}: {ratio_text(vs)}")
        out.append(f"cross-device report: {report / 'perf-each' / 'REPORT.md'} (## Across devices)")
    for name in ("perf-all", "acc-cold"):
        if (report / name / "REPORT.md").is_file():
            out.append(f"report: {report / name / 'REPORT.md'}")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    print("\n".join(summary(Path(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
