"""Command line: ``python -m harness run | report | compare | models | cache``.

``run``      the main job: the gate suites over the registry's models (ONNX Runtime CPU by default), then
             REPORT.md; extra arguments after ``--`` go to pytest.
``report``   re-render REPORT.md from a report folder's results.json (or from its rows, after a crash).
``compare``  print the changes from a baseline results.json to another; exit 1 on regressions.
``models``   list the registry's models, inputs and profiles.
``cache``    show what the engine cache holds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import HarnessError


def project_root() -> Path:
    """The checkout that holds the gate suites: the current folder if it has them, else the package's parent."""
    cwd = Path.cwd()
    if (cwd / "tests" / "gates").is_dir():
        return cwd
    return Path(__file__).resolve().parent.parent


def cmd_run(args: argparse.Namespace, passthrough: list[str]) -> int:
    import pytest

    root = project_root()
    gates = root / "tests" / "gates"
    if not gates.is_dir():
        print(f"harness run: no gate suites at {gates}; run it from the project's checkout", file=sys.stderr)
        return 2
    marker = "accuracy" if args.accuracy_only else ("perf" if args.perf_only else "accuracy or perf")
    argv = [str(gates), "--rootdir", str(root), "-m", marker, "-p", "no:cacheprovider"]
    if args.backends:
        argv += ["--backends", args.backends]
    if args.models:
        argv += ["--models", args.models]
    if args.report_dir:
        argv += ["--report-dir", args.report_dir]
    argv += passthrough
    print("running: pytest " + " ".join(argv), flush=True)
    return int(pytest.main(argv))


def cmd_report(args: argparse.Namespace) -> int:
    from .environment import environment
    from .report import write_report
    from .results import RESULTS, ROWS, load_results, merge_run

    folder = Path(args.dir)
    if not (folder / RESULTS).exists():
        runs = sorted(p.name for p in (folder / ROWS).glob("*") if p.is_dir())
        if not runs:
            print(f"harness report: {folder} has neither {RESULTS} nor rows/", file=sys.stderr)
            return 2
        for run in runs:  # oldest first, so newer rows replace older ones
            merge_run(folder, run, environment=environment())
    path = write_report(folder, load_results(folder / RESULTS))
    print(f"wrote {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import Thresholds, compare_files

    th = Thresholds(throughput_drop=args.throughput_drop, latency_rise=args.latency_rise, error_rise=args.error_rise)
    text, regressions = compare_files(Path(args.baseline), Path(args.candidate), th)
    print(text)
    print(f"\n{regressions} regression(s)")
    return 1 if regressions else 0


def cmd_models(args: argparse.Namespace) -> int:
    from .registry import load_registry

    reg = load_registry(args.registry)
    for spec in reg.models.values():
        state = f"  (unavailable: {spec.unavailable})" if spec.unavailable else ""
        print(f"{spec.name}: {spec.path}{state}")
        for inp in spec.inputs.values():
            batch = "shared (no batch axis)" if inp.shared else f"batch axis {inp.batch_axis}"
            values = f"value {inp.value.tolist()}" if inp.value is not None else \
                f"range [{inp.low:g}, {inp.high:g}] {inp.distribution}"
            print(f"  input  {inp.name}: {inp.dtype.name} {list(inp.dims)} {batch}; {values}")
        for out, cfg in spec.outputs.items():
            extra = [f"class axis {cfg.class_axis}"] if cfg.class_axis is not None else []
            extra += [f"metrics {', '.join(cfg.metrics)}"] if cfg.metrics else []
            extra += [f"labels {cfg.labels!r}"] if cfg.labels else []
            if extra:
                print(f"  output {out}: {'; '.join(extra)}")
        for pname, prof in spec.profiles.items():
            print(f"  profile {pname}: {prof.describe()}")
        print(f"  recipes: {', '.join(spec.recipes or reg.default_recipes)}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from .cache import Cache, default_root

    root = Path(args.dir) if args.dir else default_root(project_root())
    if not root.exists():
        print(f"{root}: empty")
        return 0
    cache = Cache(root)
    total = 0
    for side in sorted(root.glob("*/**/entry.json")):
        art = next((p for p in side.parent.iterdir() if p.name != "entry.json"), None)
        size = sum(p.stat().st_size for p in side.parent.rglob("*") if p.is_file())
        total += size
        print(f"{size / 2**20:9.2f} MB  {side.parent.relative_to(root)}  {art.name if art else ''}")
    print(f"{total / 2**20:9.2f} MB  in {root}; {len(cache.builds())} builds logged")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, passthrough = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(prog="harness", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the gate suites and write the report")
    r.add_argument("--backends", help="comma-separated backends (default: ort_cpu, or the ini's)")
    r.add_argument("--models", help="comma-separated models (default: all)")
    r.add_argument("--report-dir", help="report folder (default: reports)")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--accuracy-only", action="store_true", help="skip the perf sweep")
    g.add_argument("--perf-only", action="store_true", help="skip the accuracy gates")
    p = sub.add_parser("report", help="re-render REPORT.md")
    p.add_argument("dir", nargs="?", default="reports")
    c = sub.add_parser("compare", help="compare a run with a baseline")
    c.add_argument("baseline")
    c.add_argument("candidate")
    c.add_argument("--throughput-drop", type=float, default=0.05, help="regression if samples/s falls more (0.05)")
    c.add_argument("--latency-rise", type=float, default=0.10, help="regression if p99 latency rises more (0.10)")
    c.add_argument("--error-rise", type=float, default=1.5, help="regression if p99 rel_l2 grows more (x1.5)")
    m = sub.add_parser("models", help="list the registry's models")
    m.add_argument("--registry", default="fixtures/models.toml")
    k = sub.add_parser("cache", help="show the engine cache")
    k.add_argument("--dir", help="cache folder (default: $HARNESS_CACHE_DIR or .cache/harness)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "run":
            return cmd_run(args, passthrough)
        return {"report": cmd_report, "compare": cmd_compare, "models": cmd_models, "cache": cmd_cache}[args.cmd](args)
    except (HarnessError, FileNotFoundError, ValueError) as exc:
        print(f"harness {args.cmd}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
