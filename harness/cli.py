"""Command line: ``python -m harness run | report | compare | models | cache``.

``run``      the main job, from a project's folder: the registry's gates (the accuracy gates, then the perf
             sweep) through pytest and the plugin, then REPORT.md. It takes the plugin's options (the same
             as pytest's ``--registry``, ``--models``...; unset ones come from the project's ini file); extra
             arguments after ``--`` go to pytest.
``report``   re-render REPORT.md from a report folder's results.json (or from its rows, after a crash).
``compare``  print the changes from a baseline results.json to another; exit 1 on regressions.
``models``   list the registry's models, inputs and profiles (after checking it as a run would).
``cache``    show what the engine cache holds.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .errors import HarnessError
from .options import OPTIONS, Option


def cmd_run(args: argparse.Namespace, passthrough: list[str]) -> int:
    import pytest

    from . import plugin

    marker = "accuracy" if args.accuracy_only else ("perf" if args.perf_only else "accuracy or perf")
    argv = ["--gates-only", "-m", marker, "-p", "no:cacheprovider"]
    for opt in OPTIONS:
        value = getattr(args, opt.dest)
        if value:
            # the --option=VALUE form: pytest never takes the value for a test path
            argv.append(opt.flag if opt.kind == "flag" else f"{opt.flag}={value}")
    argv += passthrough
    print("running: pytest " + shlex.join(argv), flush=True)
    # the plugin registered up front: its options are known while pytest reads the command line
    return int(pytest.main(argv, plugins=[plugin]))


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
    from .preflight import check_registry
    from .recipes import all_recipes
    from .registry import load_registry

    reg = load_registry(args.registry)
    check_registry(reg, all_recipes(reg))
    for spec in reg.models.values():
        state = f"  (unavailable: {spec.unavailable})" if spec.unavailable else ""
        print(f"{spec.name}: {spec.path}{state}")
        for inp in spec.inputs.values():
            print(f"  input  {inp.name}: {inp.dtype.name} {list(inp.dims)} range [{inp.low:g}, {inp.high:g}] "
                  f"{inp.distribution}")
        for pname, prof in spec.profiles.items():
            print(f"  profile {pname}: {prof.describe()}")
        print(f"  recipes: {', '.join(spec.recipes or reg.default_recipes)}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from .cache import Cache, default_root

    root = Path(args.dir) if args.dir else default_root(Path.cwd())
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


def _metavar(opt: Option) -> str:
    kind = opt.kind
    if kind == "str" and opt.choices:
        return "|".join(opt.choices)
    return {"path": "PATH", "list": "A,B", "intlist": "N,M", "int": "N", "float": "X", "boollist": "yes,no",
            "options": "K=V,..."}.get(kind, "VALUE")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, passthrough = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(prog="harness", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the registry's gates and write the report",
                       description="Run the registry's gates through pytest and the harness plugin, from the "
                       "project's folder; options left out come from its ini file (harness_<name>). Arguments "
                       "after -- go to pytest, e.g. -- -n 4 or -- -k classifier.")
    for opt in OPTIONS:
        if opt.kind == "flag":
            r.add_argument(opt.flag, dest=opt.dest, action="store_true", help=opt.help)
        else:
            r.add_argument(opt.flag, dest=opt.dest, metavar=_metavar(opt), help=opt.help)
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
