"""The pytest plugin: every hook lives here; the logic lives in plain classes behind it.

Registered through the ``pytest11`` entry point ``harness.plugin`` (and by the root ``conftest.py`` when
the package is used from a checkout without being installed; the shared name keeps it from loading twice).

* options: ``--models``, ``--backends``, ``--recipes``, ``--profiles``, ``--report-dir``, ``--eval-size``,
  ``--engine-cache``, ``--rebuild-engines``, ``--baseline``, ``--strict-budgets`` and the ``--perf-*`` sweep,
  each settable in ``[tool.pytest.ini_options]`` as ``harness_<name>``;
* markers ``accuracy``, ``perf``, ``gpu``, ``tensorrt``, added to generated cases, which are skipped with
  the reason when their backend, device or model is missing;
* rows: each process writes its own JSONL; the controller merges them into ``results.json`` and
  ``REPORT.md`` at the end and prints the engine cache's counts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .cache import default_root
from .errors import HarnessError, ModeUnsupported
from .session import AccuracyCase, HarnessSession, PerfSettings, Settings, new_run_id

SESSION_KEY = pytest.StashKey[HarnessSession]()
SUMMARY_KEY = pytest.StashKey[list[str]]()
GENERATED_KEY = pytest.StashKey[bool]()

# (dest, help, kind, default); kind: str | path | list | int | float | flag | boollist | intlist
_OPTIONS: list[tuple[str, str, str, Any]] = [
    ("registry", "model registry TOML (default fixtures/models.toml)", "path", "fixtures/models.toml"),
    ("models", "comma-separated models to test (default: all in the registry)", "list", None),
    ("backends", "comma-separated backends: ort_cpu, ort_cuda, tensorrt, tensorrt_rtx, or auto (default: every "
     "backend this machine can run; named ones that cannot run here skip with the reason)", "list", "auto"),
    ("recipes", "comma-separated recipes for every selected model (default: each model's list in the registry)",
     "list", None),
    ("profiles", "comma-separated shape profiles (default: all of each model's)", "list", None),
    ("report_dir", "where results.json and REPORT.md go (default reports)", "path", "reports"),
    ("eval_size", "evaluation-set size, overriding the registry's per-model size", "int", None),
    ("engine_cache", "engine cache folder (default $HARNESS_CACHE_DIR or .cache/harness)", "path", None),
    ("rebuild_engines", "rebuild every cache entry this run uses, once", "flag", False),
    ("baseline", "results.json to compare this run against in REPORT.md", "path", None),
    ("reference_device", "where the FP32 reference is computed: cpu (default) or gpu (ORT CUDA, TF32 off)", "str",
     "cpu"),
    ("strict_budgets", "fail accuracy cases that no budget applies to (default: they pass as 'unbudgeted')", "flag",
     False),
    ("trt_options", "TensorRT builder options, e.g. opt_level=5,workspace_mb=4096,max_aux_streams=2,tf32=yes,"
     "compute_capabilities=SM86+SM89 (TensorRT-RTX)", "options", None),
    ("perf_modes", "perf modes: serial, multistream, threadpool", "list", "serial,multistream,threadpool"),
    ("perf_batches", "perf batch sizes (default: 1 and each profile's opt batch)", "intlist", None),
    ("perf_concurrency", "requests in flight / threads for multistream and threadpool", "intlist", "2"),
    ("perf_duration", "seconds each perf measurement lasts at least", "float", "0.5"),
    ("perf_warmup", "seconds of warm-up before each perf measurement", "float", "0.2"),
    ("perf_min_iters", "iterations each perf measurement has at least", "int", "20"),
    ("perf_max_cv", "robust latency CV above which a perf run is marked unstable", "float", "0.25"),
    ("perf_max_drift", "windowed throughput drift above which a perf run is marked unstable", "float", "0.2"),
    ("perf_resident", "inputs resident on the device: yes, no, or yes,no", "boollist", "yes"),
    ("perf_cuda_graph", "CUDA graphs: no, yes, or no,yes", "boollist", "no"),
    ("perf_recipes", "recipes to time (default: the accuracy recipes)", "list", None),
    ("perf_profiles", "profiles to time (default: all)", "list", None),
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "inference engine harness")
    for dest, help_text, kind, _default in _OPTIONS:
        flag = "--" + dest.replace("_", "-")
        if kind == "flag":
            group.addoption(flag, action="store_true", default=None, dest=f"harness_{dest}", help=help_text)
            parser.addini(f"harness_{dest}", help_text, type="bool", default=False)
        else:
            group.addoption(flag, action="store", default=None, dest=f"harness_{dest}", help=help_text)
            parser.addini(f"harness_{dest}", help_text, default=None)


def _raw(config: pytest.Config, dest: str) -> Any:
    value = config.getoption(f"harness_{dest}")
    if value is None:
        value = config.getini(f"harness_{dest}")
    return value


def _value(config: pytest.Config, dest: str, kind: str, default: Any) -> Any:
    raw = _raw(config, dest)
    if raw in (None, "", []):
        raw = default
    if raw is None:
        return None
    flag = "--" + dest.replace("_", "-")
    try:
        if kind == "flag":
            return bool(raw)
        if kind == "path":
            p = Path(os.path.expanduser(str(raw)))
            return p if p.is_absolute() else (config.rootpath / p)
        if kind == "list":
            return [x.strip() for x in str(raw).split(",") if x.strip()]
        if kind == "intlist":
            return [int(x) for x in str(raw).split(",") if x.strip()]
        if kind == "boollist":
            words = {"yes": True, "on": True, "true": True, "1": True, "no": False, "off": False, "false": False,
                     "0": False}
            return [words[x.strip().lower()] for x in str(raw).split(",") if x.strip()]
        if kind == "int":
            number = int(raw)
            if number < 1:
                raise ValueError
            return number
        if kind == "options":
            return parse_options(str(raw))
        if kind == "float":
            real = float(raw)
            if real < 0:
                raise ValueError
            return real
    except (ValueError, KeyError):
        raise pytest.UsageError(f"{flag} (or ini harness_{dest}): cannot use {raw!r}") from None
    return raw


def parse_options(text: str) -> dict[str, Any]:
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


def settings_from_config(config: pytest.Config) -> Settings:
    v = {dest: _value(config, dest, kind, default) for dest, _h, kind, default in _OPTIONS}
    cache_dir = v["engine_cache"] or default_root(config.rootpath)
    perf = PerfSettings(
        modes=v["perf_modes"], batches=v["perf_batches"], concurrency=v["perf_concurrency"],
        duration=v["perf_duration"], warmup=v["perf_warmup"], min_iters=v["perf_min_iters"],
        max_cv=v["perf_max_cv"], max_drift=v["perf_max_drift"],
        resident=v["perf_resident"], cuda_graph=v["perf_cuda_graph"], recipes=v["perf_recipes"],
        profiles=v["perf_profiles"],
    )
    return Settings(registry=v["registry"], report_dir=v["report_dir"], cache_dir=cache_dir, models=v["models"],
                    backends=v["backends"], recipes=v["recipes"], profiles=v["profiles"], eval_size=v["eval_size"],
                    rebuild=v["rebuild_engines"], baseline=v["baseline"], reference_device=v["reference_device"],
                    trt_options=v["trt_options"] or {}, perf=perf, strict_budgets=v["strict_budgets"])


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    for name, text in (
        ("accuracy", "accuracy gate against the ONNX Runtime FP32 reference"),
        ("perf", "throughput / latency measurement (never two at once on one device)"),
        ("gpu", "needs a CUDA GPU (skipped with the reason when there is none)"),
        ("tensorrt", "needs TensorRT or TensorRT-RTX (skipped with the reason when missing)"),
        ("build", "builds and caches an engine, runs nothing (TensorRT-RTX builds without a GPU)"),
    ):
        config.addinivalue_line("markers", f"{name}: {text}")
    try:
        settings = settings_from_config(config)
        if is_worker(config):
            wi = config.workerinput  # type: ignore[attr-defined]
            hs = HarnessSession(settings, run_id=wi.get("harness_run_id"), worker=wi["workerid"])
        else:
            hs = HarnessSession(settings, run_id=new_run_id())
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[SESSION_KEY] = hs
    if config.pluginmanager.hasplugin("xdist"):
        from .xdist_support import XdistHooks, refuse_perf_under_xdist

        config.pluginmanager.register(XdistHooks(hs, config, GENERATED_KEY), "harness-xdist")
        refuse_perf_under_xdist(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    hs = config.stash.get(SESSION_KEY, None)
    if hs is not None:
        hs.close()


def _case_marks(hs: HarnessSession, model: str, backend: str, recipe: str | None, kind: str) -> list[Any]:
    from .backends import get_backend

    marks: list[Any] = [getattr(pytest.mark, kind)]
    b = get_backend(backend)
    if b.on_gpu:
        marks.append(pytest.mark.gpu)
    if b.needs_tensorrt:
        marks.append(pytest.mark.tensorrt)
    reason = hs.skip_reason(model, backend, recipe, build_only=kind == "build")
    if reason:
        marks.append(pytest.mark.skip(reason=reason))
    return marks


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    hs = metafunc.config.stash[SESSION_KEY]
    if {"accuracy_case", "build_case", "perf_case"} & set(metafunc.fixturenames):
        metafunc.config.stash[GENERATED_KEY] = True
    try:
        if "accuracy_case" in metafunc.fixturenames:
            params = [pytest.param(c, id=c.id, marks=_case_marks(hs, c.model, c.backend, c.recipe, "accuracy"))
                      for c in hs.accuracy_cases()]
            metafunc.parametrize("accuracy_case", params)
        if "build_case" in metafunc.fixturenames:
            params = [pytest.param(c, id=c.id, marks=_case_marks(hs, c.model, c.backend, c.recipe, "build"))
                      for c in hs.accuracy_cases(build_only=True)]
            metafunc.parametrize("build_case", params)
        if "perf_case" in metafunc.fixturenames:
            from .perf import perf_cases

            params = [pytest.param(c, id=c.id, marks=_case_marks(hs, c.model, c.backend, c.recipe, "perf"))
                      for c in perf_cases(hs)]
            metafunc.parametrize("perf_case", params)
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if is_worker(config):
        # tell the controller (which collects nothing itself under xdist) whether harness cases were generated
        config.workeroutput["harness_generated"] = bool(config.stash.get(GENERATED_KEY, False))  # type: ignore[attr-defined]
        return
    hs = config.stash.get(SESSION_KEY, None)
    if hs is None:
        return
    hs.close()
    from .finish import finish_run

    lines = finish_run(hs)
    if lines:
        config.stash[SUMMARY_KEY] = lines


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines = list(config.stash.get(SUMMARY_KEY, None) or [])
    hs = config.stash.get(SESSION_KEY, None)
    if hs is not None and _collects_harness_cases(config):
        try:
            lines += [f"not run here: {line}" for line in hs.left_out()]
        except HarnessError:  # a bad registry was already reported as a usage error
            pass
    if lines:
        terminalreporter.section("harness")
        for line in lines:
            terminalreporter.write_line(line)


def _collects_harness_cases(config: pytest.Config) -> bool:
    """Whether this session generated harness cases (here, or on an xdist worker: harness.xdist_support)."""
    return bool(config.stash.get(GENERATED_KEY, False))


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def harness_session(request: pytest.FixtureRequest) -> HarnessSession:
    """This process's harness session: registry, recipes, engine cache, row writer."""
    return request.config.stash[SESSION_KEY]


@pytest.fixture
def accuracy_check(harness_session: HarnessSession) -> Callable[..., dict[str, Any]]:
    """Check one accuracy case: ``accuracy_check(case)`` or ``accuracy_check(model, backend, recipe, profile)``."""
    from .checks import AccuracyGateFailure, NoOpRecipe, case_expectation, check_accuracy

    def check(case: AccuracyCase | str, backend: str = "ort_cpu", recipe: str = "fp32",
              profile: str | None = None) -> dict[str, Any]:
        __tracebackhide__ = True
        if isinstance(case, str):
            spec = harness_session.model(case)
            case = AccuracyCase(case, backend, recipe, profile or next(iter(spec.profiles)))
        try:
            known = case_expectation(harness_session, case).known_failure
        except HarnessError:  # an unknown model or recipe: check_accuracy reports it as the case's failure
            known = None
        return _outcome(lambda: check_accuracy(harness_session, case), AccuracyGateFailure, known=known,
                        skips=(ModeUnsupported, NoOpRecipe))

    return check


@pytest.fixture
def build_check(harness_session: HarnessSession) -> Callable[[AccuracyCase], dict[str, Any]]:
    """Build (or find in the cache) one case's engine: ``build_check(case)``."""
    from .checks import check_build

    def check(case: AccuracyCase) -> dict[str, Any]:
        __tracebackhide__ = True
        return _outcome(lambda: check_build(harness_session, case), AssertionError)

    return check


@pytest.fixture
def perf_check(harness_session: HarnessSession) -> Callable[[Any], dict[str, Any]]:
    """Time one perf case: ``perf_check(case)``; an unstable run is recorded, and warned about."""
    from .perf import check_perf

    def check(case: Any) -> dict[str, Any]:
        __tracebackhide__ = True
        row = _outcome(lambda: check_perf(harness_session, case), AssertionError)
        if not row.get("stable", True):
            import warnings

            warnings.warn(PerfUnstable(f"{case.id}: unstable: {'; '.join(row['unstable_reasons'])}"), stacklevel=2)
        return row

    return check


class PerfUnstable(UserWarning):
    """A perf measurement did not settle (high CV or drifting throughput); its row is marked unstable."""


def _outcome(run: Callable[[], dict[str, Any]], failure: type[BaseException], known: str | None = None,
             skips: tuple[type[BaseException], ...] = (ModeUnsupported,)) -> dict[str, Any]:
    """Run a check; turn its failures into a clean pytest failure (the numbers, no traceback) or a skip (what
    ``skips`` names: a mode the backend lacks, a recipe that changed nothing).

    ``known``: the registry says this case is a known failure (and why): its gate failure is an expected
    failure, and a pass is reported as a failure so that the registry gets updated.
    """
    __tracebackhide__ = True
    fail = skip = None
    try:
        row = run()
        if known is None:
            return row
        fail = f"listed as a known failure ({known}) but it passed: remove it from known_failures in the registry"
    except failure as exc:
        if known is not None:
            pytest.xfail(f"known failure: {known}\n{exc}")
        fail = str(exc)
    except skips as exc:
        skip = str(exc)
    except HarnessError as exc:
        fail = f"{type(exc).__name__}: {exc}"
    # raised outside the except blocks, so that pytest shows the message once, without a chained traceback
    if skip is not None:
        pytest.skip(skip)
    pytest.fail(fail or "", pytrace=False)
