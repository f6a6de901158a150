"""The pytest plugin: every hook lives here, each a few lines; the logic lives in plain modules behind it.

Registered through the ``pytest11`` entry point ``harness.plugin`` (and by the root ``conftest.py`` when
the package is used from a checkout without being installed; the shared name keeps it from loading twice).

* options (:mod:`harness.options`): ``--registry``, ``--models``, ``--backends``, ``--stations``... each settable in the ini
  file as ``harness_<name>``; paths resolve where they were written, whatever rootdir pytest guessed
  (:mod:`harness.pytest_setup` roots the run right when ``--report-dir /tmp/x`` misled pytest);
* collection (:mod:`harness.collect`): the configured registry TOML is collected as a test file whose tests
  are the gates; suites that take the ``accuracy_case`` / ``perf_case`` / ``build_case`` fixtures get the same
  cases; perf and build cases run when ``-m`` names them;
* checks at session start (:mod:`harness.preflight`): a bad registry or a selection that selects nothing is a
  usage error (exit 4) with one line, before anything is collected;
* past one process and one host (:mod:`harness.scaleout`): ``--gpus`` starts one pytest-xdist worker per GPU
  (``-n auto`` counts GPUs) pinned before CUDA starts, and lets perf cases run on them; ``--shard I/N``
  keeps this host's part of the tests;
* markers ``accuracy``, ``perf``, ``build``, ``gpu``, ``tensorrt``, added to generated cases, which are skipped
  with the reason when their backend, device or model is missing;
* ``--doctor``: at the end, on the controller, the precision doctor (:mod:`harness.doctor`) on the failed
  accuracy cases, its rows written before the report;
* rows: each process writes its own JSONL; the controller merges them into ``results.json`` and
  ``REPORT.md`` at the end (and appends them to the ``--history`` database) and prints the engine cache's
  counts; each test's status and key numbers become its JUnit XML properties (``record_property``).

Without a registry (none in the ini file or on the command line) the plugin stays out of the way: it adds
its options and markers and nothing else, so installing the package changes no other project's test runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from .errors import HarnessError, ModeUnsupported
from .options import OPTIONS, Option, Raw

if TYPE_CHECKING:
    from .rows import AccuracyRow, BuildRow, PerfRow, StationRow
    from .session import AccuracyCase, HarnessSession

R = TypeVar("R")

SESSION_KEY = pytest.StashKey[Any]()  # this process's HarnessSession, or None without a registry
SUMMARY_KEY = pytest.StashKey[list[str]]()
GENERATED_KEY = pytest.StashKey[bool]()
SETUP_KEY = pytest.StashKey[str]()  # what harness.pytest_setup corrected, for the header

MARKERS = (
    ("accuracy", "accuracy gate against the ONNX Runtime FP32 reference"),
    ("perf", "throughput / latency measurement (runs with -m perf; never two at once on one device)"),
    ("gpu", "needs a CUDA GPU (skipped with the reason when there is none)"),
    ("tensorrt", "needs TensorRT or TensorRT-RTX (skipped with the reason when missing)"),
    ("build", "builds and caches an engine, runs nothing (runs with -m build; TensorRT-RTX builds without a GPU)"),
    ("harness_no_cases", "(internal) a generated test with no cases, deselected"),
)
_NO_CASES = pytest.mark.harness_no_cases
# the gates of deployment conditions (harness.deployment): batch consistency, determinism, open-loop serving
DEPLOYMENT_FIXTURES = {"consistency_case", "determinism_case", "server_case"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "inference engine harness")
    for opt in OPTIONS:
        if opt.kind == "flag":
            group.addoption(opt.flag, action="store_true", default=None, dest=opt.ini, help=opt.help)
            parser.addini(opt.ini, opt.help, type="bool", default=False)
        else:
            group.addoption(opt.flag, action="store", default=None, dest=opt.ini, help=opt.help)
            parser.addini(opt.ini, opt.help, default=None)
    group.addoption("--gates-only", action="store_true", default=False, dest="harness_gates_only",
                    help="collect only the registry's gates, not the test files under the collected paths")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    from .pytest_setup import correct_setup

    note = correct_setup(early_config, args)
    if note:
        early_config.stash[SETUP_KEY] = note


def _lookup(config: pytest.Config) -> Callable[[Option], Raw | None]:
    """An option's value from the command line (paths relative to the working directory) or the ini file
    (relative to its folder)."""
    cwd = config.invocation_params.dir
    ini = config.inipath

    def lookup(opt: Option) -> Raw | None:
        value = config.getoption(opt.ini)
        if value not in (None, ""):
            return Raw(value, opt.flag, cwd)
        value = config.getini(opt.ini)
        if value in (None, "", [], False):
            return None
        where = ini.name if ini is not None else "the ini file"
        return Raw(value, f"{opt.ini} in {where}", ini.parent if ini is not None else config.rootpath)

    return lookup


def settings_from_config(config: pytest.Config) -> Any:
    """The run's Settings, or None when no registry is configured."""
    from .options import read_options, settings_from

    values, sources = read_options(_lookup(config), root=config.rootpath, cwd=config.invocation_params.dir)
    return settings_from(values, sources) if values["registry"] is not None else None


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    from .scaleout import auto_workers

    return auto_workers(config, _lookup(config))


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS:
        config.addinivalue_line("markers", f"{name}: {text}")
    try:
        settings = settings_from_config(config)
        hs = None
        if settings is not None:
            from .session import HarnessSession, new_run_id

            run_id = config.workerinput.get("harness_run_id") if is_worker(config) else new_run_id()  # type: ignore[attr-defined]
            worker = config.workerinput["workerid"] if is_worker(config) else "main"  # type: ignore[attr-defined]
            hs = HarnessSession(settings, run_id=run_id, worker=worker)
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[SESSION_KEY] = hs
    from .scaleout import configure

    configure(config, _lookup(config), registry=hs is not None)  # GPUs and CPUs, before anything starts CUDA
    if hs is not None and config.pluginmanager.hasplugin("xdist"):
        from .xdist_support import XdistHooks

        config.pluginmanager.register(XdistHooks(hs, config, GENERATED_KEY), "harness-xdist")


def pytest_report_header(config: pytest.Config) -> list[str]:
    from .scaleout import header

    hs = config.stash.get(SESSION_KEY, None)
    lines = [f"harness: {config.stash[SETUP_KEY]}"] if SETUP_KEY in config.stash else []
    if hs is not None:
        s = hs.settings
        lines.append(f"harness: registry {s.registry}, reports {s.report_dir}, engine cache {s.cache_dir}"
                     + (f", baseline {s.baseline}" if s.baseline else ""))
    return lines + header(config, hs.settings.cache_dir if hs is not None else None)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Check the registry and the selection before anything is collected (on the controller: workers are
    started after it), and add the registry to the paths pytest collects (harness.collect)."""
    config = session.config
    hs = config.stash.get(SESSION_KEY, None)
    if hs is None:
        if config.getoption("harness_gates_only"):
            from .session import NO_REGISTRY

            raise pytest.UsageError(f"--gates-only: {NO_REGISTRY}")
        return
    from .collect import collection_args, selects
    from .preflight import preflight

    if not is_worker(config):
        try:
            preflight(hs, perf=selects(config, "perf"))
        except HarnessError as exc:
            raise pytest.UsageError(str(exc)) from None
    args = collection_args(config, hs.settings.registry, gates_only=config.getoption("harness_gates_only"))
    if args is not None:
        config.args[:] = args


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    hs = parent.config.stash.get(SESSION_KEY, None)
    if hs is None or file_path.suffix != hs.settings.registry.suffix or file_path.resolve() != hs.settings.registry.resolve():
        return None
    from .collect import RegistryFile

    collector: pytest.Collector = RegistryFile.from_parent(parent, path=file_path)
    return collector


def pytest_unconfigure(config: pytest.Config) -> None:
    from .scaleout import unconfigure

    hs = config.stash.get(SESSION_KEY, None)
    if hs is not None:
        hs.close()
    unconfigure(config)


def _case_marks(hs: HarnessSession, model: str, backend: str, recipe: str | None, kind: str,
                config: pytest.Config, reason: str | None = None) -> list[Any]:
    from .backends import get_backend

    marks: list[Any] = [getattr(pytest.mark, kind)]
    b = get_backend(backend)
    if b.on_gpu:
        marks.append(pytest.mark.gpu)
    if b.needs_tensorrt:
        marks.append(pytest.mark.tensorrt)
    reason = reason or (hs.skip_reason(model, backend, recipe, build_only=kind == "build") if model else None)
    if reason is None and kind == "perf" and not b.on_gpu:
        from .xdist_support import cpu_perf_skip

        reason = cpu_perf_skip(config)
    if reason:
        marks.append(pytest.mark.skip(reason=reason))
    return marks


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    wanted = {"accuracy_case", "build_case", "perf_case", "station_case", *DEPLOYMENT_FIXTURES} & set(metafunc.fixturenames)
    if not wanted:
        return
    hs = metafunc.config.stash[SESSION_KEY]
    if hs is None:
        from .session import NO_REGISTRY

        pytest.fail(f"{metafunc.function.__name__} takes {', '.join(sorted(wanted))}, but {NO_REGISTRY}", pytrace=False)
    metafunc.config.stash[GENERATED_KEY] = True
    try:
        if "accuracy_case" in wanted:
            params = [pytest.param(c, id=c.id, marks=_case_marks(hs, c.model, c.backend, c.recipe, "accuracy", metafunc.config))
                      for c in hs.accuracy_cases()]
            metafunc.parametrize("accuracy_case", params)
        if "build_case" in wanted:
            params = [pytest.param(c, id=c.id, marks=_case_marks(hs, c.model, c.backend, c.recipe, "build", metafunc.config))
                      for c in hs.accuracy_cases(build_only=True)]
            metafunc.parametrize("build_case", params)
        if "perf_case" in wanted:
            from .perf import perf_cases

            params = [pytest.param(c, id=c.id, marks=_case_marks(hs, c.model, c.backend, c.recipe, "perf", metafunc.config))
                      for c in perf_cases(hs)]
            metafunc.parametrize("perf_case", params)
        if "station_case" in wanted:
            from .stations.check import skip_reason, station_cases

            params = [pytest.param(c, id=c.id, marks=_case_marks(hs, "", c.backend, None, "perf", metafunc.config,
                                                               skip_reason(hs, c)))
                      for c in station_cases(hs)]
            # no station selected (none in the registry, or --models selects none): deselected, instead of
            # pytest's "empty parameter set" skip in every perf run of a few models
            metafunc.parametrize("station_case", params or [pytest.param(None, id="none", marks=_NO_CASES)])
        for fixture in DEPLOYMENT_FIXTURES & wanted:  # consistency, determinism, server (harness.deployment)
            from .deployment import cases_for

            kind = "perf" if fixture == "server_case" else "accuracy"
            params = [pytest.param(c, id=c.id, marks=_case_marks(hs, c.model, c.backend, c.recipe, kind, metafunc.config))
                      for c in cases_for(hs, fixture)]
            metafunc.parametrize(fixture, params or [pytest.param(None, id="none", marks=_NO_CASES)])
    except HarnessError as exc:  # checked at session start already; a worker can still meet it
        pytest.fail(str(exc), pytrace=False)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    from .scaleout import shard_items

    if config.stash.get(SESSION_KEY, None) is not None:
        from .collect import split

        keep, drop = split(items, config)
        # a generated test with no cases (no station selected) is deselected, not skipped
        drop += [item for item in keep if item.get_closest_marker(_NO_CASES.name) is not None]
        keep = [item for item in keep if item.get_closest_marker(_NO_CASES.name) is None]
        if drop:
            items[:] = keep
            config.hook.pytest_deselected(items=drop)
    keep, drop = shard_items(config, items)  # after split: a shard of what runs
    if drop:
        items[:] = keep
        config.hook.pytest_deselected(items=drop)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if is_worker(config):
        from .scaleout import SHARD_KEY

        # tell the controller (which collects nothing itself under xdist) whether harness cases were generated,
        # and what --shard kept
        config.workeroutput["harness_generated"] = bool(config.stash.get(GENERATED_KEY, False))  # type: ignore[attr-defined]
        config.workeroutput["harness_shard"] = config.stash.get(SHARD_KEY, "")  # type: ignore[attr-defined]
        return
    hs = config.stash.get(SESSION_KEY, None)
    if hs is None:
        return
    doctor: list[str] = []
    if hs.settings.doctor and exitstatus != pytest.ExitCode.INTERRUPTED:
        from .doctor.run import session_lines

        reporter = config.pluginmanager.get_plugin("terminalreporter")
        doctor = session_lines(hs, reporter.write_line if reporter is not None else print)
    hs.close()
    from .finish import finish_run

    lines = doctor + finish_run(hs)
    if lines:
        config.stash[SUMMARY_KEY] = lines


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    from .scaleout import SHARD_KEY

    summary: list[str] = config.stash.get(SUMMARY_KEY, [])
    lines = ([config.stash[SHARD_KEY]] if config.stash.get(SHARD_KEY, "") else []) + list(summary)
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
    hs = request.config.stash[SESSION_KEY]
    if hs is None:
        from .session import NO_REGISTRY

        pytest.fail(NO_REGISTRY, pytrace=False)
    return hs


@pytest.fixture
def accuracy_check(harness_session: HarnessSession, record_property: Callable[[str, object], None]
                   ) -> Callable[..., AccuracyRow]:
    """Check one accuracy case: ``accuracy_check(case)`` or ``accuracy_check(model, backend, recipe, profile)``."""
    from .checks import AccuracyGateFailure, NoOpRecipe, case_expectation, check_accuracy
    from .session import AccuracyCase

    def check(case: AccuracyCase | str, backend: str = "ort_cpu", recipe: str = "fp32",
              profile: str | None = None) -> AccuracyRow:
        __tracebackhide__ = True
        if isinstance(case, str):
            spec = harness_session.model(case)
            case = AccuracyCase(case, backend, recipe, profile or next(iter(spec.profiles)))
        try:
            known = case_expectation(harness_session, case).known_failure
        except HarnessError:  # an unknown model or recipe: check_accuracy reports it as the case's failure
            known = None
        narrowed: AccuracyCase = case  # what the lambda captures: a case, no longer a model name
        with _properties(harness_session, record_property):
            return _outcome(lambda: check_accuracy(harness_session, narrowed), AccuracyGateFailure, known=known,
                            skips=(ModeUnsupported, NoOpRecipe))

    return check


@pytest.fixture
def build_check(harness_session: HarnessSession, record_property: Callable[[str, object], None]
                ) -> Callable[[AccuracyCase], BuildRow]:
    """Build (or find in the cache) one case's engine: ``build_check(case)``."""
    from .checks import check_build

    def check(case: AccuracyCase) -> BuildRow:
        __tracebackhide__ = True
        with _properties(harness_session, record_property):
            return _outcome(lambda: check_build(harness_session, case), AssertionError)

    return check


@pytest.fixture
def perf_check(harness_session: HarnessSession, record_property: Callable[[str, object], None]
               ) -> Callable[[Any], PerfRow]:
    """Time one perf case: ``perf_check(case)``; an unstable run is recorded, and warned about."""
    from .perf import check_perf

    def check(case: Any) -> PerfRow:
        __tracebackhide__ = True
        return _timed(harness_session, record_property, lambda: check_perf(harness_session, case), case.id)

    return check


@pytest.fixture
def station_check(harness_session: HarnessSession, record_property: Callable[[str, object], None]
                  ) -> Callable[[Any], StationRow]:
    """Time one station case: ``station_check(case)``; an unstable run is recorded, and warned about."""
    from .stations.check import check_station

    def check(case: Any) -> StationRow:
        __tracebackhide__ = True
        return _timed(harness_session, record_property, lambda: check_station(harness_session, case), case.id)

    return check


@pytest.fixture
def consistency_check(harness_session: HarnessSession, record_property: Callable[[str, object], None]
                      ) -> Callable[[Any], Any]:
    """Check one batch-consistency case: ``consistency_check(case)`` (harness.consistency)."""
    from .consistency import check_consistency
    from .selfcheck import SelfCheckFailure

    def check(case: Any) -> Any:
        __tracebackhide__ = True
        with _properties(harness_session, record_property):
            return _outcome(lambda: check_consistency(harness_session, case), SelfCheckFailure)

    return check


@pytest.fixture
def determinism_check(harness_session: HarnessSession, record_property: Callable[[str, object], None]
                      ) -> Callable[[Any], Any]:
    """Check one determinism case: ``determinism_check(case)`` (harness.determinism)."""
    from .determinism import check_determinism
    from .selfcheck import SelfCheckFailure

    def check(case: Any) -> Any:
        __tracebackhide__ = True
        with _properties(harness_session, record_property):
            return _outcome(lambda: check_determinism(harness_session, case), SelfCheckFailure)

    return check


@pytest.fixture
def server_check(harness_session: HarnessSession, record_property: Callable[[str, object], None]
                 ) -> Callable[[Any], Any]:
    """Serve one server case open-loop: ``server_check(case)`` (harness.server_check)."""
    from .server_check import check_server

    def check(case: Any) -> Any:
        __tracebackhide__ = True
        with _properties(harness_session, record_property):
            return _outcome(lambda: check_server(harness_session, case), AssertionError)

    return check


T = TypeVar("T", "PerfRow", "StationRow")


def _timed(hs: HarnessSession, record: Callable[[str, object], None], run: Callable[[], T], case_id: str) -> T:
    """A timed case's outcome; an unstable measurement is kept (its row says so) and warned about."""
    __tracebackhide__ = True
    with _properties(hs, record):
        row = _outcome(run, AssertionError)
    import warnings

    if row.stable is False:
        warnings.warn(PerfUnstable(f"{case_id}: unstable: {'; '.join(row.unstable_reasons)}"), stacklevel=3)
    flags = getattr(row, "state_flags", None)  # perf rows record the machine's state; station rows do not yet
    if flags:
        warnings.warn(PerfDisturbed(f"{case_id}: not quotable: {'; '.join(flags)}"), stacklevel=3)
    return row


@contextlib.contextmanager
def _properties(hs: HarnessSession, record: Callable[[str, object], None]) -> Iterator[None]:
    """The row's status and key numbers as the test's properties (JUnit XML ``<property>``), pass or fail."""
    hs.last_row = None
    try:
        yield
    finally:
        if hs.last_row is not None:
            from .rows import junit_properties

            for name, value in junit_properties(hs.last_row):
                record(name, value)


class PerfUnstable(UserWarning):
    """A perf measurement did not settle (high CV or drifting throughput); its row is marked unstable."""


class PerfDisturbed(UserWarning):
    """A perf measurement ran on a machine in no state to quote it (GPU throttled, host overloaded); its row
    is flagged (``state_flags``) and never chosen as a winner."""


def _outcome(run: Callable[[], R], failure: type[BaseException], known: str | None = None,
             skips: tuple[type[BaseException], ...] = (ModeUnsupported,)) -> R:
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
