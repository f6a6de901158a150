"""Command line: ``python -m harness run | report | compare | history | models | cache | doctor``.

``run``      the main job, from a project's folder: the registry's gates (the accuracy gates, then the perf
             sweep) through pytest and the plugin, then REPORT.md. It takes the plugin's options (the same
             as pytest's ``--registry``, ``--models``...; unset ones come from the project's ini file); extra
             arguments after ``--`` go to pytest.
``report``   merge rows that results.json does not hold yet (after a crash), re-render REPORT.md; with several
             folders (one per host or shard) and ``--out``, gather their rows into one report.
``compare``  the changes from a baseline results.json to another; exit 1 on regressions or missing cases.
``history``  the nightly history database: ``runs`` (default), ``show CASE``, ``changes``, ``append``.
``models``   list the registry's models, inputs and profiles (after checking it as a run would).
``cache``    show what the engine cache holds.
``doctor``   where a failing recipe's error starts, and the smallest keep_fp32 list that passes its budgets.

Exit status: 0 fine, 1 a comparison or change detection found regressions (or missing cases), or the doctor
found no fix; 2 bad input (a file that cannot be read, named on stderr in one line).
"""

from __future__ import annotations

import argparse
import shlex
import sqlite3
import sys
from pathlib import Path

from .errors import HarnessError
from .options import OPTIONS, Option


def cmd_run(args: argparse.Namespace, passthrough: list[str]) -> int:
    import pytest

    from . import plugin

    marker = "accuracy" if args.accuracy_only else ("perf" if args.perf_only else "accuracy or perf")
    # the harness package is imported already (this command is part of it): pytest cannot assert-rewrite it,
    # and says so once per run; nothing of it needs rewriting
    argv = ["--gates-only", "-m", marker, "-p", "no:cacheprovider",
            "-W", "ignore::pytest.PytestAssertRewriteWarning"]
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
    from .results import RESULTS, ROWS, merge_pending

    sources = [Path(d) for d in args.dirs]
    if len(sources) > 1 and not args.out:
        print(f"harness report: {len(sources)} folders given: name the folder of the gathered report with --out",
              file=sys.stderr)
        return 2
    folder = Path(args.out) if args.out else sources[0]
    if args.out:
        from .gather import gather

        done = gather(sources, folder)
        for w in done.warnings:
            print(f"harness report: warning: {w}", file=sys.stderr)
        print(f"gathered {done.copied} row file(s)" + (f" and {done.from_results} row(s) kept only in a {RESULTS}"
                                                      if done.from_results else "")
              + f" from {len(sources)} folder(s) into {folder}")
    outcome = merge_pending(folder, environment=environment())
    for w in outcome.warnings:
        print(f"harness report: warning: {w}", file=sys.stderr)
    if outcome.results is None:
        print(f"harness report: {folder} has neither {RESULTS} nor rows under {ROWS}/", file=sys.stderr)
        return 2
    if outcome.merged_runs:
        print(f"merged {outcome.new_rows} row(s) of {len(outcome.merged_runs)} run(s) that {RESULTS} did not "
              f"hold: {', '.join(outcome.merged_runs)}")
    path = write_report(folder, outcome.results, history=Path(args.history) if args.history else None)
    print(f"wrote {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import Thresholds, compare_files, render

    th = Thresholds(perf=args.threshold, tail=args.tail_threshold, error_rise=args.error_rise)
    cmp = compare_files(Path(args.baseline), Path(args.candidate), th, across_devices=args.across_devices)
    print(render(cmp))
    print(f"\n{cmp.summary()}" + (" (missing cases allowed)" if cmp.missing and args.allow_missing else ""))
    return 1 if cmp.failed(args.allow_missing) else 0


def cmd_history(args: argparse.Namespace) -> int:
    from .history import History
    from .trends import Options, all_trends, changes_text, show_text

    db = Path(args.db)
    verb = args.history_cmd or "runs"
    if verb == "append":
        from .results import RESULTS, load_results

        src = Path(args.results)
        results = load_results(src / RESULTS if src.is_dir() else src)
        with History(db, create=True) as h:
            added = h.append(results.rows)
        print(f"appended {sum(added.values())} row(s) of {len(added)} run(s) to {db}")
        return 0
    opts = Options(last=args.last, min_step=getattr(args, "min_step", 0.05), min_size=getattr(args, "min_size", 2))
    with History(db) as h:
        if verb == "runs":
            runs = h.runs(last=args.last)
            for run in runs:
                counts = ", ".join(f"{n} {s}" for s, n in sorted(run.statuses.items()))
                print(f"{run.run_id}  {run.started}  {run.host} ({run.machine})  {run.rows} rows: {counts}")
            print(f"{len(runs)} run(s) in {db}")
            return 0
        if verb == "show":
            print(show_text(h, args.case, opts, only=args.number))
            return 0
        trends = all_trends(h, opts, contains=args.case or "")
        print(changes_text(trends))
        still = [t for t in trends if t.open_regression]
        print(f"\n{len(still)} series still at a worse level after a confirmed regression")
        return 1 if still else 0


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
            batch = "shared (no batch axis)" if inp.shared else f"batch axis {inp.batch_axis}"
            values = f"value {inp.value.tolist()}" if inp.value is not None else \
                f"range [{inp.low:g}, {inp.high:g}] {inp.distribution}"
            print(f"  input  {inp.name}: {inp.dtype.name} {list(inp.dims)} {batch}; {values}")
        for out, cfg in spec.outputs.items():
            judged = [f"class axis {cfg.class_axis}"] if cfg.class_axis is not None else []
            judged += [f"metrics {', '.join(cfg.metrics)}"] if cfg.metrics else []
            judged += [f"labels {cfg.labels!r}"] if cfg.labels else []
            if judged:
                print(f"  output {out}: {'; '.join(judged)}")
        for pname, prof in spec.profiles.items():
            print(f"  profile {pname}: {prof.describe()}")
        print(f"  recipes: {', '.join(spec.recipes or reg.default_recipes)}")
    for st in reg.stations.values():
        members = ", ".join(m.model + "".join(f" {x}" for x in (m.recipe, m.profile) if x) for m in st.members)
        extra = "".join([f"; batches {', '.join(map(str, st.batches))}" if st.batches else "",
                         f"; holds {st.fps:g} fps" if st.fps else ""])
        print(f"station {st.name}: {members}{extra}")
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


def cmd_doctor(args: argparse.Namespace) -> int:
    from .cache import default_root
    from .doctor.report import terminal_lines
    from .doctor.run import DoctorOptions, doctor_case
    from .environment import environment
    from .report import write_report
    from .results import merge_pending
    from .session import AccuracyCase, HarnessSession, Settings

    for flag, value in (("--samples", args.samples), ("--chunk", args.chunk),
                        ("--doctor-max-minutes", args.doctor_max_minutes), ("--price-seconds", args.price_seconds)):
        if not value > 0:
            raise HarnessError(f"{flag} must be positive, got {value}")
    report_dir = Path(args.report_dir)
    cache = Path(args.engine_cache) if args.engine_cache else default_root(Path.cwd())
    hs = HarnessSession(Settings(registry=Path(args.registry), report_dir=report_dir, cache_dir=cache,
                                 backends=[args.backend], eval_size=args.eval_size))
    spec = hs.model(args.model)
    hs.recipe(args.recipe)
    profile = args.profile or next(iter(spec.profiles))
    options = DoctorOptions(samples=args.samples, max_minutes=args.doctor_max_minutes, chunk=args.chunk,
                            budgets=args.budget or None, price_seconds=args.price_seconds)
    case = AccuracyCase(spec.name, args.backend, args.recipe, profile)
    try:
        row = doctor_case(hs, case, options, progress=lambda line: print(line, flush=True))
    finally:
        hs.close()
        outcome = merge_pending(report_dir, environment=environment())
        if outcome.results is not None:
            print(f"report: {write_report(report_dir, outcome.results)}")
    print("\n".join(terminal_lines([row])))
    return 0 if row.status in ("fixed", "passes") else 1


def _metavar(opt: Option) -> str:
    kind = opt.kind
    if kind == "str" and opt.choices:
        return "|".join(opt.choices)
    return {"path": "PATH", "list": "A,B", "intlist": "N,M", "int": "N", "count": "N", "float": "X", "boollist": "yes,no",
            "options": "K=V,...", "gpus": "all|0,1", "shard": "I/N"}.get(kind, "VALUE")


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
    p = sub.add_parser("report", help="merge rows not yet in results.json, re-render REPORT.md; gather several "
                       "hosts' report folders into one with --out")
    p.add_argument("dirs", nargs="*", default=["reports"], metavar="DIR",
                   help="report folder(s) (default: reports); several need --out")
    p.add_argument("--out", help="gather the rows of every DIR into this report folder, and render it there")
    p.add_argument("--history", help="history database: adds trends and change points to the report")
    c = sub.add_parser("compare", help="compare a run with a baseline")
    c.add_argument("baseline")
    c.add_argument("candidate")
    c.add_argument("--threshold", "--throughput-drop", type=float, default=0.05,
                   help="perf regression if the median latency rises significantly and by more (0.05)")
    c.add_argument("--tail-threshold", "--latency-rise", type=float, default=0.10,
                   help="perf regression if the p99 latency rises significantly and by more (0.10)")
    c.add_argument("--error-rise", type=float, default=1.5,
                   help="accuracy regression if a budgeted statistic's error grows more (x1.5)")
    c.add_argument("--allow-missing", action="store_true",
                   help="cases of the baseline absent (or skipped) in the candidate do not fail the comparison")
    c.add_argument("--across-devices", action="store_true",
                   help="pair each case whatever device it ran on (default: like with like, the same GPU model or CPU)")
    h = sub.add_parser("history", help="the nightly history: runs, a case's series, change points")
    h.add_argument("--db", default="reports/history.sqlite", help="history database (reports/history.sqlite)")
    h.add_argument("--last", type=int, default=60, help="runs to look back (60)")
    hs = h.add_subparsers(dest="history_cmd")
    # the same options after the verb; SUPPRESS keeps a verb's parser from resetting what came before it
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--db", default=argparse.SUPPRESS, help="history database (reports/history.sqlite)")
    db.add_argument("--last", type=int, default=argparse.SUPPRESS, help="runs to look back (60)")
    steps = argparse.ArgumentParser(add_help=False)
    steps.add_argument("--min-step", type=float, default=0.05, help="smallest relative change reported (0.05)")
    steps.add_argument("--min-size", type=int, default=2, help="runs a new level must hold to be confirmed (2)")
    hs.add_parser("runs", parents=[db], help="list the runs (default)")
    sh = hs.add_parser("show", parents=[db, steps], help="a case's numbers run by run, with change points")
    sh.add_argument("case", help="the case's id, e.g. ranker-ort_cpu-fp32-dynamic (or a unique part of it)")
    sh.add_argument("--number", help="only this number (throughput, p50_ms, p99(rel_l2)...)")
    ch = hs.add_parser("changes", parents=[db, steps], help="change points of every case; exit 1 if a "
                       "confirmed regression is still the latest level")
    ch.add_argument("--case", help="only cases whose id contains this")
    ap_ = hs.add_parser("append", parents=[db], help="append a results.json (or a report folder's) to the database")
    ap_.add_argument("results")
    d = sub.add_parser("doctor", help="where a recipe's error starts, and the smallest keep_fp32 fix that passes",
                       description="Compare a recipe's model with the FP32 model node by node, search for the "
                       "fewest nodes to keep in FP32 so that the model's budgets pass, write that recipe (TOML) "
                       "and its price in serial throughput. Exit 0: fixed (or passing already); 1: no fix found.")
    d.add_argument("model")
    d.add_argument("recipe")
    d.add_argument("--backend", default="ort_cpu", help="the backend the fix must pass on (ort_cpu)")
    d.add_argument("--profile", help="the shape profile (default: the model's first)")
    d.add_argument("--samples", type=int, default=4, help="samples compared node by node (4)")
    d.add_argument("--doctor-max-minutes", type=float, default=10.0, help="time budget of the whole run (10)")
    d.add_argument("--chunk", type=int, default=64, help="tensors marked as outputs at once (64)")
    d.add_argument("--budget", action="append", help="a budget replacing the model's (repeat for several), "
                   "e.g. --budget 'p99(rel_l2) <= 5%%'")
    d.add_argument("--price-seconds", type=float, default=1.0, help="seconds each throughput measurement lasts (1)")
    d.add_argument("--eval-size", type=int, help="evaluation-set size (default: the registry's)")
    d.add_argument("--registry", default="fixtures/models.toml")
    d.add_argument("--report-dir", default="reports")
    d.add_argument("--engine-cache", help="cache folder (default: $HARNESS_CACHE_DIR or .cache/harness)")
    m = sub.add_parser("models", help="list the registry's models")
    m.add_argument("--registry", default="fixtures/models.toml")
    k = sub.add_parser("cache", help="show the engine cache")
    k.add_argument("--dir", help="cache folder (default: $HARNESS_CACHE_DIR or .cache/harness)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "run":
            return cmd_run(args, passthrough)
        return {"report": cmd_report, "compare": cmd_compare, "history": cmd_history, "models": cmd_models,
                "cache": cmd_cache, "doctor": cmd_doctor}[args.cmd](args)
    except (HarnessError, FileNotFoundError, ValueError, sqlite3.Error) as exc:
        print(f"harness {args.cmd}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
