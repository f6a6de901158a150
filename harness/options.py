"""The harness's options: one table, read from the command line, the ini file or defaults, checked and
turned into :class:`~harness.session.Settings`.

Each option is ``--NAME`` on the command line and ``harness_NAME`` in the ini file (``[tool.pytest.ini_options]``
in ``pyproject.toml``, ``pytest.ini``, ...); the command line wins. ``python -m harness run`` offers the same
table. A value that cannot be used is refused with one line naming the option, where it came from, the value
and what is allowed.

Paths resolve where a user wrote them: a command-line path against the working directory (as every other
command-line path does), an ini path against the ini file's folder, a default against pytest's rootdir, and
``$HARNESS_CACHE_DIR`` against the working directory. None of them depends on where pytest guessed its
rootdir from the other arguments.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import HarnessError


class OptionError(HarnessError):
    """An option's value cannot be used; the message names the option, its source and what is allowed."""


@dataclass(frozen=True)
class Option:
    dest: str
    help: str
    kind: str  # str | path | list | int | count | float | flag | boollist | intlist | options | ort_setup | gpus | shard
    default: Any = None
    choices: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.dest.replace("_", "-")

    @property
    def ini(self) -> str:
        return "harness_" + self.dest


PERF_MODES = ("serial", "multistream", "threadpool")

OPTIONS: list[Option] = [
    Option("registry", "the model registry TOML (in the ini file: harness_registry; without one there are no gates)",
           "path"),
    Option("models", "comma-separated models to test (default: all in the registry)", "list"),
    Option("backends", "comma-separated backends: ort_cpu, ort_cuda, tensorrt, tensorrt_rtx, or auto (default: every "
           "backend this machine can run; named ones that cannot run here skip with the reason)", "list", "auto",
           ("auto", "ort_cpu", "ort_cuda", "tensorrt", "tensorrt_rtx")),
    Option("recipes", "comma-separated recipes for every selected model (default: each model's list in the registry)",
           "list"),
    Option("profiles", "comma-separated shape profiles (default: all of each model's)", "list"),
    Option("report_dir", "where results.json and REPORT.md go (default: reports under the rootdir)", "path", "reports"),
    Option("eval_size", "evaluation-set size, overriding the registry's per-model size", "int"),
    Option("engine_cache", "engine cache folder (default: $HARNESS_CACHE_DIR, else .cache/harness under the rootdir)",
           "path"),
    Option("rebuild_engines", "rebuild every cache entry this run uses, once", "flag", False),
    Option("baseline", "results.json to compare this run against in REPORT.md", "path"),
    Option("history", "SQLite database to append this run's rows to (nightly trends and change points)", "path"),
    Option("strict_budgets", "fail accuracy cases that no budget applies to (default: they pass as 'unbudgeted', "
           "named in the summary)", "flag", False),
    Option("reference_device", "where the FP32 reference is computed: cpu (default) or gpu (ORT CUDA, TF32 off)",
           "str", "cpu", ("cpu", "gpu")),
    Option("shapes", "the shapes of each profile accuracy gates run at: min, opt, max, extra (the registry's extra "
           "shapes) or an extra shape's name (default: all)", "list"),
    Option("trt_options", "TensorRT builder options, e.g. opt_level=5,workspace_mb=4096,max_aux_streams=2,tf32=yes,"
           "compute_capabilities=SM86+SM89 (TensorRT-RTX)", "options"),
    Option("ort_setup", "ONNX Runtime session setup over each ORT backend's default, e.g. engine=optimized,load=all,"
           "conv_algo=HEURISTIC,nhwc=yes,arena=as_requested,stream=own (the conv_algo, nhwc, arena and stream keys: "
           "ort_cuda only)", "ort_setup"),
    Option("perf_modes", "perf modes: serial, multistream, threadpool, server (open-loop: harness.server_check)", "list",
           ",".join(PERF_MODES), (*PERF_MODES, "server")),
    Option("perf_batches", "perf batch sizes (default: 1 and each profile's opt batch)", "intlist"),
    Option("perf_concurrency", "requests in flight / threads for multistream and threadpool", "intlist", "2"),
    Option("perf_duration", "seconds each perf measurement lasts at least", "float", "0.5"),
    Option("perf_warmup", "seconds of warm-up before each perf measurement", "float", "0.2"),
    Option("perf_min_iters", "iterations each perf measurement has at least", "int", "20"),
    Option("perf_max_cv", "robust latency CV above which a perf run is marked unstable", "float", "0.25"),
    Option("perf_max_drift", "windowed throughput drift above which a perf run is marked unstable", "float", "0.2"),
    Option("perf_max_load", "other processes' runnable threads per CPU above which the host is overloaded and a "
           "perf row is flagged", "float", "1.0"),
    Option("perf_sync", "GPU: how the host waits for the device: spin (CUDA's default), block (blocking-sync event), "
           "or spin,block", "list", "spin", ("spin", "block")),
    Option("perf_resident", "inputs resident on the device: yes, no, or yes,no", "boollist", "yes"),
    Option("perf_cuda_graph", "CUDA graphs: no, yes, or no,yes", "boollist", "no"),
    Option("perf_recipes", "recipes to time (default: the registry's perf_recipes among the accuracy recipes)", "list"),
    Option("perf_profiles", "profiles to time (default: all, or --profiles)", "list"),
    Option("perf_check_requests", "checked requests per runner during each perf measurement: real evaluation inputs "
           "whose outputs are compared afterwards with the engine's own (accuracy under load); 0 turns it off",
           "count", "4"),
    # (no percent sign in a help text: argparse formats help strings with it)
    Option("server_rates", "server mode's offered rates: requests per second (200), or a share of the capacity "
           "measured closed-loop over the same runners, as a percentage (default: 50, 90 and 110 percent)", "list",
           "50%,90%,110%"),
    Option("perf_latency_bound", "a latency bound such as p99<=20ms: server cases search, for each batch and N, the "
           "highest Poisson rate that keeps it (implies the server mode)", "str"),
    Option("stations", "comma-separated stations to time (default: every station in the registry; with --models, "
           "those whose models are all selected)", "list"),
    Option("station_modes", "station modes: serial, multistream, threadpool, merged", "list",
           "serial,multistream,threadpool,merged"),
    Option("gpus", "GPUs to run on: all, or numbers such as 0,1 (under CUDA_VISIBLE_DEVICES, positions in it); with "
           "-n one worker per GPU (-n auto: as many as GPUs), each pinned before CUDA starts; without -n, one GPU",
           "gpus"),
    Option("gpu_cpus", "CPUs of each GPU's process: near (the CPUs NVML puts near its GPU, split between the "
           "workers that share them) or all (no pinning)", "str", "near", ("near", "all")),
    Option("shard", "run the I-th of N deterministic parts of the tests, e.g. 2/4 (one per host of a CI matrix or "
           "job array; python -m harness report DIR... merges their rows)", "shard"),
    Option("shard_durations", "an earlier results.json whose case durations balance the shards (default: by case id)",
           "path"),
    Option("doctor", "at the end of the run, the precision doctor on each failed accuracy case: where its error "
           "starts and the fewest nodes kept in FP32 that pass (REPORT.md: 'Precision doctor')", "flag", False),
    Option("doctor_max_minutes", "time budget of --doctor, shared by the failed cases", "float", "10"),
    Option("doctor_samples", "samples --doctor compares node by node", "int", "4"),
]
BY_DEST = {o.dest: o for o in OPTIONS}
PATH_FLAGS = tuple(o.flag for o in OPTIONS if o.kind == "path")
VALUE_FLAGS = tuple(o.flag for o in OPTIONS if o.kind != "flag")

_WORDS = {"yes": True, "on": True, "true": True, "1": True, "no": False, "off": False, "false": False, "0": False}


@dataclass(frozen=True)
class Raw:
    """A value as the user gave it, where it came from (for messages) and the folder its paths resolve in."""

    value: Any
    source: str  # "--report-dir", "harness_report_dir in pyproject.toml", "default"
    base: Path


def parse_value(opt: Option, raw: Raw) -> Any:
    """The checked value of one option, or OptionError naming it, its source and what is allowed."""
    text = raw.value
    if opt.kind == "flag":
        return bool(text)

    def refuse(allowed: str) -> OptionError:
        return OptionError(f"{raw.source}: cannot use {text!r}: {allowed}")

    s = str(text).strip()
    if opt.kind == "path":
        if not s:
            raise refuse("give a path")
        p = Path(os.path.expanduser(s))
        return p if p.is_absolute() else raw.base / p
    if opt.kind in ("list", "intlist", "boollist"):
        items = [x.strip() for x in s.split(",") if x.strip()]
        if not items:
            raise refuse("it names nothing; give a comma-separated list")
        if opt.kind == "list":
            bad = [x for x in items if opt.choices and x not in opt.choices]
            if bad:
                raise refuse(f"{', '.join(bad)} is not one of {', '.join(opt.choices)}")
            return items
        if opt.kind == "intlist":
            if not all(_positive_int(x) for x in items):
                raise refuse("give positive integers separated by commas, e.g. 1,8,32")
            return [int(x) for x in items]
        if not all(x.lower() in _WORDS for x in items):
            raise refuse("give yes, no, or yes,no")
        return list(dict.fromkeys(_WORDS[x.lower()] for x in items))
    if opt.kind == "int":
        if not _positive_int(s):
            raise refuse("give a positive integer")
        return int(s)
    if opt.kind == "count":
        if not (_positive_int(s) or s == "0"):
            raise refuse("give an integer >= 0")
        return int(s)
    if opt.kind == "float":
        try:
            real = float(s)
        except ValueError:
            real = -1.0
        if not real >= 0 or real == float("inf"):
            raise refuse("give a number >= 0 (seconds, or a fraction)")
        return real
    if opt.kind == "gpus":
        from .devices import parse_gpus

        return parse_gpus(s, raw.source)
    if opt.kind == "shard":
        from .shard import parse_shard

        return parse_shard(s, raw.source)
    if opt.kind == "ort_setup":  # the values as written; every key and value checked now, not at the first build
        from .backends.ort_setup import OrtSetup, setup_options

        try:
            setup = setup_options(s, where=raw.source)
            OrtSetup().with_options(setup, where=raw.source)
        except HarnessError as exc:
            raise OptionError(str(exc)) from None
        return setup
    if opt.kind == "options":
        try:
            return parse_builder_options(s)
        except ValueError:
            raise refuse("give key=value pairs separated by commas, e.g. opt_level=5,tf32=yes") from None
    if opt.choices and s not in opt.choices:
        raise refuse(f"give one of {', '.join(opt.choices)}")
    return s


def _positive_int(text: str) -> bool:
    try:
        return int(text) >= 1
    except ValueError:
        return False


def parse_builder_options(text: str) -> dict[str, Any]:
    """``k=v,k2=v2``: integers, yes/no, and ``a+b`` lists."""
    out: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(item)
        v: Any = value.strip()
        if v.lower() in ("yes", "true", "on", "no", "false", "off"):
            v = v.lower() in ("yes", "true", "on")
        elif "+" in v:
            v = [x for x in v.split("+") if x]
        else:
            try:
                v = int(v)
            except ValueError:
                pass
        out[key.strip()] = v
    return out


def read_options(lookup: Callable[[Option], Raw | None], *, root: Path, cwd: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Every option's checked value, and where each came from. ``lookup`` gives an option's value from the
    command line or the ini file (None when neither sets it); defaults resolve against ``root``,
    ``$HARNESS_CACHE_DIR`` against ``cwd``."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for opt in OPTIONS:
        raw = lookup(opt)
        if raw is None and opt.dest == "engine_cache" and os.environ.get("HARNESS_CACHE_DIR"):
            raw = Raw(os.environ["HARNESS_CACHE_DIR"], "$HARNESS_CACHE_DIR", cwd)
        if raw is None:
            if opt.dest == "engine_cache":
                raw = Raw(".cache/harness", "default", root)
            elif opt.default is None:
                values[opt.dest] = None
                continue
            else:
                raw = Raw(opt.default, "default", root)
        values[opt.dest] = parse_value(opt, raw)
        if raw.source != "default":
            sources[opt.dest] = raw.source
    return values, sources


def settings_from(values: dict[str, Any], sources: dict[str, str] | None = None) -> Any:
    """:class:`~harness.session.Settings` from :func:`read_options`' values (imported here, when a registry is
    configured: the session pulls in numpy and the backends' base)."""
    from .session import PerfSettings, Settings

    v = values
    perf = PerfSettings(
        modes=v["perf_modes"], batches=v["perf_batches"], concurrency=v["perf_concurrency"],
        duration=v["perf_duration"], warmup=v["perf_warmup"], min_iters=v["perf_min_iters"],
        max_cv=v["perf_max_cv"], max_drift=v["perf_max_drift"], max_load=v["perf_max_load"], sync=v["perf_sync"],
        resident=v["perf_resident"], cuda_graph=v["perf_cuda_graph"], recipes=v["perf_recipes"],
        profiles=v["perf_profiles"], stations=v["stations"], station_modes=v["station_modes"],
        check_requests=v["perf_check_requests"], server_rates=v["server_rates"], latency_bound=v["perf_latency_bound"],
    )
    return Settings(registry=v["registry"], report_dir=v["report_dir"], cache_dir=v["engine_cache"],
                    models=v["models"], backends=v["backends"], recipes=v["recipes"], profiles=v["profiles"],
                    eval_size=v["eval_size"], rebuild=v["rebuild_engines"], baseline=v["baseline"],
                    history=v["history"],
                    reference_device=v["reference_device"], trt_options=v["trt_options"] or {},
                    ort_setup=v["ort_setup"] or {}, perf=perf,
                    strict_budgets=bool(v["strict_budgets"]), doctor=bool(v["doctor"]),
                    doctor_max_minutes=v["doctor_max_minutes"], doctor_samples=v["doctor_samples"],
                    sources=dict(sources or {}), shapes=v["shapes"])
